"""``python -m packfleet.bench``: run the scenarios, print one JSON line each and a table.

With ``--scenario`` it runs that one scenario and prints its JSON line last, for scripts; without,
it runs everything ``make bench`` promises with defaults that finish in about ten minutes on two
cores, and ends with the readable table. ``throughput`` figures are also given as a fraction of the
``limit`` measured in the same run (``of_limit``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from packfleet.bench import (
    _console,
    _fleet,
    _ha,
    _idle,
    _latency,
    _limit,
    _reconnect,
    _rotation,
    _spawn,
    _throughput,
)
from packfleet.bench._cluster import BenchCluster, fleet_settings
from packfleet.bench._stats import Result, table
from packfleet.localcluster import sigterm_exits

SCENARIOS = (
    "throughput", "latency", "spawn", "fleet", "rotation", "reconnect", "limit", "idle", "console", "ha",
    "peers",
)  # fmt: skip
DEFAULT_N = {
    "throughput": 5000,
    "latency": 500,
    "spawn": 200,
    "fleet": 5000,  # the scale target
    "rotation": 1000,
    "reconnect": 1000,
    "limit": 5,
    "idle": 1000,
    "console": 100_000,
    "ha": 2000,
    "peers": 3000,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m packfleet.bench", description=__doc__)
    parser.add_argument("--scenario", choices=SCENARIOS, help="run only this scenario")
    parser.add_argument(
        "--n",
        type=int,
        help="executions (throughput, latency, console, ha, peers), samples (spawn), agents (fleet, "
        "rotation, reconnect), seconds (limit), held connections (idle)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario; the median is the figure")
    parser.add_argument("--catalog", choices=("sqlite", "postgresql"), default=None)
    parser.add_argument("--isolation", choices=("fresh", "pooled"), default=None)
    parser.add_argument("--interval", type=float, default=10.0, help="fleet: heartbeat interval (s)")
    parser.add_argument("--rounds", type=int, default=2, help="fleet: measured heartbeats per agent")
    parser.add_argument("--samples", type=int, default=200, help="idle: requests of each kind measured")
    parser.add_argument("--workers", type=int, default=1000, help="console: workers in the catalog")
    parser.add_argument("--requests", type=int, default=40, help="console: fetches of each page")
    parser.add_argument("--rate", type=int, default=1000, help="console: live tail lines per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="console: live tail duration")
    parser.add_argument("--kills", type=int, default=3, help="ha: kill -9 of a master, one gap each")
    parser.add_argument("--fresh-n", type=int, default=1000, help="peers: executions of packfleet fresh")
    parser.add_argument("--latency-n", type=int, default=200, help="peers: sequential round trips per run")
    return parser


class Bench:
    """Runs scenarios, sharing one cluster per catalog, and prints each result as it comes."""

    def __init__(self, args: argparse.Namespace, emit: Callable[[str], None]) -> None:
        self.args = args
        self.emit = emit
        self.results: list[Result] = []
        #: Measured once per bench run, on the first cluster; every throughput line is divided by it.
        self.limit: Result | None = None

    def n(self, scenario: str) -> int:
        return int(self.args.n or DEFAULT_N[scenario])

    def _done(self, result: Result) -> Result:
        self.results.append(result)
        self.emit(result.json_line())
        return result

    def on_cluster(self, catalog: str, scenarios: Sequence[str], isolations: Sequence[str]) -> None:
        runs = self.args.runs
        with BenchCluster(catalog) as bench:
            if "limit" in scenarios:
                self.limit = self._done(_limit.run(bench, seconds=self.n("limit"), runs=runs))
            limit = self.limit
            if "latency" in scenarios:
                for isolation in isolations:
                    self._done(_latency.run(bench, n=self.n("latency"), runs=runs, isolation=isolation))
            if "throughput" in scenarios:
                for isolation in isolations:
                    result = _throughput.run(bench, n=self.n("throughput"), runs=runs, isolation=isolation)
                    if limit is not None and limit.values:
                        median = result.to_json()["median"]
                        result.notes["of_limit"] = round(median / limit.to_json()["median"], 4)
                    self._done(result)

    def idle(self) -> None:
        with BenchCluster(self.args.catalog or "sqlite", workers=0) as bench:
            self._done(_idle.run(bench, connections=self.n("idle"), n=self.args.samples, runs=self.args.runs))

    def spawn(self) -> None:
        self._done(_spawn.run(n=self.n("spawn"), runs=self.args.runs))

    def _fleet_cluster(self, agents: int) -> BenchCluster:
        return BenchCluster(self.args.catalog or "sqlite", workers=0, master_settings=fleet_settings(agents))

    def fleet(self) -> None:
        with self._fleet_cluster(self.n("fleet")) as bench:
            self._done(
                _fleet.run(
                    bench,
                    agents=self.n("fleet"),
                    interval=self.args.interval,
                    rounds=self.args.rounds,
                    runs=self.args.runs,
                )
            )

    def ha(self) -> None:
        with _ha.HaBench() as bench:
            for result in _ha.run(bench, n=self.n("ha"), runs=self.args.runs, kills=self.args.kills):
                self._done(result)

    def rotation(self) -> None:
        with self._fleet_cluster(self.n("rotation")) as bench:
            self._done(_rotation.run(bench, agents=self.n("rotation"), runs=self.args.runs))

    def reconnect(self) -> None:
        with self._fleet_cluster(self.n("reconnect")) as bench:
            self._done(_reconnect.run(bench, agents=self.n("reconnect"), runs=self.args.runs))

    def console(self) -> None:
        with BenchCluster(self.args.catalog or "sqlite", workers=0) as bench:
            for result in _console.run(
                bench,
                workers=self.args.workers,
                executions=self.n("console"),
                requests=self.args.requests,
                rate=self.args.rate,
                seconds=self.args.seconds,
                runs=self.args.runs,
            ):
                self._done(result)


def main(argv: Sequence[str] | None = None, emit: Callable[[str], None] = print) -> list[Result]:
    # `kill <pid>` of a bench run unwinds through the clusters' `with`, stopping every node.
    with sigterm_exits():
        return _main(argv, emit)


def _main(argv: Sequence[str] | None, emit: Callable[[str], None]) -> list[Result]:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    def emit_now(line: str) -> None:
        emit(line)
        sys.stdout.flush()

    bench = Bench(args, emit_now)
    isolations = [args.isolation] if args.isolation else ["fresh", "pooled"]
    scenario = args.scenario
    if scenario == "spawn":
        bench.spawn()
    elif scenario == "fleet":
        bench.fleet()
    elif scenario == "idle":
        bench.idle()
    elif scenario == "rotation":
        bench.rotation()
    elif scenario == "reconnect":
        bench.reconnect()
    elif scenario == "console":
        bench.console()
    elif scenario == "ha":
        bench.ha()
    elif scenario == "peers":
        from packfleet.bench import _peers  # the peers' packages are the optional `bench` extra

        bench.results += _peers.run(
            n=bench.n("peers"),
            fresh_n=args.fresh_n,
            latency_n=args.latency_n,
            runs=args.runs,
            emit=emit_now,
        )
    elif scenario is not None:
        # The throughput scenario measures its limit in the same run so the ratio is like for like.
        wanted = [scenario, "limit"] if scenario == "throughput" and args.n is None else [scenario]
        lat_isolations = [args.isolation or "fresh"] if scenario == "latency" else isolations
        bench.on_cluster(args.catalog or "sqlite", wanted, lat_isolations)
        if scenario == "throughput" and "limit" in wanted:
            # Print the scenario asked for last, as scripts read the last line.
            emit(bench.results[-1].json_line())
    else:
        catalogs = [args.catalog] if args.catalog else ["sqlite", "postgresql"]
        for i, catalog in enumerate(catalogs):
            wanted = ["limit", "latency", "throughput"] if i == 0 else ["throughput"]
            bench.on_cluster(catalog, wanted, isolations)
        bench.spawn()
        bench.fleet()
        bench.rotation()
        bench.reconnect()
        bench.idle()
        bench.ha()
        emit("")
        emit(table(bench.results))
    return bench.results
