"""What the scale scenarios wait on: a control file from the bench, and the fleet online."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from packfleet.bench._cluster import BenchCluster
from packfleet.catalog import Catalog


async def wait_for_file(path: Path, deadline: float) -> bool:
    """Poll for ``path`` (how the bench tells its load processes to go on) until ``deadline`` (time())."""
    while time.time() < deadline:
        if path.exists():
            return True
        await asyncio.sleep(0.05)
    return False


def release(go: Path, at: float) -> None:
    """Tell the load processes waiting on ``go`` (:func:`wait_for_file`) to start at ``at`` (time()).

    Written aside and renamed, so it appears whole: no process ever reads half a time.
    """
    partial = go.with_name(go.name + ".part")
    partial.write_text(repr(at))
    partial.rename(go)


def release_if_waiting(go: Path) -> None:
    """On the way out: release processes still waiting on ``go`` at once, so they end."""
    if not go.exists():
        release(go, time.time())


def wait_online(bench: BenchCluster, count: int, since: float, timeout: float) -> None:
    """Wait until ``count`` workers heartbeated at or after ``since`` (POSIX seconds, master's clock)."""
    from datetime import UTC, datetime

    from packfleet.errors import ClusterError

    assert bench.url is not None  # noqa: S101 - set by BenchCluster
    moment = datetime.fromtimestamp(since, UTC)
    catalog = Catalog.open(bench.url, upgrade=False)
    try:
        deadline = time.monotonic() + timeout
        while True:
            seen = [w for w in catalog.list_workers() if w.last_online_time and w.last_online_time >= moment]
            if len(seen) >= count:
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"{len(seen)} of {count} simulated workers heartbeated in {timeout:.0f} s")
            time.sleep(0.5)
    finally:
        catalog.close()
