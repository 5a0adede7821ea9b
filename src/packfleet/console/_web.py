"""The console's aiohttp plumbing: who is signed in, CSRF, security headers, templates, errors."""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

from packfleet import __version__
from packfleet.catalog import CONSOLE_ROLES
from packfleet.console._fleet import Fleet
from packfleet.console._sessions import Session, SessionStore, SignInLimiter, csrf_ok
from packfleet.errors import CatalogError, Conflict, InvalidValue, NotFound, PackfleetError

log = logging.getLogger("packfleet.console")

#: No inline script or style, nothing from another origin, no framing, forms post only here.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Strict-Transport-Security": "max-age=31536000",
    "Cache-Control": "no-store",
}
#: Paths anyone may reach without signing in.
OPEN_PATHS = ("/login", "/static/")


def secure(response: web.StreamResponse) -> None:
    """Put the security headers on ``response`` (before it is prepared)."""
    for name, value in _HEADERS.items():
        response.headers.setdefault(name, value)


@dataclass(frozen=True)
class Viewer:
    """The signed-in user of a request."""

    name: str
    role: str

    def may(self, role: str) -> bool:
        """Whether this user's role includes ``role`` (viewer < operator < admin)."""
        return CONSOLE_ROLES.index(self.role) >= CONSOLE_ROLES.index(role)

    @property
    def actor(self) -> str:
        """How the audit log names this user: ``console:NAME``."""
        return f"console:{self.name}"


FLEET: web.AppKey[Fleet] = web.AppKey("packfleet_console_fleet", Fleet)
SESSIONS: web.AppKey[SessionStore] = web.AppKey("packfleet_console_sessions", SessionStore)
LIMITER: web.AppKey[SignInLimiter] = web.AppKey("packfleet_console_limiter", SignInLimiter)
TEMPLATES: web.AppKey[jinja2.Environment] = web.AppKey("packfleet_console_templates", jinja2.Environment)
VIEWER: web.RequestKey[Viewer | None] = web.RequestKey("packfleet_console_viewer", object)  # type: ignore[arg-type]
SESSION: web.RequestKey[Session | None] = web.RequestKey("packfleet_console_session", object)  # type: ignore[arg-type]


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("packfleet.console", "templates"),
        autoescape=True,  # every value is HTML-escaped unless a template says otherwise (none does)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["urlquote"] = lambda value: urllib.parse.quote(str(value), safe="")
    return env


def fleet_of(request: web.Request) -> Fleet:
    return request.app[FLEET]


def viewer_of(request: web.Request) -> Viewer:
    viewer: Viewer | None = request.get(VIEWER)
    if viewer is None:
        raise web.HTTPFound("/login")
    return viewer


def session_of(request: web.Request) -> Session | None:
    session: Session | None = request.get(SESSION)
    return session


def require(request: web.Request, role: str, what: str) -> Viewer:
    """The signed-in user, who must hold ``role``; else 403 naming the role needed."""
    viewer = viewer_of(request)
    if not viewer.may(role):
        raise ConsoleRefusal(
            403,
            f"{what} needs the {role} role; you are signed in as {viewer.name} ({viewer.role})",
            f"an admin can run: packfleet manager user passwd {viewer.name} --role {role} --password-stdin",
        )
    return viewer


class ConsoleRefusal(Exception):
    """A refusal shown to the user as a page: status, what is wrong and what fixes it."""

    def __init__(self, status: int, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fix = fix


def render(request: web.Request, name: str, *, http_status: int = 200, **context: Any) -> web.Response:
    """Render template ``name`` with what every page shows: user, CSRF token, version."""
    session = session_of(request)
    body = (
        request.app[TEMPLATES]
        .get_template(name)
        .render(
            viewer=request.get(VIEWER),
            csrf=session.csrf if session else "",
            version=__version__,
            path=request.path,
            **context,
        )
    )
    response = web.Response(text=body, status=http_status, content_type="text/html", charset="utf-8")
    return response


def see_other(location: str) -> web.Response:
    """A 303 to ``location`` (after a form post, so a reload does not post again)."""
    return web.Response(status=303, headers={"Location": location})


def _error_page(request: web.Request, status: int, message: str, fix: str | None) -> web.Response:
    return render(
        request, "error.html", http_status=status, message=message, fix=fix, title=f"Error {status}"
    )


_STATUS_OF: tuple[tuple[type[PackfleetError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (InvalidValue, 400),
)


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sign-in, CSRF and errors for every request, and the security headers on every answer.

    Each answer that is not a stream says how long the console took to make it, in a
    ``Server-Timing`` header (W3C Server Timing): what ``make bench``'s console scenario reports as
    the server time of each page, apart from the network and the client.
    """
    began = time.perf_counter()
    try:
        response = await _checked(request, handler)
    except web.HTTPException as exc:
        if exc.status < 400:
            secure(exc)
            raise
        response = _error_page(request, exc.status, exc.reason, None)
    except ConsoleRefusal as exc:
        response = _error_page(request, exc.status, exc.message, exc.fix)
    except PackfleetError as exc:
        status = next((code for cls, code in _STATUS_OF if isinstance(exc, cls)), 500)
        if isinstance(exc, CatalogError) and status == 500:
            status = 503
        response = _error_page(request, status, exc.message, exc.fix)
    except Exception:
        log.exception("console: %s %s failed", request.method, request.path)
        response = _error_page(
            request, 500, "the console failed to answer; the master's log has the details", None
        )
    if not response.prepared:
        secure(response)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - began) * 1000:.1f}"
    return response


async def _checked(request: web.Request, handler: Handler) -> web.StreamResponse:
    store = request.app[SESSIONS]
    session = store.load(request)
    request[SESSION] = session
    # Static files need no user: no catalog look-up for each stylesheet and script.
    if session is not None and session.user is not None and not request.path.startswith("/static/"):
        viewer = await _current_user(request, session)
        if viewer is None:
            request[SESSION] = session = None
        else:
            request[VIEWER] = viewer
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        await _check_csrf(request, session)
    if request.get(VIEWER) is None and not request.path.startswith(OPEN_PATHS):
        if request.method in ("GET", "HEAD"):
            target = request.path_qs
            raise web.HTTPFound("/login?" + urllib.parse.urlencode({"next": target}))
        raise ConsoleRefusal(401, "sign in first", "open /login")
    return await handler(request)


async def _current_user(request: web.Request, session: Session) -> Viewer | None:
    """The session's user as the catalog knows it now: deleted users and sessions older than a
    password or role change end here."""
    fleet = fleet_of(request)
    assert session.user is not None  # noqa: S101 - checked by the caller
    try:
        user = await fleet.db(fleet.catalog.get_user, session.user)
    except NotFound:
        return None
    if user.updated_at.timestamp() > session.issued:
        return None
    return Viewer(user.name, user.role)


async def _check_csrf(request: web.Request, session: Session | None) -> None:
    # Fetch metadata first (browsers send it on every request): a cross-site POST is refused even
    # before the token is looked at. "none" is a user typing the URL or a bookmark.
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        raise ConsoleRefusal(403, f"refused a {site} request: changes come only from the console's own pages")
    sent = request.headers.get("X-CSRF-Token")
    if sent is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        # aiohttp caches the parsed form: the handler's own request.post() reads it again for free.
        token = (await request.post()).get("csrf_token")
        sent = token if isinstance(token, str) else None
    if not csrf_ok(session, sent):
        raise ConsoleRefusal(
            403,
            "the form's CSRF token is missing or does not belong to this session",
            "reload the page and submit the form again",
        )


def form_text(form: Any, name: str, *, limit: int = 1000) -> str:
    """A text field of a posted form, stripped and bounded."""
    value = form.get(name, "")
    if not isinstance(value, str):
        raise ConsoleRefusal(400, f"form field {name} must be text")
    return value.strip()[:limit]


Page = Callable[[web.Request], Awaitable[web.StreamResponse]]
