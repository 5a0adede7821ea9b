"""The master's secrets key file and the sealed form of sensitive parameter values.

A sensitive value is stored in the catalog as one string, ``pfsealed:1:<key id>:<base64url>``, where the
base64 holds a 96-bit nonce and the AES-256-GCM ciphertext of the value's JSON. The key id names which
key of the key file sealed it, so ``packfleet master rotate-secrets-key`` can find and re-seal every
value and then retire the old key. The parameter's name is the associated data: a sealed value copied
into another parameter (or another row under another name) does not open.

The key file (``<home>/secrets.key``, mode 0600) is JSON::

    {"current": "3f0c9a1d2b7e4c55", "keys": {"3f0c9a1d2b7e4c55": "<base64 of 32 random bytes>"}}

It is the only thing that opens the sealed values: a backup of the catalog without it reveals no
sensitive value, and a lost key file loses them (executions already run are unaffected).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from packfleet._files import atomic_replace
from packfleet.errors import SecretsError

SECRETS_KEY_FILE = "secrets.key"
SEALED_PREFIX = "pfsealed:1:"
_NONCE_BYTES = 12  # AES-GCM's 96-bit nonce (NIST SP 800-38D); random, so at most ~2^32 seals per key
_KEY_BYTES = 32
_AAD = b"packfleet parameter\x00"
_FIX_MISSING = (
    "copy secrets.key (mode 0600) from the master that sealed the values, or from a backup of its home; "
    "without it those values cannot be read"
)


def secrets_key_path(home: Path) -> Path:
    """Where a master home keeps its secrets key file."""
    return Path(home) / SECRETS_KEY_FILE


def is_sealed(value: object) -> bool:
    """Whether ``value`` is a sealed parameter value (as stored in the catalog)."""
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)


def sealed_key_id(value: str) -> str:
    """The id of the key that sealed ``value``.

    >>> sealed_key_id("pfsealed:1:3f0c9a1d2b7e4c55:AAAA")
    '3f0c9a1d2b7e4c55'
    """
    return value[len(SEALED_PREFIX) :].split(":", 1)[0]


def _key_id(key: bytes) -> str:
    # Derived from the key, so two copies of one key file agree on its id without coordination.
    return hashlib.sha256(b"packfleet secrets key id\x00" + key).hexdigest()[:16]


@dataclass(frozen=True)
class SecretKeyring:
    """The keys of one key file: ``current`` seals, every key opens what it sealed.

    >>> ring = SecretKeyring.generate(Path("secrets.key"))
    >>> sealed = ring.seal("password", "hunter2")
    >>> sealed.startswith("pfsealed:1:" + ring.current), ring.open("password", sealed)
    (True, 'hunter2')
    """

    path: Path
    current: str
    keys: Mapping[str, bytes] = field(repr=False)

    @classmethod
    def generate(cls, path: Path) -> SecretKeyring:
        """A new key ring with one fresh random key (not written: see :meth:`save`)."""
        key = AESGCM.generate_key(bit_length=_KEY_BYTES * 8)
        return cls(Path(path), _key_id(key), {_key_id(key): key})

    @classmethod
    def load(cls, path: Path) -> SecretKeyring:
        """Read and check the key file at ``path``; a missing, open or malformed file is a SecretsError."""
        path = Path(path)
        try:
            info = os.stat(path)
            data = path.read_bytes()
        except FileNotFoundError:
            raise SecretsError(f"the secrets key file {path} does not exist", fix=_FIX_MISSING) from None
        except OSError as exc:
            raise SecretsError(
                f"cannot read the secrets key file {path}: {exc.strerror or exc}",
                fix=f"run the master as the account that owns {path}, or chown it to that account",
            ) from exc
        if stat.S_IMODE(info.st_mode) & 0o077:
            # As ssh does with a private key: a key others could read is a key others may have copied.
            raise SecretsError(
                f"the secrets key file {path} is readable by other accounts "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); it must be private to the master's account",
                fix=f"chmod 600 {path}",
            )
        try:
            doc = json.loads(data)
            keys = {str(kid): base64.b64decode(text, validate=True) for kid, text in doc["keys"].items()}
            current = str(doc["current"])
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            raise SecretsError(
                f"{path} is not a secrets key file (JSON with a current key id and its keys)",
                fix=f"restore {path} from a backup of the master's home",
            ) from exc
        for kid, key in keys.items():
            if len(key) != _KEY_BYTES or _key_id(key) != kid:
                raise SecretsError(
                    f"key {kid} in the secrets key file {path} is damaged",
                    fix=f"restore {path} from a backup of the master's home",
                )
        if current not in keys:
            raise SecretsError(
                f"the secrets key file {path} names current key {current}, which it does not hold",
                fix=f"restore {path} from a backup of the master's home",
            )
        return cls(path, current, keys)

    def save(self) -> None:
        """Write the key file, 0600, atomically (a crash leaves the old file or the new one)."""
        doc = {
            "current": self.current,
            "keys": {kid: base64.b64encode(key).decode("ascii") for kid, key in self.keys.items()},
        }
        try:
            atomic_replace(self.path, (json.dumps(doc, indent=2) + "\n").encode(), 0o600)
        except OSError as exc:
            raise SecretsError(
                f"cannot write the secrets key file {self.path}: {exc.strerror or exc}",
                fix=f"check that {self.path.parent} exists and is writable by the master's account",
            ) from exc

    def with_new_key(self) -> SecretKeyring:
        """This ring plus a fresh key that becomes current (old keys still open old values)."""
        fresh = SecretKeyring.generate(self.path)
        return SecretKeyring(self.path, fresh.current, {**self.keys, **fresh.keys})

    def only_current(self) -> SecretKeyring:
        """This ring without its old keys (once nothing sealed with them is left)."""
        return SecretKeyring(self.path, self.current, {self.current: self.keys[self.current]})

    def seal(self, name: str, value: Any) -> str:
        """``value`` (anything JSON can hold) sealed with the current key, bound to parameter ``name``."""
        nonce = os.urandom(_NONCE_BYTES)
        plain = json.dumps(value, separators=(",", ":")).encode()
        box = AESGCM(self.keys[self.current]).encrypt(nonce, plain, _AAD + name.encode())
        return f"{SEALED_PREFIX}{self.current}:{base64.urlsafe_b64encode(nonce + box).decode('ascii')}"

    def open(self, name: str, sealed: str) -> Any:
        """The value ``sealed`` holds; SecretsError when no key here opens it for parameter ``name``."""
        kid = sealed_key_id(sealed)
        key = self.keys.get(kid)
        if key is None:
            raise SecretsError(
                f"parameter {name!r} was sealed with key {kid}, which the secrets key file {self.path} "
                f"does not hold (it holds {', '.join(sorted(self.keys))})",
                fix=_FIX_MISSING,
            )
        try:
            raw = base64.urlsafe_b64decode(sealed[len(SEALED_PREFIX) + len(kid) + 1 :])
            plain = AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _AAD + name.encode())
            return json.loads(plain)
        except (InvalidTag, ValueError, binascii.Error) as exc:
            raise SecretsError(
                f"the sealed value of parameter {name!r} does not open with key {kid}: it was altered "
                "or copied from another parameter",
                fix="run the execution again with the value: packfleet run ... --param NAME=VALUE",
            ) from exc

    def reseal(self, name: str, sealed: str) -> str:
        """``sealed`` sealed again with the current key (unchanged when it already is)."""
        if sealed_key_id(sealed) == self.current:
            return sealed
        return self.seal(name, self.open(name, sealed))


class LiveKeyring:
    """The key file of a running master, read again whenever it changes on disk.

    ``rotate-secrets-key`` rewrites the file while the master runs; the master seals new values with
    the new key from its next request on, and opens values re-sealed by the rotation, without a restart.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._seen: tuple[int, int, int] | None = None
        self._ring: SecretKeyring | None = None

    def get(self) -> SecretKeyring:
        """The current contents of the key file (one ``stat`` when unchanged)."""
        try:
            info = os.stat(self.path)
            seen = (info.st_ino, info.st_mtime_ns, info.st_size)
        except OSError:
            seen = None
        if self._ring is None or seen != self._seen:
            self._ring = SecretKeyring.load(self.path)
            self._seen = seen
        return self._ring


def sensitive_names(manifest: Mapping[str, Any], package: str) -> set[str]:
    """Names of the sensitive parameters ``package`` sees, from a project manifest as the catalog keeps it.

    A package's own parameter overrides a project parameter of the same name, as when resolving values.
    """
    specs: dict[str, bool] = {}
    for spec in manifest.get("parameters", ()):
        specs[str(spec["name"])] = bool(spec.get("sensitive"))
    for pkg in manifest.get("packages", ()):
        if pkg.get("name") == package:
            for spec in pkg.get("parameters", ()):
                specs[str(spec["name"])] = bool(spec.get("sensitive"))
    return {name for name, sensitive in specs.items() if sensitive}


def seal_values(ring: SecretKeyring, values: Mapping[str, Any], sensitive: set[str]) -> dict[str, Any]:
    """``values`` with those named in ``sensitive`` sealed (each time: a value that merely looks
    sealed is sealed again, and opens to itself)."""
    return {name: ring.seal(name, value) if name in sensitive else value for name, value in values.items()}


def open_values(ring: SecretKeyring, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with every sealed one opened."""
    return {name: ring.open(name, value) if is_sealed(value) else value for name, value in values.items()}
