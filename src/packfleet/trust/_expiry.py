"""A certificate's dates as findings: the one expiry rule (:mod:`packfleet.expiry`) in words."""

from __future__ import annotations

from datetime import datetime

from packfleet.errors import CertificateExpired, PkiError
from packfleet.expiry import days_left, describe_expiry, expiry_warning
from packfleet.pki import CertInfo
from packfleet.trust._finding import Finding, error, ok, warning
from packfleet.trust._fixes import SYNC_CLOCKS

#: Why an expired certificate matters, whichever side holds it.
EXPIRED_WHY = "TLS refuses an expired certificate even when it is pinned"


def date_findings(
    check: str,
    label: str,
    info: CertInfo,
    now: datetime,
    *,
    expired_fix: str,
    warn_fix: str | None = None,
    expired_why: str = EXPIRED_WHY,
) -> list[Finding]:
    """ok with more than 30 days left, a warning within 30 (and 7), an error once expired or not yet valid.

    ``label`` names the certificate ("the worker certificate"); ``warn_fix`` is what to do ahead of
    the end (default: ``expired_fix``).
    """
    if now < info.not_before:
        return [
            error(
                check,
                f"{label} {info.thumbprint} is not valid before {info.not_before:%Y-%m-%d %H:%M} UTC",
                "TLS refuses it until then: check this machine's clock",
                SYNC_CLOCKS,
                raises=PkiError,
            )
        ]
    days = days_left(info.not_after, now)
    level = expiry_warning(days)
    text = f"{label} {info.thumbprint} {describe_expiry(days)} ({info.not_after:%Y-%m-%d %H:%M} UTC)"
    if level is None:
        return [ok(check, text)]
    if level == "expired":
        return [error(check, text, expired_why, expired_fix, raises=CertificateExpired)]
    return [warning(check, text, f"plan its replacement ({level} warning)", warn_fix or expired_fix)]
