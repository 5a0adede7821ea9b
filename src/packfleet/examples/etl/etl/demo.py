"""Small packages for trying the runner: one that fails, one that sleeps, one that does nothing."""

from __future__ import annotations

import time
from typing import Any


def fail(ctx: Any) -> None:
    ctx.log.info("about to fail")
    raise RuntimeError(f"fail: {ctx.parameters['reason']}")


def sleep(ctx: Any) -> None:
    seconds = ctx.parameters["seconds"]
    deadline = time.monotonic() + seconds
    tick = 0
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(1.0, left))
        tick += 1
        print(f"slept {tick} s of {seconds:g}", flush=True)


def noop(ctx: Any) -> None:
    return None
