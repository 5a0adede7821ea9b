"""What a connection may cost the master before it has proved anything: deadlines and caps.

The master must accept connections without a client certificate (join and health routes), so a
stranger can open a connection, finish the handshake (or not) and then hold it, sending nothing or
trickling header bytes. aiohttp has no deadline for a request's headers and counts no connections,
so the master does both itself, at the TCP level, before any TLS work:

- **caps**: ``MaxConnectionsPerAddress`` and ``MaxConnections`` are checked when a TCP connection is
  accepted, before the TLS handshake, so a refused connection costs an ``accept`` and a ``close``;
- **first-request deadline**: every connection must finish its handshake *and* the headers of its
  first request within ``RequestHeaderTimeoutInSecs`` of being accepted (slowloris);
- **idle deadline**: a keep-alive connection that has carried no request with a client certificate
  is closed after ``IdleConnectionTimeoutInSecs`` without a request. A connection that presented a
  certificate (verified against the Root store in the handshake) keeps aiohttp's keep-alive, which
  workers' long-polls need.

:class:`GuardedSite` accepts plain TCP and runs the TLS handshake itself (``loop.start_tls``); each
refusal is counted in ``packfleet_connections_refused_total{reason}`` and logged at most once per
reason every :data:`LOG_EVERY` seconds, with the number of refusals since the last line. A failed
handshake is logged with the peer's address, the reason in words and the thumbprint of the
certificate it presented, at most :data:`HANDSHAKE_BURST` lines per address a minute (the next line
says how many were left out); ``packfleet_tls_handshake_failures_total`` counts every one.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import logging
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from packfleet.config import MasterSettings
from packfleet.master._auth import thumbprint_of_der
from packfleet.master._logsafe import RateLimitedLog, safe
from packfleet.master._metrics import MasterMetrics
from packfleet.transport import explain_handshake_failure, presented_certificate

log = logging.getLogger("packfleet.master.connections")

#: Seconds between two log lines about refused connections of one reason.
LOG_EVERY = 10.0
#: Handshake failure lines per peer address and minute; the rest are counted, then reported.
HANDSHAKE_BURST = 5

PER_ADDRESS = "per_address_limit"
TOTAL = "total_limit"
HEADER_TIMEOUT = "header_timeout"
IDLE_TIMEOUT = "idle_timeout"

_EXPLAIN = {
    PER_ADDRESS: ("connections from one address exceed MaxConnectionsPerAddress", "MaxConnectionsPerAddress"),
    TOTAL: ("open connections exceed MaxConnections", "MaxConnections"),
    HEADER_TIMEOUT: (
        "no complete request headers within RequestHeaderTimeoutInSecs of connecting",
        "RequestHeaderTimeoutInSecs",
    ),
    IDLE_TIMEOUT: (
        "idle keep-alive connection without a client certificate, past IdleConnectionTimeoutInSecs",
        "IdleConnectionTimeoutInSecs",
    ),
}


@dataclass(frozen=True)
class ConnectionLimits:
    """The four settings, in the units the guard uses."""

    header_timeout: float = 10.0
    idle_timeout: float = 30.0
    per_address: int = 128
    total: int = 4096

    @classmethod
    def from_settings(cls, settings: MasterSettings) -> ConnectionLimits:
        return cls(
            header_timeout=float(settings.request_header_timeout_secs),
            idle_timeout=float(settings.idle_connection_timeout_secs),
            per_address=settings.max_connections_per_address,
            total=settings.max_connections,
        )


class _RefusalLog:
    """One warning per reason per :data:`LOG_EVERY` seconds, saying how many were refused meanwhile."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}
        self._pending: Counter[str] = Counter()
        self._addresses: dict[str, set[str]] = {}

    def refused(self, reason: str, address: str) -> None:
        self._pending[reason] += 1
        self._addresses.setdefault(reason, set()).add(address)
        now = self._clock()
        if now - self._last.get(reason, -LOG_EVERY) < LOG_EVERY:
            return
        count = self._pending.pop(reason)
        addresses = sorted(self._addresses.pop(reason))
        self._last[reason] = now
        what, key = _EXPLAIN[reason]
        shown = ", ".join(addresses[:5]) + (f" and {len(addresses) - 5} more" if len(addresses) > 5 else "")
        log.warning(
            "closed %d connection(s) from %s: %s (at most one such line every %.0f s; if these are "
            "legitimate clients, raise it: packfleet settings set master %s N; the master reloads it)",
            count,
            shown,
            what,
            LOG_EVERY,
            key,
        )


class Connection:
    """One accepted connection: its address, its transport, its deadlines."""

    def __init__(self, guard: ConnectionGuard, address: str, transport: asyncio.Transport) -> None:
        self.guard = guard
        self.address = address
        self.transport = transport
        self.first_request_seen = False
        self.authenticated = False
        self.in_flight = 0
        self.closed = False
        self._timer: asyncio.TimerHandle | None = None

    def _arm(self, delay: float, reason: str) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(delay, self._expire, reason)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, reason: str) -> None:
        self._timer = None
        if not self.closed:
            self.guard.refuse(reason, self.address)
            self.transport.abort()

    def request_started(self, *, authenticated: bool) -> None:
        self.first_request_seen = True
        self.authenticated = self.authenticated or authenticated
        self.in_flight += 1
        self._disarm()

    def request_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and not self.authenticated and not self.closed:
            self._arm(self.guard.limits.idle_timeout, IDLE_TIMEOUT)

    def lost(self) -> None:
        if not self.closed:
            self.closed = True
            self._disarm()
            self.guard.released(self)


class ConnectionGuard:
    """Counts open connections per address and in total, and holds each one's deadlines."""

    def __init__(self, limits: ConnectionLimits, metrics: MasterMetrics) -> None:
        self.limits = limits
        self.metrics = metrics
        self.per_address: Counter[str] = Counter()
        self.total = 0
        self._by_transport: dict[int, Connection] = {}
        self._log = _RefusalLog()
        #: Failed handshakes, per peer address (public: tests shorten its window).
        self.handshake_log = RateLimitedLog(log, burst=HANDSHAKE_BURST, window=60.0)

    def admit(self, address: str, transport: asyncio.Transport) -> Connection | None:
        """A TCP connection was accepted: track it, or refuse it (None) when a cap is reached."""
        if self.total >= self.limits.total:
            self.refuse(TOTAL, address)
            return None
        if self.per_address[address] >= self.limits.per_address:
            self.refuse(PER_ADDRESS, address)
            return None
        conn = Connection(self, address, transport)
        self.per_address[address] += 1
        self.total += 1
        self.metrics.connections_open.set(self.total)
        conn._arm(self.limits.header_timeout, HEADER_TIMEOUT)
        return conn

    def established(self, conn: Connection, tls_transport: asyncio.Transport) -> None:
        """The handshake is done: requests will name this transport."""
        conn.transport = tls_transport
        self._by_transport[id(tls_transport)] = conn

    def of(self, transport: asyncio.BaseTransport | None) -> Connection | None:
        return None if transport is None else self._by_transport.get(id(transport))

    def released(self, conn: Connection) -> None:
        self._by_transport.pop(id(conn.transport), None)
        self.per_address[conn.address] -= 1
        if self.per_address[conn.address] <= 0:
            del self.per_address[conn.address]
        self.total -= 1
        self.metrics.connections_open.set(self.total)

    def refuse(self, reason: str, address: str) -> None:
        self.metrics.connections_refused.labels(reason=reason).inc()
        self._log.refused(reason, address)

    def handshake_failed(self, address: str, exc: BaseException, ssl_object: ssl.SSLObject | None) -> None:
        """Log one failed handshake: who, why, and which certificate it presented (rate-limited).

        The metrics count it already (the ``SSLObject`` bookkeeping), so this only logs.
        """
        der = presented_certificate(ssl_object) if ssl_object is not None else None
        presented = f"presented certificate {thumbprint_of_der(der)}" if der else "presented no certificate"
        self.handshake_log.warning(
            f"{address}:tls-handshake",
            "TLS handshake with %s failed: %s; it %s",
            safe(address, 60),
            safe(explain_handshake_failure(exc), 500),
            presented,
        )


GUARD: web.AppKey[ConnectionGuard] = web.AppKey("packfleet_connection_guard", ConnectionGuard)


@web.middleware
async def track_requests(request: web.Request, handler: Any) -> web.StreamResponse:
    """Tell the guard a request's headers arrived (and whether it carries a certificate), and when it ends."""
    guard = request.app.get(GUARD)
    conn = guard.of(request.transport) if guard is not None else None
    if conn is None:
        response: web.StreamResponse = await handler(request)
        return response
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    conn.request_started(authenticated=ssl_object is not None and ssl_object.getpeercert(True) is not None)
    try:
        response = await handler(request)
        return response
    finally:
        conn.request_finished()


class _Tracked(asyncio.Protocol):
    """Sits between the TLS layer and aiohttp's protocol: holds early data, reports the close.

    ``start_tls`` treats the application protocol as connected from the start, so bytes that
    arrive with the client's last handshake flight can reach it before ``start_tls`` returns; they
    wait here until aiohttp's protocol has its transport.
    """

    def __init__(self, inner: asyncio.BaseProtocol, conn: Connection) -> None:
        self._inner = inner
        self._conn = conn
        self._attached = False
        self._early: list[bytes] = []
        self._eof = False
        self._write_paused = False

    def attach(self, transport: asyncio.Transport) -> None:
        self._attached = True
        self._inner.connection_made(transport)
        if self._write_paused:
            self._inner.pause_writing()
        early, self._early = self._early, []
        for chunk in early:
            self._inner.data_received(chunk)  # type: ignore[attr-defined]
        if self._eof:
            self._inner.eof_received()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self._attached:
            self._inner.data_received(data)  # type: ignore[attr-defined]
        else:
            self._early.append(data)

    def eof_received(self) -> bool | None:
        if self._attached:
            return self._inner.eof_received()  # type: ignore[attr-defined, no-any-return]
        self._eof = True
        return None

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._attached:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._attached:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._conn.lost()
        if self._attached:
            self._inner.connection_lost(exc)


class _Gate(asyncio.Protocol):
    """The protocol of a freshly accepted TCP connection: check the caps, then hand it to TLS."""

    def __init__(self, site: GuardedSite) -> None:
        self._site = site
        self._conn: Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a stream server's transport
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if peer else "unknown"
        conn = self._site.guard.admit(address, transport)
        if conn is None:
            transport.abort()
            return
        self._conn = conn
        # No byte is read until the TLS layer is in place (start_tls pauses and resumes too).
        transport.pause_reading()
        self._site.handshake(conn, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        # Only reached if the connection ends before start_tls took the transport over.
        if self._conn is not None:
            self._conn.lost()


def _ssl_object_of(protocol: object) -> ssl.SSLObject | None:
    """The ``SSLObject`` of the ``SSLProtocol`` a failed ``start_tls`` used (asyncio keeps it private)."""
    # asyncio exposes ``ssl_object`` only after a successful handshake; the protocol made it in
    # its constructor and keeps it as ``_sslobj``.
    candidate = getattr(protocol, "_sslobj", None)
    return candidate if isinstance(candidate, ssl.SSLObject) else None


#: Bytes one TLS connection reads from its socket at a time. asyncio's ``SSLProtocol`` allocates (and
#: zero-fills) 256 KiB per connection for this, whatever the traffic: 1.25 GB for a fleet of 5,000
#: idle keep-alive connections. A TLS record is at most 16 KiB, so 32 KiB still takes two per read.
READ_BUFFER = 32 * 1024


class _LeanSSLProtocol(asyncio.sslproto.SSLProtocol):
    """asyncio's TLS protocol with a :data:`READ_BUFFER` read buffer instead of 256 KiB."""

    max_size = READ_BUFFER


async def _start_tls(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.Transport,
    protocol: asyncio.BaseProtocol,
    context: ssl.SSLContext,
    handshake_timeout: float,
) -> asyncio.Transport | None:
    """``loop.start_tls(..., server_side=True)`` with :class:`_LeanSSLProtocol` (the same steps as
    asyncio's own); another loop (uvloop) keeps its own ``start_tls``."""
    if not isinstance(loop, asyncio.BaseEventLoop) or not getattr(transport, "_start_tls_compatible", False):
        return await loop.start_tls(
            transport, protocol, context, server_side=True, ssl_handshake_timeout=handshake_timeout
        )
    waiter: asyncio.Future[None] = loop.create_future()
    tls_protocol = _LeanSSLProtocol(
        loop,
        protocol,
        context,
        waiter,
        True,
        None,
        ssl_handshake_timeout=handshake_timeout,  # type: ignore[arg-type]  # typeshed says int
        call_connection_made=False,
    )
    # Paused first, so that no data reaches the TLS protocol before its connection_made.
    transport.pause_reading()
    transport.set_protocol(tls_protocol)
    made = loop.call_soon(tls_protocol.connection_made, transport)
    resumed = loop.call_soon(transport.resume_reading)
    try:
        await waiter
    except BaseException:
        transport.close()
        made.cancel()
        resumed.cancel()
        raise
    return tls_protocol._app_transport


class GuardedSite(web.SockSite):
    """``web.SockSite`` that admits connections through :class:`ConnectionGuard` and runs TLS itself.

    It also feeds the handshake metrics (see :mod:`packfleet.master._metrics`): a handshake is
    *completed* when ``start_tls`` returns.
    """

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        *,
        ssl_context: ssl.SSLContext,
        metrics: MasterMetrics,
        guard: ConnectionGuard,
        shutdown_timeout: float = 60.0,
        backlog: int = 128,
    ) -> None:
        super().__init__(
            runner, sock, ssl_context=ssl_context, shutdown_timeout=shutdown_timeout, backlog=backlog
        )
        self._metrics = metrics
        self.guard = guard
        self._handshakes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        # BaseSite.start registers the site with its runner, exactly what SockSite.start does first.
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Gate(self), sock=self._sock, backlog=self._backlog)

    def handshake(self, conn: Connection, transport: asyncio.Transport) -> None:
        task = asyncio.get_running_loop().create_task(self._handshake(conn, transport))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: Connection, transport: asyncio.Transport) -> None:
        server = self._runner.server
        if server is None or self._ssl_context is None:
            transport.abort()
            conn.lost()
            return
        tracked = _Tracked(server(), conn)
        loop = asyncio.get_running_loop()
        # start_tls makes its SSLProtocol the transport's protocol before it first waits, and a
        # failure closes the transport, which forgets it: note it on the loop's next turn.
        used: list[asyncio.BaseProtocol] = []
        loop.call_soon(lambda: used.append(transport.get_protocol()))
        try:
            tls = await _start_tls(
                loop,
                transport,
                tracked,
                self._ssl_context,
                # The guard's own deadline covers handshake and headers together; this one only
                # keeps asyncio's default (60 s) from outliving it.
                self.guard.limits.header_timeout + 1.0,
            )
        except (OSError, ssl.SSLError, TimeoutError, RuntimeError, asyncio.CancelledError) as exc:
            # A failed handshake is counted here (the metrics' SSLObject finalizer counts the rest);
            # the transport is closed by start_tls, and _Tracked.connection_lost releases the
            # connection. Only TLS
            # verdicts are logged: a connection the guard closed was logged by it, and one that
            # merely went away (a port check) or a stopping master says nothing worth a line.
            ssl_object = _ssl_object_of(used[0] if used else None)
            self._metrics.handshake_failed(ssl_object)
            if isinstance(exc, ssl.SSLError) and not conn.closed:
                self.guard.handshake_failed(conn.address, exc, ssl_object)
            transport.abort()
            conn.lost()
            return
        if tls is None or conn.closed:
            conn.lost()
            return
        self._metrics.handshake_completed(tls.get_extra_info("ssl_object"))
        self.guard.established(conn, tls)
        tracked.attach(tls)

    async def stop(self) -> None:
        for task in list(self._handshakes):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._handshakes, return_exceptions=True)
        await super().stop()
