"""A TLS connection to a master known only by the SHA-256 of its certificate, checked before any byte.

``worker join`` has no Root store to trust the master with yet: what it has is the pin its join
token carries. The handshake is made with :func:`~packfleet.transport.probe_context` (which accepts
any certificate, so the handshake itself proves nothing), the certificate the master presented is
hashed and compared with the pin, and only then is the HTTP request written — on that same
connection, so the peer that was checked is the peer that is spoken to. A connection lost later is
never silently reopened: a reopened connection would carry no check.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import socket
import ssl
from typing import Any

from packfleet.errors import PinMismatch, TlsError, TransportError
from packfleet.pki import is_ip_address
from packfleet.protocol import routes
from packfleet.transport._client import _problem, parse_endpoint, parse_json
from packfleet.transport._policy import probe_context

_JOIN_FIX = "ask the master's administrator for a new one: packfleet manager token create"


def _fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest().upper()


class _CheckedHTTPConnection(http.client.HTTPConnection):
    """http.client over a socket opened and checked elsewhere; it refuses to open one of its own."""

    def connect(self) -> None:
        raise TransportError(
            f"the connection to {self.host}:{self.port} was closed; it is not reopened without the "
            "certificate check",
            fix="run the command again",
        )


class PinnedConnection:
    """One HTTPS connection whose peer certificate has the SHA-256 ``pin``.

    >>> with PinnedConnection("https://10.0.0.5:8391", pin) as conn:  # doctest: +SKIP
    ...     status, body = conn.request_json("GET", "/api/v1/join")
    """

    def __init__(self, endpoint: str, pin: str, *, timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self.host, self.port = parse_endpoint(
            endpoint,
            key="the join token's endpoint",
            fix="make a token with the master's URL: packfleet manager token create --endpoint https://HOST:PORT",
        )
        self.pin = pin.upper()
        self.timeout = timeout
        #: The DER of the certificate the master presented (set once the pin matched).
        self.peer_der = b""
        self._http: _CheckedHTTPConnection | None = None

    def __enter__(self) -> PinnedConnection:
        self.open()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def open(self) -> bytes:
        """Connect, hand-shake and check the pin; return the master certificate's DER.

        A mismatch raises :class:`~packfleet.errors.PinMismatch` naming both fingerprints, and the
        connection is closed having carried nothing but the handshake.
        """
        try:
            raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise TransportError(
                f"cannot reach the master at {self.host}:{self.port} named by the join token: "
                f"{exc.strerror or exc}",
                fix="check that the master runs and that this machine can reach it; if its address "
                "changed, make a token with --endpoint https://HOST:PORT",
            ) from exc
        # Python sends SNI only for names, never for IP literals (RFC 6066 §3), as the master expects.
        hostname = None if is_ip_address(self.host) else self.host
        try:
            tls = probe_context().wrap_socket(raw, server_hostname=hostname)
        except (ssl.SSLError, OSError) as exc:
            raw.close()
            why = getattr(exc, "reason", None) or exc
            raise TlsError(
                f"the TLS handshake with {self.host}:{self.port} failed: {why}",
                fix="check that the join token's endpoint is the master's HTTPS port",
            ) from exc
        der = tls.getpeercert(binary_form=True) or b""
        presented = _fingerprint(der)
        if not hmac.compare_digest(presented, self.pin):
            tls.close()
            raise PinMismatch(
                f"the server at {self.host}:{self.port} presented a certificate with SHA-256 "
                f"{presented}, but the join token pins {self.pin}; nothing was sent to it. Either the "
                "token was made for another master (or before its certificate changed), or something "
                "between this machine and the master is impersonating it",
                fix=_JOIN_FIX + " (on the master whose certificate it should pin)",
            )
        self.peer_der = der
        conn = _CheckedHTTPConnection(self.host, self.port, timeout=self.timeout)
        conn.sock = tls  # http.client uses a socket already set and only calls connect() without one
        self._http = conn
        return der

    def request_json(self, method: str, path: str, body: Any = None) -> Any:
        """Send one JSON request on the checked connection; a problem document raises ApiError."""
        if self._http is None:
            raise RuntimeError("open() the connection first")
        headers = {"Accept": f"application/json, {routes.PROBLEM_CONTENT_TYPE}"}
        payload = None
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        try:
            self._http.request(method, path, body=payload, headers=headers)
            response = self._http.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(
                f"the master at {self.host}:{self.port} did not answer {method} {path}: {exc}",
                fix="run the command again; a join that reached the master is answered the same twice",
            ) from exc
        if response.status >= 400:
            raise _problem(response.status, data, method, path)
        return parse_json(data, f"the master at {self.host}:{self.port}", method, path)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
