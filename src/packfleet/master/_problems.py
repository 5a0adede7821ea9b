"""RFC 9457 problem documents: the only shape an error leaves the master in.

Every refusal names what a person needs to act on: the certificate (``thumbprint``), the worker when
one is known (``worker``), the reason (``detail``) and the command that mends it (``fix``). Those three
extension members are what :class:`packfleet.transport.MasterClient` turns back into an
:class:`~packfleet.errors.ApiError` on the other side.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web

from packfleet.errors import (
    ArchiveError,
    CatalogError,
    CertificateNotFound,
    Conflict,
    InvalidValue,
    NotFound,
    PackageError,
    PackfleetError,
    PkiError,
    ProtocolError,
    SecretsError,
    SettingsError,
)
from packfleet.protocol import routes

log = logging.getLogger("packfleet.master")

# Problem types are URNs (RFC 9457 §3.1.1 allows any URI): stable names that clients may switch on,
# without implying a documentation page that would have to exist.
_TYPE_PREFIX = routes.PROBLEM_TYPE_PREFIX


class Problem(Exception):
    """Raised inside a handler to answer with a problem document instead of a result."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        title: str | None = None,
        thumbprint: str | None = None,
        worker: str | None = None,
        fix: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.headers = headers or {}
        self.status = status
        self.slug = slug
        self.detail = detail
        self.title = title or _reason(status)
        self.thumbprint = thumbprint
        self.worker = worker
        self.fix = fix

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": _TYPE_PREFIX + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        for name in ("thumbprint", "worker", "fix"):
            value = getattr(self, name)
            if value:
                doc[name] = value
        return doc

    def response(self) -> web.Response:
        return web.Response(
            status=self.status,
            body=json.dumps(self.document(), separators=(",", ":")).encode(),
            content_type=routes.PROBLEM_CONTENT_TYPE,
            headers=self.headers,
        )


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def forbidden(detail: str, *, thumbprint: str | None, worker: str | None = None, fix: str | None) -> Problem:
    """A 403 refusal; ``detail`` says why, ``fix`` what command lifts it."""
    return Problem(403, "forbidden", detail, thumbprint=thumbprint, worker=worker, fix=fix)


def bad_request(detail: str, *, fix: str | None = None) -> Problem:
    return Problem(400, "bad-request", detail, fix=fix)


def from_http_exception(exc: web.HTTPException, request: web.Request) -> Problem:
    """aiohttp's own refusals (unknown route, wrong method, body too large) as problem documents."""
    status = exc.status
    if status == 404:
        return Problem(
            404,
            "not-found",
            f"there is no route {request.method} {request.path}",
            fix=f"the routes are listed in {routes.OPENAPI}",
        )
    if status == 405:
        # RFC 9110 §15.5.6: a 405 must list the methods the route does answer.
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return Problem(
            405,
            "method-not-allowed",
            f"{request.path} does not answer {request.method}: {exc.text}",
            headers=allow,
        )
    if status == 413:
        return Problem(413, "payload-too-large", exc.text or "the request body is too large")
    return Problem(status, "http-error", exc.text or _reason(status))


def from_packfleet_error(exc: PackfleetError) -> Problem:
    """Map the error tree onto HTTP by *whose* fault it is.

    The request's: bad input 400, missing records 404, invariants 409. The master's: its catalog
    unreachable 503 (clients retry), its own settings, bindings or stores broken 500 (no retry
    helps; ``fix`` says what the operator runs). A handler that parses a certificate or settings
    the *client* sent catches that error itself and answers 400.
    """
    if isinstance(exc, NotFound | CertificateNotFound):
        return Problem(404, "not-found", exc.message, fix=exc.fix)
    if isinstance(exc, Conflict):
        return Problem(409, "conflict", exc.message, fix=exc.fix)
    if isinstance(exc, ArchiveError):
        return Problem(400, "invalid-archive", exc.message, fix=exc.fix)
    if isinstance(exc, ProtocolError | PackageError | InvalidValue):
        return Problem(400, "bad-request", exc.message, fix=exc.fix)
    if isinstance(exc, CatalogError):
        return Problem(503, "catalog-unavailable", exc.message, fix=exc.fix)
    if isinstance(exc, SettingsError | PkiError | SecretsError):
        return Problem(
            500,
            "master-misconfigured",
            f"the master cannot answer: {exc.message}",
            fix=exc.fix or "packfleet doctor (on the master)",
        )
    return Problem(400, "refused", exc.message, fix=exc.fix)


def internal_error(request: web.Request) -> Problem:
    return Problem(
        500,
        "internal-error",
        f"the master failed to answer {request.method} {request.path}; the reason is in its log",
        fix="journalctl -u packfleet-master (or the master's stderr)",
    )
