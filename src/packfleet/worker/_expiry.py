"""The worker's own expiry warnings: its certificate and its pinned master's, at start and daily.

A worker is often the first to suffer an expired master certificate (its handshakes fail) and the
last place anyone looks. Logging both certificates' remaining life where its service logs go
(journald) puts the warning in front of whoever watches the worker machine, a month ahead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from packfleet.errors import PackfleetError
from packfleet.expiry import days_left, describe_expiry, expiry_warning
from packfleet.pki import CertInfo, CertStore
from packfleet.worker._identity import WorkerIdentity

log = logging.getLogger("packfleet.worker")

#: Seconds between two expiry checks.
EXPIRY_CHECK_INTERVAL = 24 * 3600.0


def expiring(identity: WorkerIdentity, now: datetime) -> list[tuple[str, CertInfo, float]]:
    """(what, certificate, days left) for the worker's and pinned master certificates near expiry."""
    found = [("worker certificate", identity.certificate)]
    root = CertStore(identity.home, "Root")
    for pin in identity.pins:
        try:
            found.append(("pinned master certificate", root.info(pin)))
        except PackfleetError:
            continue  # load_identity already refused a missing pin; a rotation may have removed one
    result = []
    for what, info in found:
        days = days_left(info.not_after, now)
        if expiry_warning(days) is not None:
            result.append((what, info, days))
    return result


def log_expiry(identity: WorkerIdentity, now: datetime) -> int:
    """Log a warning per certificate within 30 days of expiry; return how many."""
    found = expiring(identity, now)
    for what, info, days in found:
        log.warning(
            "the %s %s %s (%s warning, %s UTC)",
            what,
            info.thumbprint,
            describe_expiry(days),
            expiry_warning(days),
            f"{info.not_after:%Y-%m-%d %H:%M}",
        )
    return len(found)


async def watch_expiry(
    identity: Callable[[], WorkerIdentity],
    pause: Callable[[float], Awaitable[None]],
    stopping: asyncio.Event,
    clock: Callable[[], float],
) -> None:
    """Check at once, then every :data:`EXPIRY_CHECK_INTERVAL` of ``clock``, until ``stopping`` is set.

    The due time is kept on ``clock`` rather than trusted to one long ``pause``: a test's sleep may
    return early, and a suspended machine's monotonic sleep does not count the hours it slept.
    """
    while not stopping.is_set():
        log_expiry(identity(), datetime.fromtimestamp(clock(), UTC))
        due = clock() + EXPIRY_CHECK_INTERVAL
        while not stopping.is_set() and clock() < due:
            await pause(min(due - clock(), 3600.0))
