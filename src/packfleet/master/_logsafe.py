"""Log lines a peer cannot forge or flood.

Text a peer controls (an AgentId, a display name, a URL path, a reason quoting its input) goes into
a log line escaped, so a newline or a terminal escape cannot start a line of its own. Refusals are
rate-limited per peer address and kind: the first few of each window are logged, the rest counted,
and the next line logged says how many were left out.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def safe(text: object, limit: int = 200) -> str:
    """Peer-controlled text made fit for one log line: control characters escaped, length capped."""
    shown = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))
    return shown if len(shown) <= limit else shown[:limit] + f"...({len(shown) - limit} more)"


class RateLimitedLog:
    """At most ``burst`` lines per key and ``window`` seconds; the rest are counted, then reported."""

    #: Keys remembered at most; beyond it the oldest windows are forgotten (a scan of many addresses
    #: must not grow the master's memory without bound).
    MAX_KEYS = 4096

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 5,
        window: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._burst = burst
        #: Seconds per window (public: tests shorten it).
        self.window = window
        self._monotonic = monotonic
        # key -> (window start, lines logged in it, lines suppressed since the last logged one)
        self._keys: dict[str, tuple[float, int, int]] = {}

    def warning(self, key: str, message: str, *args: object) -> bool:
        """Log ``message % args`` unless ``key`` used up its window; return whether it was logged."""
        now = self._monotonic()
        start, logged, suppressed = self._keys.get(key, (now, 0, 0))
        if now - start >= self.window:
            start, logged = now, 0
        if logged >= self._burst:
            self._keys[key] = (start, logged, suppressed + 1)
            return False
        if suppressed:
            message += " (%d similar line(s) suppressed)"
            args = (*args, suppressed)
        self._keys.pop(key, None)
        self._keys[key] = (start, logged + 1, 0)
        while len(self._keys) > self.MAX_KEYS:
            self._keys.pop(next(iter(self._keys)))
        self._log.warning(message, *args)
        return True


class ChangeLog:
    """One line per key when its value changes, then again at most once per ``window`` seconds while
    it stays (saying how many were left out); :meth:`forget` a key whose news is no longer worth a line."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        window: float,
        level: int = logging.INFO,
        max_keys: int = 65536,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._level = level
        self._max_keys = max_keys
        #: Seconds between two lines of an unchanged value (public: tests shorten it).
        self.window = window
        self._monotonic = monotonic
        # key -> (value last logged, when, lines left out since)
        self._keys: dict[str, tuple[str, float, int]] = {}

    def log(self, key: str, value: str, message: str, *args: object) -> bool:
        """Log ``message % args`` unless ``key`` logged ``value`` within the window; whether it did."""
        now = self._monotonic()
        last = self._keys.get(key)
        if last is not None and last[0] == value and now - last[1] < self.window:
            self._keys[key] = (value, last[1], last[2] + 1)
            return False
        if last is not None and last[0] == value and last[2]:
            message += " (%d similar line(s) suppressed)"
            args = (*args, last[2])
        self._keys.pop(key, None)
        self._keys[key] = (value, now, 0)
        while len(self._keys) > self._max_keys:
            self._keys.pop(next(iter(self._keys)))
        self._log.log(self._level, message, *args)
        return True

    def forget(self, key: str) -> None:
        self._keys.pop(key, None)
