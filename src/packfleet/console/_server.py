"""The console's own HTTPS listener: routes, middleware, hot-swappable server-only TLS."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from aiohttp import web

from packfleet.console import _actions, _downloads, _live, _manage, _pages, _rotation, _runs, _signin
from packfleet.console._fleet import Fleet
from packfleet.console._inventory import INVENTORY, CertificateInventory
from packfleet.console._sessions import SessionStore, SignInLimiter, load_session_key
from packfleet.console._web import FLEET, LIMITER, SESSIONS, TEMPLATES, middleware, secure, templates
from packfleet.errors import PackfleetError
from packfleet.transport import HotSwapServerContext

log = logging.getLogger("packfleet.console")

#: Forms are small; nothing the console accepts is larger.
MAX_BODY = 64 * 1024
_STATIC = {"console.js": "text/javascript", "console.css": "text/css"}


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in _STATIC:
        raise web.HTTPNotFound()
    body = resources.files("packfleet.console").joinpath("static", name).read_bytes()
    response = web.Response(body=body, content_type=_STATIC[name])
    secure(response)
    response.headers["Cache-Control"] = "no-cache"
    return response


def build_app(fleet: Fleet, session_key: bytes, *, limiter: SignInLimiter | None = None) -> web.Application:
    """The console application over ``fleet``; sessions are encrypted with ``session_key`` (Fernet)."""
    app = web.Application(middlewares=[middleware], client_max_size=MAX_BODY)
    app[FLEET] = fleet
    app[SESSIONS] = SessionStore(session_key)
    app[LIMITER] = limiter or SignInLimiter()
    app[TEMPLATES] = templates()
    app[INVENTORY] = CertificateInventory()
    r = app.router
    r.add_get("/login", _signin.login_page)
    r.add_post("/login", _signin.login)
    r.add_post("/logout", _signin.logout)
    r.add_get("/", _pages.dashboard)
    r.add_get("/workers", _pages.workers)
    r.add_get("/workers/connect", _manage.connect_page)
    r.add_post("/workers/connect/review", _manage.connect_review)
    r.add_post("/workers/connect", _manage.connect)
    r.add_get("/workers/{agent_id}", _pages.worker)
    r.add_post("/workers/{agent_id}/drain", _manage.drain_worker)
    r.add_post("/workers/{agent_id}/edit", _manage.edit_worker)
    r.add_post("/workers/{agent_id}/enable", _actions.enable_worker)
    r.add_post("/workers/{agent_id}/disable", _actions.disable_worker)
    r.add_get("/workers/{agent_id}/delete", _pages.confirm_delete)
    r.add_post("/workers/{agent_id}/delete", _actions.delete_worker)
    r.add_get("/executions", _pages.executions)
    r.add_get("/executions/new", _runs.new_page)
    r.add_post("/executions/new", _runs.new_run)
    r.add_get("/executions/{execution_id}", _pages.execution)
    r.add_post("/executions/{execution_id}/rerun", _runs.rerun)
    r.add_get("/executions/{execution_id}/events", _live.tail)
    r.add_get("/executions/{execution_id}/log.{kind}", _downloads.execution_log)
    r.add_post("/executions/{execution_id}/stop", _actions.stop_execution)
    r.add_get("/certificates", _pages.certificates)
    r.add_get("/certificates/rotation", _rotation.rotation_page)
    r.add_post("/certificates/rotation", _rotation.rotate)
    r.add_get("/audit", _pages.audit)
    r.add_get("/audit/download.{kind}", _downloads.audit_log)
    r.add_get("/static/{name}", _static)
    return app


class ConsoleServer:
    """The console listener of one master: ``await start()``, ``swap(build)`` on reload, ``stop()``.

    ``context`` builds the server SSLContext (the master passes the console certificate's); a swap
    builds a new one first and keeps the last good one when that fails, as the worker listener does.
    """

    def __init__(
        self,
        fleet: Fleet,
        home: Path,
        *,
        host: str,
        port: int,
        context: Callable[[], ssl.SSLContext],
        shutdown_timeout: float = 5.0,
    ) -> None:
        self.fleet = fleet
        self.home = home
        self.host = host
        self.port = port
        self._build = context
        self._tls: HotSwapServerContext | None = None
        self._runner: web.AppRunner | None = None
        self._shutdown_timeout = shutdown_timeout

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}/"

    async def start(self) -> None:
        self._tls = HotSwapServerContext(self._build())
        key = load_session_key(self.home)
        try:
            sock = socket.create_server((self.host, self.port), backlog=128)
        except OSError as exc:
            raise PackfleetError(
                f"the console cannot listen on {self.host}:{self.port}: {exc.strerror or exc}",
                fix=f"stop what uses port {self.port} (ss -ltnp 'sport = :{self.port}') or change it: "
                "packfleet settings set master ConsolePort N (or ConsoleEnabled false)",
            ) from exc
        app = build_app(self.fleet, key)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=self._shutdown_timeout
        )
        await self._runner.setup()
        await web.SockSite(self._runner, sock, ssl_context=self._tls.base).start()
        self.port = sock.getsockname()[1]
        log.info("console listening on %s", self.url)

    def swap(self, build: Callable[[], ssl.SSLContext]) -> None:
        """Serve new connections a newly built context (the last good one stays if building fails)."""
        if self._tls is None:
            raise RuntimeError("the console is not started")
        self._tls.swap(build)
        self._build = build

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
