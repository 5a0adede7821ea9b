"""``bench-peers``: packfleet and its peers (Celery 5 + Redis, Dask distributed) side by side.

All three are started once on the same machine, each over mutual TLS: packfleet's bench
cluster (1 master + 2 workers, SQLite; a second one on a throwaway PostgreSQL database), Celery
with a private Redis (prefork ``-c 2``), and Dask (1 scheduler + 2 workers). While one system is
measured the others' processes are stopped, and continued after it (:mod:`packfleet.bench._alone`:
an idle Dask alone slowed the system beside it by a sixth). Each round measures, in an order that
rotates from round to round so no system always runs right after another's burst:

- throughput: N no-op tasks submitted at once (packfleet: one bulk request; Celery: one group;
  Dask: one ``client.map``) until the last one finished; tasks/s and CPU ms per task summed over
  every process of the system's trees and the bench client (:class:`~packfleet.bench._cpu.CpuMeter`).
  packfleet runs its pooled package at N and its fresh one (a new process per task, which no peer
  offers) at ``fresh_n``, on SQLite; and its pooled package at N on PostgreSQL, whose server
  processes count in its CPU.
- round trip: sequential no-ops, from the submit to the answer "finished" in the client's hands
  (packfleet: the requests ``packfleet run --wait`` makes, a run request with ``wait`` then the
  follow long-poll while the run has not ended; Celery ``apply_async().get()``; Dask
  ``client.submit().result()``), p50 and p99.

Each figure is the median of the rounds. The ratios compare packfleet with the *best peer of the
same run*: the faster peer for tasks/s (and its CPU per task), the quicker one for the round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from packfleet.bench import _latency, _throughput
from packfleet.bench._alone import stopped
from packfleet.bench._celery_peer import CeleryPeer
from packfleet.bench._cluster import PACKAGES, BenchCluster
from packfleet.bench._dask_peer import DaskPeer
from packfleet.bench._peer_tls import make_peer_tls
from packfleet.bench._stats import Result, load_average, percentile

#: A peer's warm-up before the rounds: connections open, pools and caches filled, code imported.
WARM_UP = _throughput.WARM_UP


class Peer(Protocol):
    name: str

    def throughput(self, n: int) -> tuple[float, float]: ...

    def roundtrips(self, n: int) -> list[float]: ...

    def pids(self) -> list[int]: ...


@dataclass
class System:
    """One column of the comparison: how to run its throughput and its round trips."""

    name: str
    n: int
    #: tasks/s of N tasks, and the run's other figures: ``cpu_ms_per_task`` at least.
    throughput: Callable[[int], tuple[float, dict[str, float]]]
    roundtrip: Callable[[int], dict[str, float]]
    result: Result
    is_peer: bool
    #: Its processes' roots (their descendants are its too), stopped while another system runs.
    pids: Callable[[], list[int]]
    #: Its warm-up before the rounds, if not ``WARM_UP`` tasks of its throughput (packfleet's runs
    #: its workers into their steady state, see ``_throughput.warm_up``).
    warm_up: Callable[[], None] | None = None


def _packfleet(bench: BenchCluster, isolation: str, n: int) -> System:
    package = PACKAGES[isolation]
    postgres = bench.catalog == "postgresql"

    def throughput(count: int) -> tuple[float, dict[str, float]]:
        return asyncio.run(_throughput._one_run(bench, package, count, postgres=postgres))

    def roundtrip(count: int) -> dict[str, float]:
        figures = asyncio.run(_latency._one_run(bench, package, count))
        return {k: figures[k] for k in ("roundtrip_p50_ms", "roundtrip_p99_ms", "submit_start_p50_ms")} | {
            "submit_start_p99_ms": figures["submit_start_p99_ms"]
        }

    name = f"packfleet {isolation}" + (" PostgreSQL" if postgres else "")
    result = Result("peers", "tasks/s", catalog=bench.catalog, isolation=isolation)
    result.notes.update(system=name, n=n)
    return System(
        name,
        n,
        throughput,
        roundtrip,
        result,
        is_peer=False,
        pids=bench.pids,
        warm_up=lambda: _throughput.warm_up(bench, package, n),
    )


def _peer(peer: Peer, n: int) -> System:
    def roundtrip(count: int) -> dict[str, float]:
        trips = peer.roundtrips(count)
        return {"roundtrip_p50_ms": percentile(trips, 50), "roundtrip_p99_ms": percentile(trips, 99)}

    def throughput(count: int) -> tuple[float, dict[str, float]]:
        rate, cpu_ms = peer.throughput(count)
        return rate, {"cpu_ms_per_task": cpu_ms}

    result = Result("peers", "tasks/s")
    result.notes.update(system=peer.name, n=n)
    return System(peer.name, n, throughput, roundtrip, result, is_peer=True, pids=peer.pids)


def _rotated(items: list[System], by: int) -> list[System]:
    by %= len(items)
    return items[by:] + items[:by]


def _alone(system: System, systems: list[System]) -> contextlib.AbstractContextManager[object]:
    """Every other system's processes stopped (see :mod:`packfleet.bench._alone`); packfleet's
    pooled and fresh figures come from one cluster, which stays running for both."""
    own = set(system.pids())
    return stopped(pid for other in systems for pid in other.pids() if pid not in own)


def measure(systems: list[System], *, runs: int, latency_n: int, emit: Callable[[str], None]) -> None:
    """Warm every system up, then ``runs`` rounds of throughput and round trips, alternating, each
    system measured with the others stopped."""
    for system in systems:
        with _alone(system, systems):
            if system.warm_up is not None:
                system.warm_up()
            else:
                system.throughput(min(system.n, WARM_UP))
            system.roundtrip(min(latency_n, 20))
    for r in range(runs):
        figures: dict[str, dict[str, float]] = {s.name: {} for s in systems}
        rates: dict[str, float] = {}
        for system in _rotated(systems, r):
            system.result.loads.append(load_average())
            with _alone(system, systems):
                rate, run_figures = system.throughput(system.n)
            rates[system.name] = rate
            figures[system.name].update(run_figures)
        for system in _rotated(systems, r):
            with _alone(system, systems):
                figures[system.name].update(system.roundtrip(latency_n))
            system.result.loads.append(load_average())
        for system in systems:
            system.result.add_run(rates[system.name], **figures[system.name])
        emit(f"# round {r + 1} of {runs}: " + ", ".join(f"{n} {v:.0f} tasks/s" for n, v in rates.items()))


def _median(result: Result, metric: str | None = None) -> float:
    values = result.values if metric is None else result.metrics.get(metric, [])
    return float(statistics.median(values)) if values else float("nan")


def ratios(systems: list[System]) -> dict[str, Any]:
    """packfleet's figures over the best peer's: tasks/s and CPU against the fastest, trips the quickest."""
    peers = [s for s in systems if s.is_peer]
    fastest = max(peers, key=lambda s: _median(s.result))
    quickest = min(peers, key=lambda s: _median(s.result, "roundtrip_p50_ms"))
    out: dict[str, Any] = {"best_peer_tasks_per_s": fastest.name, "best_peer_roundtrip": quickest.name}
    for system in systems:
        if system.is_peer:
            continue
        result = system.result
        cpu, trip = "cpu_ms_per_task", "roundtrip_p50_ms"
        entry = {
            "tasks_per_s": _median(result) / _median(fastest.result),
            "cpu_ms_per_task": _median(result, cpu) / _median(fastest.result, cpu),
            "roundtrip_p50": _median(result, trip) / _median(quickest.result, trip),
        }
        out[system.name] = {k: round(v, 3) for k, v in entry.items()}
        result.notes["vs_best_peer"] = out[system.name]
    return out


#: The targets, as (system, ratio, bound, at most?) — pooled and fresh against the best peer.
TARGETS = (
    ("packfleet pooled", "tasks_per_s", 2.5, False),
    ("packfleet pooled", "cpu_ms_per_task", 0.5, True),
    ("packfleet pooled", "roundtrip_p50", 1.5, True),
    ("packfleet fresh", "tasks_per_s", 1.2, False),
    ("packfleet fresh", "roundtrip_p50", 3.0, True),
    ("packfleet pooled PostgreSQL", "tasks_per_s", 1.5, False),
)


def table(systems: list[System], compared: dict[str, Any]) -> str:
    header = ("system", "N", "tasks/s", "CPU ms/task", "round trip p50 ms", "p99 ms", "load", "vs best peer")
    rows = [header]
    for system in systems:
        result = system.result
        vs = compared.get(system.name)
        ratio = (
            f"{vs['tasks_per_s']:.2f}x tasks/s, {vs['cpu_ms_per_task']:.2f}x CPU, "
            f"{vs['roundtrip_p50']:.2f}x trip"
            if vs
            else ""
        )
        loads = result.loads
        rows.append(
            (
                system.name,
                str(system.n),
                f"{_median(result):.0f}",
                f"{_median(result, 'cpu_ms_per_task'):.2f}",
                f"{_median(result, 'roundtrip_p50_ms'):.2f}",
                f"{_median(result, 'roundtrip_p99_ms'):.2f}",
                f"{min(loads):.2f}-{max(loads):.2f}" if loads else "-",
                ratio,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    lines.append("")
    lines.append(
        f"best peer: {compared['best_peer_tasks_per_s']} for tasks/s and CPU, "
        f"{compared['best_peer_roundtrip']} for the round trip"
    )
    for name, ratio, bound, at_most in TARGETS:
        value = compared[name][ratio]
        met = value <= bound if at_most else value >= bound
        sign = "<=" if at_most else ">="
        lines.append(f"target {name} {ratio} {sign} {bound}x: {value:.2f}x {'met' if met else 'NOT met'}")
    return "\n".join(lines)


def run(*, n: int, fresh_n: int, latency_n: int, runs: int, emit: Callable[[str], None]) -> list[Result]:
    """Start the three systems, measure them side by side, print one JSON line each and the table."""
    root = Path(tempfile.mkdtemp(prefix="packfleet-peers-"))
    try:
        tls = make_peer_tls(root / "tls")
        with (
            BenchCluster("sqlite") as bench,
            BenchCluster("postgresql") as pg_bench,
            CeleryPeer(root / "celery", tls) as celery,
            DaskPeer(root / "dask", tls) as dask,
        ):
            systems = [
                _packfleet(bench, "pooled", n),
                _peer(celery, n),
                _peer(dask, n),
                _packfleet(bench, "fresh", fresh_n),
                _packfleet(pg_bench, "pooled", n),
            ]
            measure(systems, runs=runs, latency_n=latency_n, emit=emit)
        compared = ratios(systems)
        results = [s.result for s in systems]
        for result in results:
            emit(result.json_line())
        emit("")
        emit(table(systems, compared))
        return results
    finally:
        shutil.rmtree(root, ignore_errors=True)
