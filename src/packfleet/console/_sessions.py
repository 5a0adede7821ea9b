"""Console sessions in encrypted cookies, CSRF tokens, and the sign-in rate limit.

The cookie is a Fernet token (AES-128-CBC + HMAC-SHA256) of a small JSON document, so the browser can
neither read nor forge it; its lifetime is checked from the token's own timestamp. The name carries
the ``__Host-`` prefix, so a browser accepts it only when Secure, for path ``/`` and with no Domain
(no other host or path can plant one: RFC 6265bis 4.1.3.2).
"""

from __future__ import annotations

import collections
import contextlib
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.fernet import Fernet, InvalidToken

from packfleet._files import atomic_replace
from packfleet.errors import SettingsError

COOKIE = "__Host-packfleet-console"
#: A session lasts a working day at most; then the user signs in again.
SESSION_SECONDS = 8 * 3600
KEY_FILE = "console-session.key"


def load_session_key(home: Path) -> bytes:
    """The Fernet key of ``<home>/console-session.key`` (made on first use, mode 0600).

    Kept in the home so sessions survive a restart; delete the file to sign everyone out.
    """
    path = home / KEY_FILE
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        key = Fernet.generate_key()
        atomic_replace(path, key + b"\n", 0o600)
        return key
    except OSError as exc:
        raise SettingsError(
            f"cannot read the console session key {path}: {exc.strerror or exc}",
            fix=f"chown the master's service account {path}, or delete it to make a new one",
        ) from exc
    try:
        Fernet(key)
    except ValueError as exc:
        raise SettingsError(
            f"{path} is not a console session key (32 url-safe base64 bytes)",
            fix=f"rm {path}   (a new key is made at the next start; everyone signs in again)",
        ) from exc
    return key


@dataclass
class Session:
    """One browser's session: who signed in (None before sign-in) and its CSRF token."""

    sid: str
    csrf: str
    user: str | None = None
    issued: float = field(default_factory=time.time)

    @classmethod
    def fresh(cls, user: str | None = None) -> Session:
        return cls(sid=secrets.token_urlsafe(18), csrf=secrets.token_urlsafe(32), user=user)


class SessionStore:
    """Reads and writes sessions from and to the cookie; remembers signed-out sessions until expiry."""

    def __init__(self, key: bytes, *, max_age: int = SESSION_SECONDS) -> None:
        self._fernet = Fernet(key)
        self.max_age = max_age
        # A cookie is a bearer token until it expires: a signed-out one must stop working now.
        self._ended: dict[str, float] = {}

    def load(self, request: web.Request) -> Session | None:
        token = request.cookies.get(COOKIE)
        if not token:
            return None
        try:
            data: Any = json.loads(self._fernet.decrypt(token.encode("ascii"), ttl=self.max_age))
            session = Session(
                sid=str(data["sid"]),
                csrf=str(data["csrf"]),
                user=None if data.get("user") is None else str(data["user"]),
                issued=float(data["issued"]),
            )
        except (InvalidToken, ValueError, KeyError, TypeError, UnicodeError):
            return None
        if session.sid in self._ended:
            return None
        return session

    def save(self, response: web.StreamResponse, session: Session) -> None:
        data = {"sid": session.sid, "csrf": session.csrf, "user": session.user, "issued": session.issued}
        token = self._fernet.encrypt(json.dumps(data).encode()).decode("ascii")
        response.set_cookie(
            COOKIE, token, max_age=self.max_age, path="/", secure=True, httponly=True, samesite="Strict"
        )

    def end(self, response: web.StreamResponse, session: Session) -> None:
        now = time.time()
        self._ended = {sid: t for sid, t in self._ended.items() if t > now}
        self._ended[session.sid] = now + self.max_age
        response.del_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="Strict")


def csrf_ok(session: Session | None, sent: str | None) -> bool:
    """Whether ``sent`` is this session's CSRF token (constant-time comparison)."""
    if session is None or not sent:
        return False
    return secrets.compare_digest(session.csrf.encode(), sent.encode())


class SignInLimiter:
    """At most ``per_name`` failed sign-ins per user name and ``per_address`` per client address in a
    sliding ``window`` of seconds; past that, sign-in is refused without checking the password."""

    def __init__(self, *, per_name: int = 5, per_address: int = 20, window: float = 300.0) -> None:
        self.per_name = per_name
        self.per_address = per_address
        self.window = window
        self._failures: dict[str, collections.deque[float]] = {}

    def _recent(self, key: str, now: float) -> collections.deque[float]:
        seen = self._failures.setdefault(key, collections.deque())
        while seen and seen[0] <= now - self.window:
            seen.popleft()
        return seen

    def retry_after(self, name: str, address: str) -> float:
        """Seconds until a sign-in may be tried again (0: now)."""
        now = time.monotonic()
        waits = []
        for key, limit in ((f"name:{name}", self.per_name), (f"addr:{address}", self.per_address)):
            seen = self._recent(key, now)
            if len(seen) >= limit:
                waits.append(seen[0] + self.window - now)
        return max(waits, default=0.0)

    def failed(self, name: str, address: str) -> None:
        now = time.monotonic()
        for key in (f"name:{name}", f"addr:{address}"):
            self._recent(key, now).append(now)
        if len(self._failures) > 10_000:  # bound the memory a spray of names can take
            for key in [k for k, v in self._failures.items() if not v][:5000]:
                with contextlib.suppress(KeyError):
                    del self._failures[key]

    def succeeded(self, name: str) -> None:
        self._failures.pop(f"name:{name}", None)
