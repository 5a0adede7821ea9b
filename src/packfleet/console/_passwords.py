"""Console passwords: argon2id hashes (RFC 9106), checked off the event loop by the caller."""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from packfleet.errors import UsageError

#: argon2-cffi's defaults are RFC 9106's "second recommended option": argon2id, t=3, 64 MiB, p=4.
_HASHER = PasswordHasher()


@functools.cache
def _dummy() -> str:
    """Checked when a name is unknown, so a wrong name costs as long as a wrong password (no
    enumeration). Made at the first use, not at import: a hash costs a noticeable fraction of a
    second, which every process importing the console (each ``packfleet`` command) paid."""
    return _HASHER.hash("packfleet: no such user")


#: Shorter passwords are refused; longer ones are cut by nothing (argon2 takes any length).
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024


def check_password_policy(password: str) -> None:
    """Refuse a password too short to resist guessing, or absurdly long."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UsageError(
            f"the password has {len(password)} characters; a console password needs at least "
            f"{MIN_PASSWORD_LENGTH}",
            fix="pipe a longer one: printf '%s' \"$PASSWORD\" | packfleet manager user add NAME "
            "--role viewer --password-stdin",
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UsageError(f"the password has more than {MAX_PASSWORD_LENGTH} characters")


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (policy checked first)."""
    check_password_policy(password)
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; with no hash, spend the same time and say no."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        if password_hash is None:
            _HASHER.verify(_dummy(), password)
            return False
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
