"""The master: an aiohttp HTTPS server over the catalog, with hot-swappable TLS and periodic jobs."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import resource
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Handler as AiohttpHandler

from packfleet import __version__
from packfleet.catalog import CUTOFF_CHANNEL, ROTATION_CHANNEL, TRUST_CHANNEL, Catalog, utc_now
from packfleet.console import ConsoleServer
from packfleet.errors import PackfleetError
from packfleet.master import (
    _admin_api,
    _bulk_api,
    _fleet,
    _identity_api,
    _join_api,
    _pending,
    _renewal,
    _rotation,
    _rotation_api,
    _worker_api,
)
from packfleet.master._admission import warn_never_accepted
from packfleet.master._api import Endpoint, allowed_methods, openapi_document, router_path
from packfleet.master._auth import (
    Caller,
    ConnectionRegistry,
    PrincipalCache,
    check_access,
    peer_certificate,
    thumbprint_of_der,
)
from packfleet.master._batches import HEARTBEATS, BatchedAuthorize, HeartbeatWriter
from packfleet.master._console import MasterFleet, console_context, default_address
from packfleet.master._jobs import Job, JobRunner
from packfleet.master._limits import GUARD, ConnectionGuard, ConnectionLimits, GuardedSite, track_requests
from packfleet.master._listen import remove_listening, write_listening
from packfleet.master._logsafe import RateLimitedLog, safe
from packfleet.master._metrics import METRICS, MasterMetrics, metrics_of
from packfleet.master._problems import (
    Problem,
    forbidden,
    from_http_exception,
    from_packfleet_error,
    internal_error,
)
from packfleet.master._services import SERVICES, RotationService, Services
from packfleet.master._sharedtrust import TRUST_SYNC_INTERVAL, sync_trust
from packfleet.master._state import STATE, Call, MasterState, json_response
from packfleet.master._store_audit import root_thumbprints, store_change
from packfleet.master._tls import WILDCARD, TlsMaterial, load_tls_material
from packfleet.master._trust import close_cut_off
from packfleet.master._wakeup import EVENTS, TASKS, LocalWakeups
from packfleet.protocol import Health, RefusedBind, routes
from packfleet.secretbox import secrets_key_path
from packfleet.transport import HotSwapServerContext

if TYPE_CHECKING:
    from packfleet.master._coordination import PostgresCoordination

#: Connections the kernel queues before the master accepts them (capped by net.core.somaxconn). A
#: fleet reconnecting at once after a restart or a certificate switch arrives together; with the
#: listen(2) default of 128 the rest were reset.
LISTEN_BACKLOG = 4096

log = logging.getLogger("packfleet.master")

#: Leases held when the master starts get at least this long: while the master was away no worker
#: could renew them, and a worker's default LeaseInterval (SSIS) is one minute.
LEASE_GRACE_AFTER_START = timedelta(minutes=1)
#: How often the master logs certificates near expiry (and once at start).
EXPIRY_CHECK_INTERVAL = 24 * 3600.0
#: How often a master reads the shared rotation state when no notification came (a missed NOTIFY).
ROTATION_SYNC_INTERVAL = 5.0


async def _health(call: Call) -> web.StreamResponse:
    # The master's UTC time lets `packfleet doctor` on a worker measure clock skew.
    refused_bind = None
    thumbprint = call.caller.thumbprint
    # An open route does not identify its caller; the principal cache does, without a catalog
    # call for a bound certificate (the refused binds were read on every health check before).
    if thumbprint is not None and await call.state.principals.get(thumbprint) is None:
        # A certificate bound to nobody: tell its holder (`doctor` on the worker) if the master
        # refused to bind it to the AgentId it claimed, and which command confirms the binding.
        refused = await call.state.db(call.state.catalog.refused_binds, thumbprint)
        if refused:
            thumbprint, agent_id, reason = refused[-1]
            refused_bind = RefusedBind(
                thumbprint=thumbprint,
                agent_id=agent_id,
                detail=reason,
                fix=f"on the master: packfleet manager worker connect {agent_id} --cert {thumbprint}",
            )
    answer = Health(
        status="ok", version=__version__, time=call.state.clock().isoformat(), refused_bind=refused_bind
    )
    return json_response(answer.wire())


@functools.cache
def _served_document() -> dict[str, Any]:
    return openapi_document(ENDPOINTS)


async def _openapi(call: Call) -> web.StreamResponse:
    return json_response(_served_document())


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", routes.HEALTH, _health, "open", "Liveness: status and version", answer=Health),
    Endpoint("GET", routes.OPENAPI, _openapi, "open", "This OpenAPI 3.1 document"),
    *_worker_api.ENDPOINTS,
    *_admin_api.ENDPOINTS,
    *_bulk_api.ENDPOINTS,
    *_join_api.ENDPOINTS,
    *_renewal.ENDPOINTS,
    *_rotation_api.ENDPOINTS,
    *_fleet.ENDPOINTS,
    *_identity_api.ENDPOINTS,
    *_pending.ENDPOINTS,
)


def _guard(endpoint: Endpoint) -> AiohttpHandler:
    """Wrap a handler with the access check of its route; every caller is identified first (but
    on a route whose handler identifies it, see ``Endpoint.identify``)."""
    where = f"{endpoint.method} {endpoint.path}"

    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        der = peer_certificate(request)
        thumbprint = thumbprint_of_der(der) if der else None
        principal = None
        if thumbprint is not None:
            if request.transport is not None:
                state.connections.add(thumbprint, request.transport)
            if endpoint.access != "open" and endpoint.identify:
                principal = await state.principals.get(thumbprint)
        caller = Caller(thumbprint, der, principal)
        check_access(endpoint.admits, caller, where)
        return await endpoint.handler(Call(request, caller, state, endpoint.max_body))

    return handle


@web.middleware
async def _problems(request: web.Request, handler: AiohttpHandler) -> web.StreamResponse:
    """Turn every failure into an RFC 9457 problem document, and log each refusal on one line."""
    try:
        return await handler(request)
    except Problem as exc:
        refusal = exc
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        refusal = _http_problem(exc, request)
    except PackfleetError as exc:
        refusal = from_packfleet_error(exc)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return internal_error(request).response()
    _log_refusal(request, refusal)
    return refusal.response()


def _http_problem(exc: web.HTTPException, request: web.Request) -> Problem:
    if exc.status == 405:
        exc.headers["Allow"] = ",".join(allowed_methods(ENDPOINTS, request.path))
    if exc.status in (404, 405) and peer_certificate(request) is None:
        # Without a certificate only the open routes exist; the rest is not mapped for strangers.
        return forbidden(
            f"{request.method} {request.path} needs a client certificate and this connection presented none",
            thumbprint=None,
            fix="connect with a worker or admin certificate",
        )
    return from_http_exception(exc, request)


#: Refusal lines per peer address and kind of refusal: a peer retrying (or probing) in a loop
#: fills the log with a few lines a minute and a count, not with one line per request.
REFUSAL_LOG: web.AppKey[RateLimitedLog] = web.AppKey("packfleet_refusal_log", RateLimitedLog)


def _log_refusal(request: web.Request, problem: Problem) -> None:
    metrics = metrics_of(request.app)
    if metrics is not None:
        metrics.refusal(problem.slug)
    der = peer_certificate(request)
    # The thumbprint the peer *presented*, also when the refusal is not about a certificate.
    presented = problem.thumbprint or (thumbprint_of_der(der) if der else None)
    who = f"certificate {presented}" if presented else "no certificate"
    peer = request.remote or "unknown peer"
    request.app[REFUSAL_LOG].warning(
        f"{peer}:{problem.slug}",
        "refused %s %s from %s (%s): %d %s",
        safe(request.method, 20),
        safe(request.path),
        safe(peer, 60),
        who,
        problem.status,
        safe(problem.detail, 1000),
    )


def build_app(
    state: MasterState, endpoints: Sequence[Endpoint] = ENDPOINTS, *, services: Services | None = None
) -> web.Application:
    """The aiohttp application: one guarded route per endpoint, problem documents for every error.

    The handlers reach the master's domain through ``services`` (built on ``state`` when not given:
    then without a certificate rotation, which needs a running server).
    """
    # Bodies are read (and bounded per route) by the handlers; this is only the outer backstop.
    largest = max(ep.max_body for ep in endpoints)
    # track_requests first: it must see every request, including those the problem middleware answers.
    app = web.Application(middlewares=[track_requests, _problems], client_max_size=largest)
    app[STATE] = state
    app[SERVICES] = services if services is not None else Services.build(state)
    app[REFUSAL_LOG] = RateLimitedLog(log, burst=5, window=60.0)
    app[HEARTBEATS] = HeartbeatWriter(state)
    app[_worker_api.HEARTBEAT_LOG] = _worker_api.heartbeat_log()
    for endpoint in endpoints:
        app.router.add_route(endpoint.method, router_path(endpoint.path), _guard(endpoint))

    async def wake_long_polls(_app: web.Application) -> None:
        state.closing = True
        state.wakeups.notify_all()

    app.on_shutdown.append(wake_long_polls)
    return app


def _raise_open_file_limit(connections: int) -> None:
    """Let the process hold ``connections`` sockets plus its own files (catalog, stores, logs)."""
    wanted = connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "MaxConnections is %d but this process may open only %d files: connections beyond that "
            "fail at accept; raise LimitNOFILE in the service unit or lower MaxConnections "
            "(packfleet settings set master MaxConnections N)",
            connections,
            soft,
        )


def _store_fingerprint(home: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and mtimes of what the TLS material is read from, to notice edits cheaply."""
    paths = [home / "MasterSettings.config", home / "bindings.json"]
    for store in ("My", "Root"):
        folder = home / "certs" / store
        with contextlib.suppress(FileNotFoundError):
            paths += sorted(folder.iterdir())
    seen = []
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        seen.append((str(path), st.st_size, st.st_mtime_ns))
    return tuple(seen)


class MasterServer:
    """The master of one home: ``await start()``, serve, ``await reload()`` on SIGHUP, ``await stop()``.

    >>> server = MasterServer(home, host="127.0.0.1", port=0)   # doctest: +SKIP
    >>> await server.start(); server.port                      # doctest: +SKIP
    40211

    ``port`` overrides PortNumber for the listening socket only (0 picks a free port, for tests);
    the binding is still looked up for ``0.0.0.0:<PortNumber>``, as HTTP.SYS would.
    ``watch_interval`` is how often the settings, bindings file and stores are checked for edits made
    by other processes (``packfleet binding add``, ``cert import``); an edit reloads the TLS material.
    """

    def __init__(
        self,
        home: Path,
        *,
        clock: Callable[[], datetime] | None = None,
        host: str = WILDCARD,
        port: int | None = None,
        watch_interval: float = 2.0,
        shutdown_timeout: float = 10.0,
        console_port: int | None = None,
    ) -> None:
        self.home = Path(home)
        self.host = host
        self._port_override = port
        self._clock = clock or utc_now
        self._watch_interval = watch_interval
        self._shutdown_timeout = shutdown_timeout
        self._material: TlsMaterial | None = None
        self._tls: HotSwapServerContext | None = None
        self._state: MasterState | None = None
        #: The master's domain services (set once started): what its routes and its console call.
        self.services: Services | None = None
        self._runner: web.AppRunner | None = None
        self._jobs = JobRunner()
        self._reload_lock = asyncio.Lock()
        self._fingerprint: tuple[tuple[str, int, int], ...] = ()
        #: Prometheus metrics of this master (its own registry: see packfleet.master._metrics).
        self.metrics = MasterMetrics()
        #: Caps and deadlines of connections (MaxConnections... in MasterSettings.config).
        self.guard = ConnectionGuard(ConnectionLimits(), self.metrics)
        self._root_seen: frozenset[str] = frozenset()
        #: With a PostgreSQL catalog: wake-ups from other masters and the sweep leadership.
        self._coordination: PostgresCoordination | None = None
        self.port = 0
        #: ConsolePort unless given; tests that pick a free master port (0) get a free console port too.
        self._console_port = console_port if console_port is not None else (0 if port == 0 else None)
        self._console: ConsoleServer | None = None
        self._rotation: _rotation.MasterCertRotation | None = None

    @property
    def console_url(self) -> str | None:
        """The web console's address, or None when ConsoleEnabled is false (or it could not start)."""
        return self._console.url if self._console is not None else None

    @property
    def state(self) -> MasterState:
        if self._state is None:
            raise RuntimeError("the master is not started")
        return self._state

    @property
    def app(self) -> web.Application:
        """The aiohttp application being served (its router is what the OpenAPI document describes)."""
        if self._runner is None:
            raise RuntimeError("the master is not started")
        return self._runner.app

    @property
    def serving_thumbprint(self) -> str:
        """The thumbprint of the certificate new connections are served."""
        if self._material is None:
            raise RuntimeError("the master is not started")
        return self._material.thumbprint

    async def start(self) -> None:
        """Read settings, binding and stores, open (and upgrade) the catalog, and listen."""
        loop = asyncio.get_running_loop()
        self._fingerprint = await loop.run_in_executor(None, _store_fingerprint, self.home)
        material = await loop.run_in_executor(None, load_tls_material, self.home)
        self._tls = HotSwapServerContext(material.context(), on_client_hello=self.metrics.client_hello)
        self._material = material
        self.metrics.serving = (material.thumbprint, material.binding.certstorename)
        self._root_seen = await loop.run_in_executor(None, root_thumbprints, self.home)
        await self._warn_never_accepted(material.thumbprint)
        settings = material.settings
        self.guard.limits = ConnectionLimits.from_settings(settings)
        _raise_open_file_limit(settings.max_connections)
        url = settings.resolved_catalog_url(self.home)
        # SQLite allows one writer: one thread keeps catalog calls in order instead of contending.
        threads = 1 if url.startswith("sqlite") else 4
        executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="packfleet-catalog")
        try:
            # With the secrets key file: a master that could not open the sealed values refuses here.
            catalog, secrets = await loop.run_in_executor(
                executor,
                lambda: Catalog.open_sealed(
                    url,
                    secrets_key_path(self.home),
                    connect_timeout=settings.sql_connection_timeout_secs,
                    upgrade=True,
                    clock=self._clock,
                ),
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        state = MasterState(
            home=self.home,
            catalog=catalog,
            executor=executor,
            wakeups=LocalWakeups(),
            # Misses arriving together (a fleet reconnecting) are read together.
            principals=PrincipalCache(lambda t: authorize(t)),
            connections=ConnectionRegistry(),
            clock=self._clock,
            # Strict: an admin route that trusts a new certificate reports a refused reload (503).
            reload_trust=self.reload,
            secrets=secrets,
        )
        authorize = BatchedAuthorize(state)
        self._state = state
        rotation = RotationService(
            state, serving=lambda: self.serving_thumbprint, reload=self.reload, paused=self.reloads_paused
        )
        self.services = Services.build(state, serving=lambda: self.metrics.serving, rotation=rotation)
        self._rotation = rotation.rotation
        await rotation.load()
        if catalog.dialect == "postgresql":
            # Imported here: psycopg is the optional `postgresql` extra, not needed on SQLite.
            from packfleet.master._coordination import PostgresCoordination

            self._coordination = PostgresCoordination(
                url,
                state.wakeups,
                connect_timeout=settings.sql_connection_timeout_secs,
                on_notice=self._on_notice,
                origin=catalog.origin,
            )
            await self._coordination.start()
            await self.trust_sync_once()
        renewed = await state.db(catalog.renew_leases, LEASE_GRACE_AFTER_START)
        if renewed:
            log.info("renewed %d lease(s) held while the master was away", renewed)
        port = settings.port_number if self._port_override is None else self._port_override
        try:
            sock = socket.create_server((self.host, port), backlog=LISTEN_BACKLOG)
        except OSError as exc:
            await self._close_catalog()
            raise PackfleetError(
                f"cannot listen on {self.host}:{port}: {exc.strerror or exc}",
                fix=f"stop what uses port {port} (ss -ltnp 'sport = :{port}') or change it: "
                "packfleet settings set master PortNumber N",
            ) from exc
        app = build_app(state, services=self.services)
        app[METRICS] = self.metrics
        app[GUARD] = self.guard
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=self._shutdown_timeout
        )
        await self._runner.setup()
        await GuardedSite(
            self._runner,
            sock,
            ssl_context=self._tls.base,
            metrics=self.metrics,
            guard=self.guard,
            backlog=LISTEN_BACKLOG,
        ).start()
        self.port = sock.getsockname()[1]
        await state.db(write_listening, self.home, self.host, self.port)
        self._jobs.start(self._job_list())
        await self._start_console(material)
        await self.expiry_once()
        log.info(
            "master started on %s:%d serving certificate %s (binding %s, %s store); catalog %s",
            self.host,
            self.port,
            material.thumbprint,
            material.binding.ipport,
            material.binding.certstorename,
            catalog.url,
        )

    async def _start_console(self, material: TlsMaterial) -> None:
        """Start the console listener (ConsoleEnabled). A console that cannot start is logged and left
        out: the workers' listener is already serving, and the fleet must not stop for its web page."""
        settings = material.settings
        if not settings.console_enabled:
            return
        port = settings.console_port if self._console_port is None else self._console_port
        started = self._clock()
        assert self.services is not None  # noqa: S101 - built in start() before the console
        fleet = MasterFleet(
            self.state,
            self.services,
            started_at=started,
            address=lambda: settings.master_address or default_address(self.host, self.port),
            serving=lambda: self.metrics.serving,
        )
        console = ConsoleServer(
            fleet,
            self.home,
            host=settings.console_address,
            port=port,
            context=console_context(self.home, material),
        )
        try:
            await console.start()
        except PackfleetError as exc:
            log.error("web console not started: %s", str(exc).replace("\n", " "))
            await console.stop()
            return
        self._console = console

    def _job_list(self) -> list[Job]:
        assert self._material is not None  # noqa: S101 - only called once started
        settings = self._material.settings
        jobs = [
            Job("sweep-expired-leases", settings.deal_with_expired_tasks_interval_ms / 1000, self.sweep_once),
            Job("cleanup-completed", settings.cleanup_completed_jobs_interval_ms / 1000, self.cleanup_once),
            Job("master-heartbeat", settings.master_heartbeat_interval_ms / 1000, self.heartbeat_once),
        ]
        if self._watch_interval > 0:
            jobs.append(Job("watch-files", self._watch_interval, self.watch_once))
        jobs.append(Job("rotation-sync", ROTATION_SYNC_INTERVAL, self.rotation_sync_once))
        if self._coordination is not None:
            jobs.append(Job("trust-sync", TRUST_SYNC_INTERVAL, self.trust_sync_once))
        jobs.append(Job("certificate-expiry", EXPIRY_CHECK_INTERVAL, self.expiry_once))
        return jobs

    def _on_notice(self, channel: str, payload: str) -> None:
        """A notification from a master sharing the catalog (this one's own included)."""
        if channel == CUTOFF_CHANNEL:
            thumbprints = [t for t in payload.split(",") if t]
            if thumbprints:
                close_cut_off(self.state, thumbprints)
                self.state.wakeups.notify(TASKS)  # held long-polls re-check their authorization
        elif channel == ROTATION_CHANNEL:
            self._in_background(self.rotation_sync_once())
        elif channel == TRUST_CHANNEL:
            self._in_background(self.trust_sync_once())

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.state.background.add(task)
        task.add_done_callback(self.state.background.discard)

    async def rotation_sync_once(self) -> None:
        """Serve what the shared master certificate rotation says (a step may come from another master)."""
        if self._rotation is None:
            return
        try:
            await self._rotation.sync()
        except PackfleetError as exc:
            log.warning("cannot read the master certificate rotation: %s", exc.message)

    async def trust_sync_once(self) -> None:
        """With a shared catalog: trust the worker certificates it holds (see ``_sharedtrust``)."""
        if self._coordination is None:
            return
        try:
            await sync_trust(self.state)
        except PackfleetError as exc:
            log.warning("cannot bring the Root store in line with the catalog: %s", exc.message)

    async def expiry_once(self) -> None:
        """Log a warning for each fleet certificate within 30 (or 7) days of expiry; daily and at start."""
        try:
            await _fleet.log_expiring(self.state, self.metrics.serving)
        except PackfleetError as exc:
            log.warning("cannot check certificate expiry: %s", exc.message)

    async def sweep_once(self) -> None:
        """DealWithExpiredTasks: requeue (or end) tasks whose lease expired, and wake long-polls."""
        state = self.state
        if not await self._leads_sweeps():
            # The leader makes up for an outage it saw too; one that ended here is not this master's
            # to remember, or it would push leases out long after, were this master to lead later.
            state.forget_ended_outage()
            return
        await self._make_up_for_outage()
        result = await state.db(state.catalog.sweep_expired_leases)
        if result.requeued:
            state.wakeups.notify(TASKS)
        if result.requeued or result.ended or result.canceled:
            state.wakeups.notify(EVENTS)
            log.info(
                "expired leases: requeued %s, ended %s, canceled %s",
                result.requeued,
                result.ended,
                result.canceled,
            )

    async def _make_up_for_outage(self) -> None:
        """After the catalog was unreachable, push held leases out by the outage before sweeping.

        No worker could renew a lease while the database was away (its task heartbeats failed), so
        that time says nothing about the workers; without this the first sweep after a failover
        would end healthy executions. The outage is taken only once the extension is written.
        """
        state = self.state
        outage = state.take_catalog_outage()
        if outage is None:
            return
        try:
            extended = await state.db(state.catalog.extend_held_leases, outage)
        except PackfleetError:
            # Still down (or down again): keep the outage for the next sweep, counted from its start.
            if state.catalog_lost_since is None or state.catalog_lost_since > state.clock() - outage:
                state.catalog_lost_since = state.clock() - outage
            raise
        log.warning(
            "the catalog was unreachable for %.1f s: extended %d held lease(s) by that before sweeping",
            outage.total_seconds(),
            extended,
        )

    async def cleanup_once(self) -> None:
        """CleanupCompletedJobs: delete finished executions older than RetentionWindowInDays."""
        assert self._material is not None  # noqa: S101 - only called once started
        if not await self._leads_sweeps():
            return
        retention = timedelta(days=self._material.settings.retention_window_days)
        removed = await self.state.db(self.state.catalog.cleanup_completed, retention)
        if removed:
            log.info("cleaned up %d finished execution(s) older than %s", removed, retention)

    async def _leads_sweeps(self) -> bool:
        """One master per catalog runs the cluster-wide sweeps (always this one on SQLite)."""
        return self._coordination is None or await self._coordination.lead()

    async def heartbeat_once(self) -> None:
        """The master's own heartbeat: its last online time, under ``master.<host:port>.last_online``."""
        key = f"master.{socket.gethostname()}:{self.port}.last_online"
        await self.state.db(self.state.catalog.set_property, key, self._clock().isoformat())

    async def watch_once(self) -> None:
        """One check of the watched files (what the watcher job runs): reload if they changed."""
        loop = asyncio.get_running_loop()
        fingerprint = await loop.run_in_executor(None, _store_fingerprint, self.home)
        # self._fingerprint is what the last reload read, whoever asked for it (SIGHUP, an admin
        # route, a rotation, this watcher): a certificate added through the API and deleted by hand
        # before the next tick is still a change from what is being trusted.
        if fingerprint != self._fingerprint:
            await self.try_reload()

    async def _warn_never_accepted(self, serving: str) -> None:
        """Name each Root certificate no client handshake will be accepted with (doctor says so too)."""
        loop = asyncio.get_running_loop()
        now = self._clock()
        await loop.run_in_executor(
            None, functools.partial(warn_never_accepted, self.home, now=now, serving=serving)
        )

    async def reload(self) -> None:
        """Re-read settings, binding and stores and serve them to new connections.

        Open connections stay up. Invalid new material (a mismatch between binding and
        SSLCertThumbprint, a missing key, an unreadable store) raises, and the last good context
        keeps serving.
        """
        async with self._reload_lock:
            if self._tls is None or self._material is None:
                raise RuntimeError("the master is not started")
            loop = asyncio.get_running_loop()
            # Taken before reading: an edit made while reading shows as a change at the next tick.
            # A refused reload is recorded too, so the watcher retries only after a further edit.
            self._fingerprint = await loop.run_in_executor(None, _store_fingerprint, self.home)
            try:
                material = await loop.run_in_executor(None, load_tls_material, self.home)
                added = material.trust_added_to(self._material)
                if added is None:
                    self._tls.swap(material.context)
                else:
                    self._tls.trust_also(added)
            except PackfleetError as exc:
                log.error(
                    "reload refused, still serving certificate %s: %s",
                    self._material.thumbprint,
                    str(exc).replace("\n", " "),
                )
                raise
            old = self._material
            self._material = material
            await self._warn_never_accepted(material.thumbprint)
            if self._console is not None:
                try:
                    self._console.swap(console_context(self.home, material))
                except PackfleetError as exc:
                    log.error(
                        "console certificate not swapped, still serving the last good one: %s", exc.message
                    )
            self.metrics.serving = (material.thumbprint, material.binding.certstorename)
            await self._audit_store_change()
            if material.thumbprint != old.thumbprint:
                # Whoever edited the binding (a rotation, `packfleet binding add`, an editor), the
                # master records what it now serves: DESIGN.md wants every binding change audited.
                details = {"old": old.thumbprint, "new": material.thumbprint}
                await self.state.db(
                    self.state.catalog.audit, "master", "binding.apply", material.binding.ipport, details
                )
            if material.settings.port_number != old.settings.port_number and self._port_override is None:
                log.warning(
                    "PortNumber changed from %d to %d: restart the master to listen on the new port",
                    old.settings.port_number,
                    material.settings.port_number,
                )
            new_url = material.settings.resolved_catalog_url(self.home)
            if new_url != old.settings.resolved_catalog_url(self.home):
                log.warning("CatalogUrl changed: restart the master to use the new catalog")
            self.guard.limits = ConnectionLimits.from_settings(material.settings)
            if material.settings.tls_minimum_version != old.settings.tls_minimum_version:
                log.info(
                    "TlsMinimumVersion changed from %s to %s: new handshakes use it",
                    old.settings.tls_minimum_version,
                    material.settings.tls_minimum_version,
                )
            self.state.principals.invalidate()
            await self._jobs.replace(self._job_list())
            log.info(
                "reloaded: serving certificate %s, trusting %d certificate(s)",
                material.thumbprint,
                len(material.trusted),
            )

    @contextlib.asynccontextmanager
    async def reloads_paused(self) -> AsyncIterator[None]:
        """Hold off reloads (SIGHUP, the file watcher) while several files change together."""
        async with self._reload_lock:
            yield

    async def _audit_store_change(self) -> None:
        """Write ``store.change`` when the Root store differs from what was trusted before."""
        loop = asyncio.get_running_loop()
        now = await loop.run_in_executor(None, root_thumbprints, self.home)
        details = store_change(self._root_seen, now)
        self._root_seen = now
        if details is not None:
            await self.state.db(self.state.catalog.audit, "master", "store.change", "Root", details)

    async def try_reload(self) -> None:
        """:meth:`reload`, logging a refusal instead of raising it (SIGHUP, the file watcher)."""
        with contextlib.suppress(PackfleetError):
            await self.reload()

    async def stop(self) -> None:
        """Stop accepting, answer long-polls at once, let requests in flight finish, close the catalog."""
        if self._runner is None and self._state is None:
            return
        await self._jobs.stop()
        if self._state is not None:
            for task in list(self._state.background):
                task.cancel()
            self._state.closing = True
            self._state.wakeups.notify_all()
        if self._console is not None:
            await self._console.stop()
            self._console = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            remove_listening(self.home)
        if self._coordination is not None:
            await self._coordination.stop()
            self._coordination = None
        await self._close_catalog()
        log.info("master stopped (port %d)", self.port)

    async def _close_catalog(self) -> None:
        state = self._state
        if state is None:
            return
        self._state = None
        loop = asyncio.get_running_loop()
        # Calls already on the executor (a background write whose task was canceled keeps running
        # in its thread) end first: a connection they hold would outlive the closed pool, unclosed.
        await loop.run_in_executor(None, functools.partial(state.executor.shutdown, wait=True))
        await loop.run_in_executor(None, state.catalog.close)

    async def __aenter__(self) -> MasterServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()


def _configure_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(os.environ.get("PACKFLEET_LOG_LEVEL", "INFO").upper())


#: Allocations between two collections of the youngest generation (CPython's default is 700), and
#: how many of those make one of the next (default 10 each).
GC_THRESHOLDS = (20_000, 20, 20)


def tune_gc() -> None:
    """Collect cyclic garbage less often, and never look again at what the start-up loaded.

    A master with a thousand workers holds hundreds of thousands of objects (connections, TLS
    objects, certificates, the catalog's mappings), and each request allocates hundreds more: at
    CPython's default thresholds a full collection ran every few seconds under a fleet's burst
    (a master certificate rotation, ``make bench``) and cost as much CPU as the requests. Almost
    nothing a request allocates is cyclic, so rarer collections reclaim the same memory; what the
    start-up loaded lives as long as the process, so it is frozen out of every collection.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(server: MasterServer) -> None:
    """Run ``server`` until SIGTERM or SIGINT (graceful stop); SIGHUP reloads it."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    reloads: set[asyncio.Task[None]] = set()

    def on_hup() -> None:
        log.info("SIGHUP: reloading")
        task = loop.create_task(server.try_reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    await server.start()
    tune_gc()
    if server.console_url is not None:
        print(f"console: {server.console_url}", flush=True)  # `master run` tells where to browse
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        loop.add_signal_handler(signal.SIGHUP, on_hup)
        await stopping.wait()
        log.info("stopping: finishing requests in flight")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await server.stop()


def run_master(home: Path, *, host: str = WILDCARD, port: int | None = None) -> None:
    """Run the master of ``home`` in this process until SIGTERM/SIGINT (``packfleet master run``)."""
    # What the systemd unit sets too (UMask=0077), for a master started by hand: anything the master
    # creates without an explicit mode (the catalog's journal, a new folder) is private to its account.
    os.umask(0o077)
    _configure_logging()
    asyncio.run(serve(MasterServer(home, host=host, port=port)))
