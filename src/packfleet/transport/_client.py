"""The HTTPS client every node uses to talk to the master (workers and the manager alike).

One keep-alive connection pool per client; every failure leaves as a packfleet error: TLS failures
explained by :mod:`packfleet.transport._explain`, problem documents as :class:`ApiError`, the rest as
:class:`TransportError` naming the endpoint.
"""

from __future__ import annotations

import asyncio
import io
import json
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp
from yarl import URL

from packfleet.errors import ApiError, ProtocolError, SettingsError, TlsError, TransportError
from packfleet.protocol import routes
from packfleet.transport._explain import (
    explain_client_failure,
    fetch_server_certificate,
    master_accepts_client_certificate,
)
from packfleet.transport._policy import trust_also
from packfleet.trust import untrusted_client

#: Seconds to open a TCP connection: a master that does not accept one by then is down or unreachable.
_CONNECT_TIMEOUT = 10.0


def parse_endpoint(
    endpoint: str, *, kind: str = "worker", key: str = "MasterEndpoint", fix: str | None = None
) -> tuple[str, int]:
    """Split ``https://host:port`` into host and port, refusing anything but HTTPS.

    ``kind`` and ``key`` name the setting the URL came from (``master``/``MasterAddress``,
    ``manager``/``MasterEndpoint``...), so the refusal says which file to mend; ``fix`` replaces that
    advice when the URL came from elsewhere, such as a join token or a command-line option.
    """
    try:
        url = URL(endpoint)
        scheme, host, port = url.scheme, url.host, url.port
    except ValueError:  # yarl refuses a malformed authority, such as a port that is not a number
        scheme, host, port = "", None, None
    if scheme != "https" or not host:
        raise SettingsError(
            f"{key} {endpoint!r} is not an https://host:port URL",
            fix=fix or f"packfleet settings set {kind} {key} https://MASTER:8391",
        )
    return host, port or 443


#: SSL errors that mean the peer went away, not that a certificate or the policy was refused.
_VANISHED = (
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
    ssl.SSLWantReadError,
    ssl.SSLWantWriteError,
    ssl.SSLSyscallError,
)


def _ssl_cause(exc: BaseException) -> BaseException | None:
    """Find the ssl.SSLError (or certificate error) that aiohttp wrapped, however deep."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        # aiohttp's ClientConnectorCertificateError is itself an ssl.CertificateError but carries no
        # verify_code: look through it to the OpenSSL error it wraps.
        if isinstance(current, ssl.SSLError | ssl.CertificateError) and not isinstance(
            current, aiohttp.ClientError
        ):
            return current
        stack += [
            getattr(current, "certificate_error", None),
            getattr(current, "os_error", None),
            current.__cause__,
            current.__context__,
        ]
    return None


class MasterClient:
    """JSON over HTTPS to one master, with the identity and pins of one node.

    >>> client = MasterClient("https://127.0.0.1:8391", ctx, role="worker", pins=[T])  # doctest: +SKIP
    >>> await client.request("POST", routes.WORKER_HEARTBEAT, json=beat)               # doctest: +SKIP
    """

    def __init__(
        self,
        endpoint: str,
        ssl_context: ssl.SSLContext,
        *,
        role: str,
        pins: list[str],
        own_thumbprint: str | None = None,
        timeout: float = 60.0,
        connections: int = 8,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        # A worker's and a manager's endpoint are both their settings' MasterEndpoint.
        self.host, self.port = parse_endpoint(self.endpoint, kind=role)
        self.role = role
        self.pins = pins
        self.own_thumbprint = own_thumbprint
        self._ssl_context = ssl_context
        self._timeout = timeout
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._retired: list[aiohttp.ClientSession] = []
        #: Requests in flight per session (by id): a retired session is closed only once it has none,
        #: since closing an aiohttp session aborts its requests, long-polls included.
        self._in_flight: dict[int, int] = {}

    async def __aenter__(self) -> MasterClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self._ssl_context, limit=self._connections, keepalive_timeout=75
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=_CONNECT_TIMEOUT),
                raise_for_status=False,
            )
        return self._session

    def serves(self, endpoint: str) -> bool:
        """Whether ``endpoint`` (a MasterEndpoint value) is the master this client talks to."""
        return endpoint.strip().rstrip("/") == self.endpoint

    def replace_context(
        self, ssl_context: ssl.SSLContext, *, pins: list[str], own_thumbprint: str | None
    ) -> None:
        """Use new certificates or pins from the next request on; requests in flight finish first."""
        self._ssl_context = ssl_context
        self.pins = pins
        self.own_thumbprint = own_thumbprint
        if self._session is not None:
            self._retired.append(self._session)
            self._session = None

    def trust_also(self, pem: str, *, pins: list[str]) -> None:
        """Trust the master certificate ``pem`` too, from the next handshake on; ``pins`` is the new list.

        Unlike :meth:`replace_context`, the open connections stay: they were verified against a
        certificate that is still trusted, so a rotation's announcement costs the master no
        handshakes (it gets one per connection when it switches, which no client can avoid).
        """
        trust_also(self._ssl_context, pem)
        self.pins = pins

    async def close(self) -> None:
        for session in [*self._retired, self._session]:
            if session is not None and not session.closed:
                await session.close()
        self._retired.clear()
        self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
        raw: bool = False,
    ) -> Any:
        """Send one request; return parsed JSON (or bytes with ``raw``), raise packfleet errors."""
        await self._drop_retired()
        session = self._get_session()
        self._in_flight[id(session)] = self._in_flight.get(id(session), 0) + 1
        try:
            return await self._send(session, method, path, json_body, data, params, timeout, raw)
        finally:
            left = self._in_flight.pop(id(session)) - 1
            if left:
                self._in_flight[id(session)] = left
            elif session in self._retired:
                self._retired.remove(session)
                await session.close()

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        json_body: Any,
        data: bytes | None,
        params: Mapping[str, str] | None,
        timeout: float | None,
        raw: bool,
    ) -> Any:
        headers = {"Accept": f"application/json, {routes.PROBLEM_CONTENT_TYPE}"}
        body: bytes | None = data
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        elif data is not None:
            headers["Content-Type"] = "application/octet-stream"
        try:
            async with session.request(
                method,
                self.endpoint + path,
                # aiohttp warns (ResourceWarning) on raw bytes over 1 MiB; a stream sends the same bytes.
                data=io.BytesIO(body) if body is not None else None,
                params=params,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout or self._timeout, sock_connect=_CONNECT_TIMEOUT),
            ) as response:
                payload = await response.read()
                if response.status >= 400:
                    raise _problem(response.status, payload, method, path)
        except TimeoutError as exc:
            # First: on Python 3.11 TimeoutError is an OSError, and aiohttp's ServerTimeoutError is
            # both a TimeoutError and a ClientError, so the clause below would take a slow master
            # for a refused certificate (the probe in _translate sees only a closed connection).
            raise self._timed_out(exc, method, path, timeout or self._timeout) from exc
        except (aiohttp.ClientError, ssl.SSLError, OSError) as exc:
            raise await self._translate(exc) from exc
        if raw:
            return payload
        return parse_json(payload, f"the master at {self.host}:{self.port}", method, path)

    def _timed_out(self, exc: TimeoutError, method: str, path: str, limit: float) -> TransportError:
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return TransportError(
                f"the master at {self.host}:{self.port} did not accept a connection for {method} "
                f"{path} within {_CONNECT_TIMEOUT:g} s",
                fix="check that the master runs (packfleet master run) and that MasterEndpoint names it",
            )
        return TransportError(
            f"the master at {self.host}:{self.port} did not answer {method} {path} within {limit:g} s"
        )

    async def _drop_retired(self) -> None:
        """Close the retired sessions that carry no request; the others close when their last ends."""
        idle = [session for session in self._retired if not self._in_flight.get(id(session))]
        for session in idle:
            self._retired.remove(session)
            await session.close()

    async def _translate(self, exc: BaseException) -> TransportError:
        cause = _ssl_cause(exc)
        if isinstance(cause, _VANISHED):
            # The connection ended inside TLS (a master killed mid-handshake, a reset): no certificate
            # was judged, so it is a transport failure (retried, failed over), unless the probe below
            # finds that the master refuses this node's certificate.
            cause = None
        if cause is None and self.own_thumbprint and isinstance(exc, aiohttp.ClientConnectionError):
            accepted = await asyncio.to_thread(
                master_accepts_client_certificate, self.host, self.port, self._ssl_context
            )
            if accepted is False:
                return TlsError(
                    f"the master at {self.host}:{self.port} refused this {self.role}'s certificate "
                    f"{self.own_thumbprint} during the TLS handshake: it is not in the master's Root "
                    "store, or it has expired",
                    fix=untrusted_client(self.role, self.own_thumbprint).fix,
                )
        if cause is None:
            if isinstance(exc, aiohttp.ServerDisconnectedError):
                return TransportError(f"the master at {self.host}:{self.port} closed the connection")
            return TransportError(
                f"cannot reach the master at {self.host}:{self.port}: {exc}",
                fix="check that the master runs (packfleet master run) and that MasterEndpoint names it",
            )
        peer = None
        if getattr(cause, "verify_code", None) is not None:
            try:
                peer = await asyncio.to_thread(fetch_server_certificate, self.host, self.port)
            except (OSError, TlsError, ValueError):
                peer = None
        return explain_client_failure(
            cause,
            role=self.role,
            host=self.host,
            port=self.port,
            pins=self.pins,
            own_thumbprint=self.own_thumbprint,
            peer=peer,
        )


def parse_json(payload: bytes, peer: str, method: str, path: str) -> Any:
    """The JSON body of a successful answer; a body that is not JSON is a :class:`ProtocolError`.

    ``json.loads`` raises ValueError (or UnicodeDecodeError, a ValueError too), which no caller's
    ``except TransportError`` would catch: a proxy's HTML page must not end a worker's loop.
    """
    if not payload:
        return None
    try:
        return json.loads(payload)
    except ValueError as exc:
        raise ProtocolError(
            f"{peer} answered {method} {path} with {len(payload)} bytes that are not JSON ({exc})",
            fix="check that the endpoint is a packfleet master's HTTPS port (not a proxy) and that "
            "both ends run the same packfleet version",
        ) from exc


def _problem(status: int, payload: bytes, method: str, path: str) -> ApiError:
    """Turn an RFC 9457 problem document (or any error body) into :class:`ApiError`."""
    try:
        doc = json.loads(payload) if payload else {}
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    detail = doc.get("detail") or doc.get("title") or payload[:200].decode(errors="replace")
    return ApiError(
        detail or f"the master answered {method} {path} with HTTP {status}",
        status=status,
        problem_type=str(doc.get("type", "about:blank")),
        fix=doc.get("fix"),
        method=method,
        path=path,
        thumbprint=_text_or_none(doc.get("thumbprint")),
        worker=_text_or_none(doc.get("worker")),
    )


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
