"""``GET /metrics``: the master's Prometheus metrics, in a registry of its own.

Each :class:`~packfleet.master.MasterServer` has its own :class:`prometheus_client.CollectorRegistry`
(not the process-wide default), so several masters in one process (the tests) never share or
double-register a metric.

TLS handshake failures never reach the application: CPython's ``asyncio.sslproto`` closes the
transport and logs the ``SSLError`` at debug level only (and only in debug mode). So packfleet counts
them from both ends of the handshake, and correlates the two by the connection's ``SSLObject``:

- *started*: the ``HotSwapServerContext`` servername callback, which OpenSSL calls for every
  ClientHello (with or without SNI), is handed the connection's ``SSLObject``;
- *completed*: :class:`~packfleet.master._limits.GuardedSite` runs each handshake itself
  (``loop.start_tls``) and notes the ``SSLObject`` when it returns;
- *failed*: an ``SSLObject`` that is garbage collected (its connection gone) without having
  completed. A connection that closes before sending a ClientHello (a port check) counts as neither.
"""

from __future__ import annotations

import ssl
import weakref

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class MasterMetrics:
    """The master's counters and gauges, and the handshake bookkeeping that feeds them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.handshakes_started = Counter(
            "packfleet_tls_handshakes_started", "TLS ClientHellos received by the master", registry=r
        )
        self.handshakes_completed = Counter(
            "packfleet_tls_handshakes_completed", "TLS handshakes that succeeded", registry=r
        )
        self.handshake_failures = Counter(
            "packfleet_tls_handshake_failures",
            "Connections that sent a ClientHello and closed without completing the handshake "
            "(client certificate not in the Root store, expired, wrong TLS version...)",
            registry=r,
        )
        self.refused = Counter(
            "packfleet_requests_refused",
            "Requests answered with a problem document, by problem type",
            ["reason"],
            registry=r,
        )
        self.tasks_leased = Counter("packfleet_tasks_leased", "Tasks handed to workers", registry=r)
        self.days_left = Gauge(
            "packfleet_certificate_days_left",
            "Days until a fleet certificate expires (negative once expired)",
            ["role", "thumbprint", "worker"],
            registry=r,
        )
        self.workers = Gauge(
            "packfleet_workers", "Workers known to the catalog, by state", ["state"], registry=r
        )
        self.executions = Gauge(
            "packfleet_executions",
            "Executions in the catalog, by SSIS status (created, running, ... succeeded)",
            ["status"],
            registry=r,
        )
        self.connections_open = Gauge(
            "packfleet_connections_open",
            "TCP connections the master holds (handshaking, waiting for a request, or serving)",
            registry=r,
        )
        self.connections_refused = Counter(
            "packfleet_connections_refused",
            "Connections closed by the master's connection guard, by reason (per_address_limit, "
            "total_limit, header_timeout, idle_timeout)",
            ["reason"],
            registry=r,
        )
        #: The (thumbprint, store) of the certificate new connections are served; set by the server.
        self.serving: tuple[str, str] | None = None
        self._open: dict[int, bool] = {}

    # -- handshakes -------------------------------------------------------------------------------

    def client_hello(self, ssl_object: ssl.SSLObject) -> None:
        """A ClientHello arrived on ``ssl_object``'s connection (the servername callback)."""
        key = id(ssl_object)
        if key in self._open:  # a second ClientHello after a HelloRetryRequest: same handshake
            return
        self._open[key] = False
        self.handshakes_started.inc()
        # The finalizer runs while the object is being freed, before its id can be reused.
        weakref.finalize(ssl_object, self._ended, key)

    def handshake_completed(self, ssl_object: object) -> None:
        key = id(ssl_object)
        if self._open.get(key) is False:
            self._open[key] = True
            self.handshakes_completed.inc()

    def handshake_failed(self, ssl_object: object | None) -> None:
        """A handshake that will not complete, counted now.

        The finalizer counts the rest (a client gone mid-handshake), but only once the object is
        freed: a failed handshake's objects sit in reference cycles, which the master's garbage
        collector, tuned to run rarely, may leave for minutes on a quiet master.
        """
        if ssl_object is not None:
            self._ended(id(ssl_object))

    def _ended(self, key: int) -> None:
        if self._open.pop(key, True) is False:
            self.handshake_failures.inc()

    # -- requests ---------------------------------------------------------------------------------

    def refusal(self, reason: str) -> None:
        self.refused.labels(reason=reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


METRICS: web.AppKey[MasterMetrics] = web.AppKey("packfleet_master_metrics", MasterMetrics)


def metrics_of(app: web.Application) -> MasterMetrics | None:
    """The app's metrics, or None for an app built without them (unit tests of single routes)."""
    return app.get(METRICS)
