"""Small packages for trying the runner: one that fails, one that sleeps, one that does nothing."""

from __future__ import annotations

import math
import time
from typing import Any


def fail(ctx: Any) -> None:
    ctx.log.info("about to fail")
    raise RuntimeError(f"fail: {ctx.parameters['reason']}")


def sleep(ctx: Any) -> None:
    # Exactly ceil(seconds) lines, one a second, however late the machine wakes us: a test can then
    # tell that every line arrived, not just "some".
    seconds = ctx.parameters["seconds"]
    start = time.monotonic()
    for tick in range(1, math.ceil(seconds) + 1):
        time.sleep(max(0.0, min(tick, seconds) - (time.monotonic() - start)))
        print(f"slept {tick} s of {seconds:g}", flush=True)


def noop(ctx: Any) -> None:
    return None
