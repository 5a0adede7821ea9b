"""What every handler shares: the catalog behind its executor, wake-ups, caches, and body helpers."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

from aiohttp import web

from packfleet.catalog import Catalog
from packfleet.errors import CatalogUnavailable, InvalidValue
from packfleet.master._auth import Caller, ConnectionRegistry, PrincipalCache
from packfleet.master._problems import Problem, bad_request
from packfleet.master._wakeup import Ticket, Wakeups
from packfleet.pki import CertStore
from packfleet.protocol import decode
from packfleet.secretbox import (
    SEALED_PREFIX,
    LiveKeyring,
    is_sealed,
    open_values,
    seal_values,
    sensitive_names,
)

P = ParamSpec("P")
T = TypeVar("T")
M = TypeVar("M")

#: The longest a long-poll (task lease, event follow) is held open, whatever the client asks: long
#: enough to make polling cheap, short enough for proxies and for a restart to drain quickly.
MAX_WAIT_SECONDS = 30.0
#: The longest a client may take to send a request body. Bodies are bounded in size per route, but a
#: peer trickling a byte a minute (slowloris) would otherwise hold a connection and a handler forever,
#: on open routes too.
BODY_TIMEOUT_SECONDS = 30.0


class RotationView(Protocol):
    """What others read of the rotation under way (``_rotation.RotationRecord``)."""

    @property
    def phase(self) -> str: ...
    @property
    def old(self) -> str: ...
    @property
    def new(self) -> str: ...


async def off_catalog(call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run blocking work that is not the catalog's (key generation, TLS context builds, certificate
    files) on a worker thread of its own.

    ``MasterState.db`` runs on the catalog's executor, which on SQLite has one thread: a key
    generation or a store write queued there would hold up every lease and heartbeat behind it.
    """
    return await asyncio.to_thread(functools.partial(call, *args, **kwargs))


@dataclass
class MasterState:
    """The master's live parts, built by :class:`~packfleet.master.MasterServer` at start."""

    home: Path
    catalog: Catalog
    executor: ThreadPoolExecutor
    wakeups: Wakeups
    principals: PrincipalCache
    connections: ConnectionRegistry
    clock: Callable[[], datetime]
    reload_trust: Callable[[], Awaitable[None]]
    closing: bool = False
    max_wait: float = MAX_WAIT_SECONDS
    body_timeout: float = BODY_TIMEOUT_SECONDS
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    #: The secrets key file that seals sensitive parameter values (see packfleet.secretbox).
    secrets: LiveKeyring | None = None
    #: When a catalog call last succeeded (master clock), and, once a call found the database
    #: unreachable, the last success before that: the outage the lease sweep makes up for.
    catalog_ok_at: datetime | None = None
    catalog_lost_since: datetime | None = None
    #: By worker (canonical agent id): the wake-up ticket taken before its last lease look, when
    #: that look left nothing ready it may take (see ``_worker_api.lease``).
    drained_looks: dict[str, Ticket] = field(default_factory=dict)

    async def db(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a synchronous catalog call on the catalog's executor, never on the event loop.

        SQLite has one writer, so its executor has one thread and calls queue up in order; on
        PostgreSQL a few threads let slow queries overlap. A call that finds the database
        unreachable starts an outage (see :meth:`take_catalog_outage`).
        """
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self.executor, functools.partial(call, *args, **kwargs))
        except CatalogUnavailable:
            if self.catalog_lost_since is None:
                self.catalog_lost_since = self.catalog_ok_at or self.clock()
            raise
        self.catalog_ok_at = self.clock()
        return result

    def forget_ended_outage(self) -> None:
        """Drop an outage the catalog has come back from (a call succeeded since it began)."""
        since, ok = self.catalog_lost_since, self.catalog_ok_at
        if since is not None and ok is not None and ok > since:
            self.catalog_lost_since = None

    def take_catalog_outage(self) -> timedelta | None:
        """How long the catalog was unreachable, counted from the last call that succeeded before
        it, once per outage (None: no outage since the last time this was asked)."""
        since = self.catalog_lost_since
        if since is None:
            return None
        self.catalog_lost_since = None
        return max(timedelta(0), self.clock() - since)

    def seal(self, manifest: Any, package: str, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` with the package's sensitive parameters sealed, as the catalog must store them."""
        names = sensitive_names(manifest, package)
        for name, value in values.items():
            if name not in names and is_sealed(value):
                # It would be "opened" when the task is leased, and fail there, far from the caller.
                raise InvalidValue(
                    f"parameter {name!r}: a value may not begin with {SEALED_PREFIX!r}, which marks "
                    "sealed sensitive values",
                    fix="pass another value, or mark the parameter sensitive = true in packfleet.toml",
                )
        if not names:
            return values
        if self.secrets is None:
            raise RuntimeError("the master's secrets key is not loaded")
        return seal_values(self.secrets.get(), values, names)

    def unsealed(self, assignment: dict[str, Any]) -> dict[str, Any]:
        """A leased task's wire form with its sealed values opened, for the worker that leased it only."""
        parameters = assignment.get("parameters") or {}
        if self.secrets is None or not parameters:
            return assignment
        return {**assignment, "parameters": open_values(self.secrets.get(), parameters)}

    def pinned_in_root(self, thumbprint: str) -> bool:
        """Whether this very certificate (not one that signed it) is in the master's Root store.

        Reads the store: call it off the event loop (and off the catalog's thread, which every
        heartbeat waits for: the heartbeat route asks it beside its other registration checks).
        """
        return CertStore(self.home, "Root").contains(thumbprint)

    def wait_seconds(self, asked: float) -> float:
        """How long a long-poll may wait: what the client asked, within ``0..max_wait``."""
        if asked != asked:  # NaN: treat as "do not wait"
            return 0.0
        return max(0.0, min(float(asked), self.max_wait))


@dataclass(frozen=True)
class Call:
    """One request as a handler sees it: who calls, the master's state, the route's body limit."""

    request: web.Request
    caller: Caller
    state: MasterState
    max_body: int

    async def body(self) -> bytes:
        return await read_body(self.request, self.max_body, timeout=self.state.body_timeout)

    async def json(self) -> Any:
        return await read_json(self.request, self.max_body, timeout=self.state.body_timeout)

    async def message(self, cls: type[M]) -> M:
        """The body decoded strictly as wire message ``cls``; a bad field is a 400 naming it."""
        return decode(cls, await self.json())


STATE: web.AppKey[MasterState] = web.AppKey("packfleet_master_state", MasterState)


async def read_body(request: web.Request, limit: int, *, timeout: float = BODY_TIMEOUT_SECONDS) -> bytes:
    """The request body, refused with 413 once it passes ``limit`` bytes (declared or streamed), and
    with 408 when it has not all arrived within ``timeout`` seconds."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(request, declared, limit)
    if request.content.is_eof():
        # All of it came already (a heartbeat's few hundred bytes arrive with the headers): no
        # deadline to set up, nothing to wait for.
        body = request.content.read_nowait()
        if len(body) > limit:
            raise _too_large(request, len(body), limit)
        return body
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise _too_large(request, size, limit)
                chunks.append(chunk)
    except TimeoutError:
        raise Problem(
            408,
            "request-timeout",
            f"the body of {request.method} {request.path} did not arrive within {timeout:g} seconds "
            f"({size} bytes came)",
            fix="check the network between this client and the master, then send the request again",
        ) from None
    return b"".join(chunks)


def _too_large(request: web.Request, size: int, limit: int) -> Problem:
    return Problem(
        413,
        "payload-too-large",
        f"the body of {request.method} {request.path} has at least {size} bytes; this route takes at "
        f"most {limit} bytes",
    )


async def read_json(request: web.Request, limit: int, *, timeout: float = BODY_TIMEOUT_SECONDS) -> Any:
    body = await read_body(request, limit, timeout=timeout)
    if not body:
        raise bad_request(f"{request.method} {request.path} needs a JSON body")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the body of {request.method} {request.path} is not JSON: {exc}") from None


def json_response(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(data, separators=(",", ":")).encode(),
        content_type="application/json",
    )


def _given(request: web.Request, name: str, what: str) -> str | None:
    """A query parameter's text, None when it is left out; an empty one is a 400, not the default."""
    raw = request.query.get(name)
    if raw == "":
        raise bad_request(f"query parameter {name} is empty: give {what}, or leave it out for the default")
    return raw


def query_int(request: web.Request, name: str, default: int, *, minimum: int = 0, maximum: int) -> int:
    """An integer query parameter within bounds; anything else is a 400 naming it."""
    raw = _given(request, name, "a whole number")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"query parameter {name}={raw!r} is not a whole number") from None
    if not minimum <= value <= maximum:
        raise bad_request(f"query parameter {name}={value} is out of range {minimum}..{maximum}")
    return value


def query_float(request: web.Request, name: str, default: float) -> float:
    raw = _given(request, name, "a number")
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise bad_request(f"query parameter {name}={raw!r} is not a number") from None
