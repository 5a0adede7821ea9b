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
