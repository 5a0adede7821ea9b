"""Sign in and sign out: argon2id passwords, a new session at every sign-in, a rate limit."""

from __future__ import annotations

import asyncio
import logging
import math

from aiohttp import web

from packfleet.console._passwords import verify_password
from packfleet.console._sessions import Session
from packfleet.console._web import (
    LIMITER,
    SESSION,
    SESSIONS,
    VIEWER,
    fleet_of,
    form_text,
    render,
    see_other,
    session_of,
    viewer_of,
)
from packfleet.errors import NotFound

log = logging.getLogger("packfleet.console")


def _safe_next(target: str) -> str:
    """Where to go after sign-in: only a path of this console (no ``//host`` or ``/\\host``)."""
    if target.startswith("/") and not target.startswith(("//", "/\\")) and "\n" not in target:
        return target
    return "/"


async def login_page(request: web.Request) -> web.StreamResponse:
    if request.get(VIEWER) is not None:
        raise web.HTTPFound(_safe_next(request.query.get("next", "/")))
    session = session_of(request)
    fresh = session is None
    if session is None:
        # An anonymous session carries the CSRF token of the sign-in form (login CSRF).
        session = Session.fresh()
        request[SESSION] = session
    response = render(
        request, "login.html", title="Sign in", next=request.query.get("next", "/"), username="", error=None
    )
    if fresh:
        request.app[SESSIONS].save(response, session)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    name = form_text(form, "username", limit=128)
    password = form.get("password", "")
    target = _safe_next(form_text(form, "next", limit=2000) or "/")
    address = request.remote or "unknown"
    limiter = request.app[LIMITER]
    wait = limiter.retry_after(name, address)
    if wait > 0:
        log.warning("console sign-in of %r from %s refused: too many failures", name, address)
        response = render(
            request,
            "login.html",
            http_status=429,
            title="Sign in",
            next=target,
            username=name,
            error=f"Too many failed sign-ins. Try again in {math.ceil(wait)} seconds.",
        )
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    fleet = fleet_of(request)
    try:
        user = await fleet.db(fleet.catalog.get_user, name)
        stored: str | None = user.password_hash
    except NotFound:
        stored = None
    loop = asyncio.get_running_loop()
    # argon2 takes tens of milliseconds of CPU on purpose: off the event loop, off the catalog thread.
    ok = isinstance(password, str) and await loop.run_in_executor(None, verify_password, stored, password)
    if not ok or stored is None:
        limiter.failed(name, address)
        log.warning("console sign-in of %r from %s failed", name, address)
        return render(
            request,
            "login.html",
            http_status=401,
            title="Sign in",
            next=target,
            username=name,
            error="Wrong user name or password.",
        )
    limiter.succeeded(name)
    old = session_of(request)
    session = Session.fresh(user.name)  # a new session id and CSRF token: no session fixation
    response = see_other(target)
    store = request.app[SESSIONS]
    if old is not None:
        store.end(response, old)
    store.save(response, session)
    await fleet.db(
        fleet.catalog.audit, f"console:{user.name}", "console.sign_in", user.name, {"from": address}
    )
    log.info("console: %s signed in from %s", user.name, address)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    viewer = viewer_of(request)
    session = session_of(request)
    response = see_other("/login")
    if session is not None:
        request.app[SESSIONS].end(response, session)
    fleet = fleet_of(request)
    await fleet.db(fleet.catalog.audit, viewer.actor, "console.sign_out", viewer.name)
    return response
