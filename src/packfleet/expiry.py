"""When a certificate's remaining life deserves a warning: one rule for the CLI, master, worker and doctor.

SSIS Scale Out certificates are made once by setup and then forgotten until the day the master's
expires and every worker stops at once (the seed's "change the master certificate" exists because of
that day). packfleet warns twice before it: a month ahead, enough time to plan a rotation in a
change window, and a week ahead, when it is urgent. Every place that shows or logs expiry uses
:func:`expiry_warning`, so ``manager worker list``, ``manager certs``, ``/metrics`` consumers, the
logs and ``doctor`` never disagree about which certificates need attention::

    >>> expiry_warning(45.0), expiry_warning(20.0), expiry_warning(5.0), expiry_warning(-1.0)
    (None, '30d', '7d', 'expired')
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

#: Days left under which a certificate gets its first warning.
WARN_DAYS = 30
#: Days left under which the warning becomes urgent.
URGENT_DAYS = 7

ExpiryWarning = Literal["30d", "7d", "expired"]


def days_left(not_after: datetime, now: datetime | None = None) -> float:
    """Days from ``now`` (default: the current UTC time) until ``not_after``; negative once expired."""
    moment = now if now is not None else datetime.now(UTC)
    return (not_after - moment).total_seconds() / 86400


def expiry_warning(days: float | None) -> ExpiryWarning | None:
    """``None`` with more than 30 days left, ``"30d"``, ``"7d"`` within a week, ``"expired"`` after."""
    if days is None or days >= WARN_DAYS:
        return None
    if days <= 0:
        return "expired"
    if days < URGENT_DAYS:
        return "7d"
    return "30d"


def describe_expiry(days: float) -> str:
    """``"expires in 5 days"`` / ``"expired 2 days ago"``, for log lines and findings."""
    if days <= 0:
        ago = int(-days)
        return "expired today" if ago == 0 else f"expired {ago} day{'s' if ago != 1 else ''} ago"
    whole = int(days)
    if whole == 0:
        return "expires within a day"
    return f"expires in {whole} day{'s' if whole != 1 else ''}"


__all__ = ["URGENT_DAYS", "WARN_DAYS", "ExpiryWarning", "days_left", "describe_expiry", "expiry_warning"]
