"""Join tokens: one copy-paste string that tells a new worker where the master is and how to know it.

A token is six dot-separated fields, every one of them ``[A-Za-z0-9_-]`` (base64url, RFC 4648 §5,
without padding), so it survives shells, chat clients, e-mail and double-click selection::

    pfjoin1.3f9c0a1b2d4e.<secret>.<pin>.<endpoint>.<check>

``pfjoin1``
    the format and its version; a later format gets a new prefix and old parsers say so plainly.
``token_id``
    12 lowercase hex digits: the public name of the token (``manager token list``/``revoke``).
``secret``
    32 random bytes. The master keeps only its SHA-256 (:func:`hash_secret`).
``pin``
    SHA-256 of the DER of the master certificate the binding serves. ``worker join`` compares the
    certificate the master presents against it before it sends a single byte (kubeadm's
    ``--discovery-token-ca-cert-hash``, here pinning the end-entity certificate as SSIS pins
    ``MasterHttpsCertThumbprint``).
``endpoint``
    the master's URL (MasterSettings.config ``MasterAddress``, SSIS setup's ``MASTER_ADDRESS``).
``check``
    the first 4 bytes of SHA-256 over everything before it, so a token cut short or mistyped is
    reported as malformed instead of failing later as a wrong secret or an unreachable host.

>>> token = JoinToken("https://127.0.0.1:8391", "AB" * 32, "3f9c0a1b2d4e", bytes(32))
>>> parse_join_token(token.encode()) == token
True
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

from packfleet.errors import JoinError

PREFIX = "pfjoin1"
SECRET_BYTES = 32
_TOKEN_ID = re.compile(r"[0-9a-f]{12}")
_FIELD = re.compile(r"[A-Za-z0-9_-]+")
_CHECK_BYTES = 4
_PROOF_CONTEXT = "packfleet-join-v1"
_CREATE_FIX = "ask the master's administrator for a new one: packfleet manager token create"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check(body: str) -> str:
    return _b64(hashlib.sha256(body.encode("ascii")).digest()[:_CHECK_BYTES])


@dataclass(frozen=True)
class JoinToken:
    """The parts of a join token: where the master is, its certificate pin, and the credential."""

    endpoint: str
    #: SHA-256 of the master certificate's DER, 64 uppercase hex digits (as ``cert show`` prints it).
    master_sha256: str
    token_id: str
    #: Kept out of ``repr``: a token in a traceback or a log line must not admit a worker.
    secret: bytes = field(repr=False)

    def encode(self) -> str:
        """The token as one copy-paste string."""
        body = ".".join(
            [
                PREFIX,
                self.token_id,
                _b64(self.secret),
                _b64(bytes.fromhex(self.master_sha256)),
                _b64(self.endpoint.encode("utf-8")),
            ]
        )
        return f"{body}.{_check(body)}"

    @property
    def secret_text(self) -> str:
        """The secret as it travels in the join request (base64url)."""
        return _b64(self.secret)


def new_join_token(endpoint: str, master_sha256: str) -> JoinToken:
    """A fresh token for ``endpoint``: random id and a 256-bit secret from :mod:`secrets`."""
    return JoinToken(endpoint, master_sha256.upper(), secrets.token_hex(6), secrets.token_bytes(SECRET_BYTES))


def _malformed(why: str) -> JoinError:
    return JoinError(f"this is not a packfleet join token: {why}", fix=_CREATE_FIX)


def parse_join_token(text: str) -> JoinToken:
    """Read a token typed or pasted by a person; whitespace and line breaks inside it are ignored.

    Anything else that is off (another prefix, a missing field, a failed check) raises
    :class:`~packfleet.errors.JoinError` saying what, with the command that makes a new token.
    """
    compact = "".join(text.split())
    parts = compact.split(".")
    if parts[0] != PREFIX:
        if parts[0].startswith("pfjoin"):
            raise _malformed(f"it is of format {parts[0]!r}; this packfleet reads {PREFIX!r} tokens")
        raise _malformed(f"it should start with {PREFIX}. (it starts with {compact[:10]!r})")
    if len(parts) != 6 or not all(_FIELD.fullmatch(p) for p in parts):
        raise _malformed(
            "it should have 6 dot-separated parts of letters, digits, - and _; was it cut short?"
        )
    body, check = ".".join(parts[:5]), parts[5]
    if not hmac.compare_digest(check, _check(body)):
        raise _malformed("its check digits do not match; it was changed or cut short while being copied")
    _, token_id, secret, pin, endpoint = parts[:5]
    if not _TOKEN_ID.fullmatch(token_id):
        raise _malformed(f"its id {token_id!r} is not 12 hex digits")
    try:
        secret_bytes, pin_bytes = _unb64(secret), _unb64(pin)
        endpoint_text = _unb64(endpoint).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _malformed("a field is not base64url") from None
    if len(secret_bytes) != SECRET_BYTES or len(pin_bytes) != hashlib.sha256().digest_size:
        raise _malformed("its secret or certificate pin has the wrong length")
    return JoinToken(endpoint_text, pin_bytes.hex().upper(), token_id, secret_bytes)


def hash_secret(secret: bytes) -> str:
    """What the catalog stores instead of the secret: ``sha256:<hex>``.

    A password hash (argon2, scrypt) slows down guessing of *low*-entropy secrets. This secret is
    256 random bits: no dictionary helps and 2^256 guesses are out of reach however fast the hash,
    so a single SHA-256 is as strong here and costs the master nothing per join.
    """
    return "sha256:" + hashlib.sha256(secret).hexdigest()


def secret_matches(secret_text: str, stored_hash: str) -> bool:
    """Whether the base64url ``secret_text`` hashes to ``stored_hash``, compared in constant time."""
    try:
        secret = _unb64(secret_text)
    except (binascii.Error, ValueError):
        return False
    # compare_digest takes as long for a near miss as for a far one: no timing oracle on the hash.
    return hmac.compare_digest(hash_secret(secret).encode(), stored_hash.encode())


def join_proof_message(token_id: str, issued_at: str, cert_sha256: str, agent_id: str) -> bytes:
    """What a joining worker signs with its private key to prove it holds the certificate's key.

    It binds the token, the master-issued time (so an old signature cannot be replayed later), the
    certificate being enrolled and the agent id it is enrolled for; a context string keeps the
    signature from meaning anything in any other protocol.
    """
    return "\n".join([_PROOF_CONTEXT, token_id, issued_at, cert_sha256.upper(), agent_id]).encode()
