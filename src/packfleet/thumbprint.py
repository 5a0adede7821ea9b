"""Thumbprints as people type them.

A thumbprint is the SHA-1 of a certificate's DER encoding in uppercase hex, as Windows and SSIS show
it. People paste it from Windows' certificate dialog (which prefixes an invisible U+200E LEFT-TO-RIGHT
MARK), from ``openssl x509 -fingerprint -sha1`` (colons) or type it in lowercase with spaces. All of
those name the same certificate:

>>> normalize_thumbprint("\u200ea9 4b:0c 12 ef" + "00" * 15)
'A94B0C12EF000000000000000000000000000000'
"""

from __future__ import annotations

import re

from packfleet.errors import PkiError

# Characters people's tools put between or around hex digits; none of them carries meaning.
_SEPARATORS = re.compile(r"[\s:\u200e\u200f\ufeff-]+")
_HEX40 = re.compile(r"[0-9A-F]{40}")


def _clean(text: str) -> str:
    cleaned = _SEPARATORS.sub("", text).upper()
    return cleaned.removeprefix("SHA1FINGERPRINT=")  # pasted straight from `openssl x509 -fingerprint`


def thumbprint_problem(text: str) -> str | None:
    """Say what keeps ``text`` from being a thumbprint ("it contains 'G', ..."), or None if it is one."""
    cleaned = _clean(text)
    if _HEX40.fullmatch(cleaned):
        return None
    bad = sorted({c for c in cleaned if c not in "0123456789ABCDEF"})
    if bad:
        return f"it contains {', '.join(repr(c) for c in bad)}, which are not hex digits"
    return f"it has {len(cleaned)} hex digits; a SHA-1 thumbprint has 40"


def normalize_thumbprint(text: str, *, what: str = "thumbprint") -> str:
    """Return ``text`` as 40 uppercase hex digits, or raise :class:`PkiError` saying what is wrong."""
    problem = thumbprint_problem(text)
    if problem is None:
        return _clean(text)
    raise PkiError(
        f"{text!r} is not a valid {what}: {problem}",
        fix="copy the thumbprint from `packfleet cert list` (spaces, colons and lowercase are fine)",
    )


def one_off(typed: str, known: str) -> bool:
    """Whether ``typed`` is ``known`` with one character changed, missing or added (case and
    separators aside): the typo a person makes copying 40 hex digits by hand."""
    a, b = _clean(typed), _clean(known)
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def is_thumbprint(text: str) -> bool:
    """Tell whether ``text`` names a thumbprint (in any of the accepted spellings)."""
    try:
        normalize_thumbprint(text)
    except PkiError:
        return False
    return True


__all__ = ["is_thumbprint", "normalize_thumbprint", "one_off", "thumbprint_problem"]
