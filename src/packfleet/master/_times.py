"""Times a peer sends: one parser and one proof window for joins, renewals and event messages."""

from __future__ import annotations

from datetime import datetime, timedelta

from packfleet.errors import ProtocolError

#: How far the time a proof of possession was signed at may be from the master's clock. A joining
#: worker signs the time the master gave it a moment before; a renewing worker signs its own clock,
#: whose skew `packfleet doctor` reports. Five minutes covers both, and a captured proof is
#: worthless soon after.
PROOF_WINDOW = timedelta(minutes=5)


def parse_aware_time(text: str, where: str) -> datetime:
    """``text`` as an ISO 8601 time with a UTC offset; anything else is a :class:`ProtocolError` (400)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ProtocolError(f"{where}: {text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise ProtocolError(f"{where}: {text!r} has no UTC offset")
    return moment


#: A worker clock further than this from the master's is reported (heartbeat reply, doctor, worker
#: list): leases and event times are compared across machines, and a few seconds is what NTP keeps.
CLOCK_SKEW_WARNING_SECONDS = 5.0


def clock_warning(name: str, skew_seconds: float | None) -> str:
    """What to tell about a worker clock ``skew_seconds`` off the master's ('' when within bounds)."""
    if skew_seconds is None or abs(skew_seconds) <= CLOCK_SKEW_WARNING_SECONDS:
        return ""
    ahead = "ahead of" if skew_seconds > 0 else "behind"
    return (
        f"the clock of worker {name} is {abs(skew_seconds):.1f} s {ahead} the master's (more than "
        f"{CLOCK_SKEW_WARNING_SECONDS:g} s): event times in its logs are off by as much; synchronize it "
        "(timedatectl set-ntp true) and check with: packfleet doctor"
    )
