"""Durations as .NET ``TimeSpan`` text, the form SSIS's WorkerSettings.config holds them in.

SSIS writes ``AgentHeartbeatInterval`` as ``00:01:00`` and ``ExecutionLogRetryTimeout`` as
``7.00:00:00``: the invariant "c" format ``[-][d.]hh:mm:ss[.fffffff]``. Parsing follows
``TimeSpan.Parse`` for that format (hours 0-23, minutes and seconds 0-59, up to seven fraction
digits of 100 ns ticks) and also takes ``hh:mm``, which .NET reads as hours and minutes.
"""

from __future__ import annotations

import re
from datetime import timedelta

from packfleet.errors import SettingsError

TIMESPAN_FORM = "a .NET TimeSpan like 00:01:00 or 7.00:00:00"

_TIMESPAN = re.compile(
    r"""
    (?P<sign>-)?
    (?:(?P<days>\d{1,8})\.)?
    (?P<hours>\d{1,2}):(?P<minutes>\d{1,2})
    (?::(?P<seconds>\d{1,2})(?:\.(?P<fraction>\d{1,7}))?)?
    """,
    re.VERBOSE | re.ASCII,
)
_TICKS_PER_MICROSECOND = 10  # a .NET tick is 100 ns


def parse_timespan(text: str) -> timedelta:
    """Read .NET TimeSpan text.

    >>> parse_timespan("7.00:00:00")
    datetime.timedelta(days=7)
    >>> parse_timespan("00:00:00.5")
    datetime.timedelta(microseconds=500000)

    A seventh fraction digit (one 100 ns tick) is below ``timedelta``'s resolution and is rounded.
    """
    match = _TIMESPAN.fullmatch(text.strip())
    if match is None:
        raise SettingsError(f"{text!r} is not {TIMESPAN_FORM}")
    hours, minutes = int(match["hours"]), int(match["minutes"])
    seconds = int(match["seconds"] or 0)
    # TimeSpan.Parse throws OverflowException for these instead of carrying into the next unit.
    if hours > 23 or minutes > 59 or seconds > 59:
        raise SettingsError(
            f"{text!r} is not {TIMESPAN_FORM}: hours go to 23, minutes and seconds to 59 "
            "(write 1.00:00:00 for a day)"
        )
    ticks = int((match["fraction"] or "0").ljust(7, "0"))
    value = timedelta(
        days=int(match["days"] or 0),
        hours=hours,
        minutes=minutes,
        seconds=seconds,
        microseconds=(ticks + _TICKS_PER_MICROSECOND // 2) // _TICKS_PER_MICROSECOND,
    )
    return -value if match["sign"] else value


def format_timespan(value: timedelta) -> str:
    """Write ``value`` in the "c" format, the inverse of :func:`parse_timespan`.

    >>> format_timespan(timedelta(minutes=1)), format_timespan(timedelta(days=7, microseconds=5))
    ('00:01:00', '7.00:00:00.0000050')
    """
    sign = "-" if value < timedelta(0) else ""
    magnitude = -value if sign else value
    hours, rest = divmod(magnitude.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    if magnitude.days:
        text = f"{magnitude.days}.{text}"
    if magnitude.microseconds:
        text = f"{text}.{magnitude.microseconds * _TICKS_PER_MICROSECOND:07d}"
    return sign + text
