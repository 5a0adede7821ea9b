"""``make soak``: a seeded random mix of every fault for SOAK_SECONDS (600), then the ledger.

    SOAK_SECONDS=120 SOAK_SEED=7 .venv/bin/python tests/faults/soak.py

As root the catalog is a throwaway PostgreSQL cluster of its own (so it can crash) and the nodes'
homes sit on a small tmpfs (so the disk can fill); otherwise SQLite in a temporary folder, without
those two faults. Exits 1 when the ledger shows a lost, duplicated, stuck or log-incomplete run.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faults.harness import (  # noqa: E402 - the path above makes the harness importable
    LEASE_SECONDS,
    FaultCluster,
    Ledger,
    ThrowawayPostgres,
    faketime_env,
    fill,
    partition,
    paused,
    small_tmpfs,
)

ROOT = os.geteuid() == 0


def _say(text: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {text}", flush=True)


@contextlib.contextmanager
def _environment(folder: Path) -> Iterator[tuple[Path, ThrowawayPostgres | None]]:
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(ThrowawayPostgres()) if ROOT else None
        homes = stack.enter_context(small_tmpfs(folder / "disk", size="256m")) if ROOT else folder
        yield homes, pg


def main() -> int:
    seconds = float(os.environ.get("SOAK_SECONDS", "600"))
    seed = int(os.environ.get("SOAK_SEED", "1"))
    rng = random.Random(seed)
    extra = (
        "PostgreSQL crash and full disk included" if ROOT else "not root: no PostgreSQL crash, no full disk"
    )
    _say(f"seed {seed}, {seconds:g} s, {extra}")
    with tempfile.TemporaryDirectory(prefix="packfleet-soak-") as tmp, _environment(Path(tmp)) as (homes, pg):
        with FaultCluster.running(homes / "cluster", catalog_url=pg.url if pg else None) as faults:
            ledger = Ledger(faults)
            faults_done = _run(faults, ledger, rng, seconds, homes, pg)
            _say("healing done; reading every execution back")
            totals = ledger.settle(timeout=180)
    print(json.dumps({"seed": seed, "faults": faults_done, "ledger": totals}, indent=2))
    for problem in ledger.problems:
        print("problem:", problem)
    bad = sum(totals.get(k, 0) for k in ("lost", "duplicate_success", "stuck", "log_lines_missing"))
    return 1 if bad else 0


def _run(
    faults: FaultCluster,
    ledger: Ledger,
    rng: random.Random,
    seconds: float,
    homes: Path,
    pg: ThrowawayPostgres | None,
) -> dict[str, int]:
    workers = sorted(faults.cluster.workers)

    def kill_worker() -> None:
        name = rng.choice(workers)
        faults.cluster.kill(faults.cluster.workers[name])
        ledger.submit(seconds=rng.choice([2, 4]))
        faults.start_worker(name)

    def kill_master() -> None:
        faults.cluster.kill(faults.cluster.master)
        time.sleep(rng.uniform(0, 2))
        faults.cluster.start_master(wait=60)

    def cut_off() -> None:
        with partition(faults.proxies[rng.choice(workers)]):
            ledger.submit(seconds=2)
            time.sleep(rng.uniform(1, 3 * LEASE_SECONDS))

    def pause() -> None:
        with paused(faults.pid(rng.choice(workers))):
            ledger.submit(seconds=2)
            time.sleep(rng.uniform(1, 3 * LEASE_SECONDS))

    def skew() -> None:
        name = rng.choice(workers)
        faults.cluster.stop(faults.cluster.workers[name], sig=signal.SIGTERM)
        faults.start_worker(name, faketime_env(rng.choice(["+20s", "-20s"])))
        ledger.submit(seconds=2)
        time.sleep(rng.uniform(2, 6))
        faults.cluster.stop(faults.cluster.workers[name], sig=signal.SIGTERM)
        faults.start_worker(name)

    menu: dict[str, Callable[[], None]] = {
        "kill-9 worker": kill_worker,
        "kill-9 master": kill_master,
        "partition": cut_off,
        "sigstop": pause,
        "clock skew": skew,
    }
    if pg is not None:

        def crash_catalog() -> None:
            pg.crash()
            time.sleep(rng.uniform(1, 3 * LEASE_SECONDS))
            pg.start()

        def full_disk() -> None:
            filler = fill(homes)
            try:
                ledger.submit(seconds=2, timeout=30)
                time.sleep(rng.uniform(1, 4))
            finally:
                filler.unlink()

        menu["postgresql crash"] = crash_catalog
        menu["full disk"] = full_disk
    done = {name: 0 for name in menu}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(rng.randint(1, 3)):
            ledger.submit(seconds=rng.choice([1, 2, 3, 5]))
        name = rng.choice(sorted(menu))
        _say(f"fault: {name}")
        menu[name]()
        done[name] += 1
    return done


if __name__ == "__main__":
    sys.exit(main())
