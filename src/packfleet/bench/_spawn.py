"""``spawn``: what starting a package process costs the worker, against a plain interpreter start.

Each sample is one no-op task run to its end through :class:`~packfleet.packages.PackageRunner`
(launch, the package call, exit, pipes drained) — the part of a task's life the worker's process
model is responsible for. Fresh tasks are forked from the project version's warm server, as a
worker's are once the version's first tasks have run. The baseline is ``python -c pass`` started
the ordinary way (fork + exec of a new interpreter), which is what a runner without a fork server
pays at least. The floor is a fork server's bare ``fork()`` and exit: a process with the fork server's
imports forks (as the fork servers do) a child that exits at once, and reaps it. No fresh task
starts for less on the machine at hand: its kernel copies the page tables, faults pages in and
tears them down again whatever the task does.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from packfleet.bench._cluster import PACKAGES, write_project
from packfleet.bench._stats import Result, load_average, percentile
from packfleet.packages import PackageRunner, RunSpec, load_project


async def _runner_samples(project_dir: Path, package: str, n: int, work: Path) -> list[float]:
    spec = load_project(project_dir).packages[package]
    runner = PackageRunner(pool_size=1)
    await runner.start()
    samples: list[float] = []
    try:
        # A worker's fresh tasks fork from their version's warm server once it is up: measure that.
        await runner.warm(RunSpec(0, 0, 1, project_dir, spec, {}, work / "warm"))
        for i in range(n + 5):  # the first few start the fork server's and pool's caches
            run_spec = RunSpec(
                execution_id=i + 1,
                task_id=i + 1,
                attempt=1,
                project_dir=project_dir,
                package=spec,
                parameters={},
                task_dir=work / str(i),
            )
            run_spec.task_dir.mkdir(parents=True)
            began = time.perf_counter()
            handle = await runner.launch(run_spec, lambda _event: None)
            outcome = await handle.wait()
            if outcome.outcome != "succeeded":
                raise RuntimeError(f"the bench no-op package {outcome.outcome}: {outcome.message}")
            if i >= 5:
                samples.append((time.perf_counter() - began) * 1000.0)
    finally:
        await runner.close()
    return samples


def _bare_samples(n: int) -> list[float]:
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)  # noqa: S603 - our own interpreter
        samples.append((time.perf_counter() - began) * 1000.0)
    return samples


# Run in a process of its own: one thread, as a fork server (the bench's own may have more).
_FORK_FLOOR = """
import json, os, sys, time
from packfleet.packages import _fork, _forkserver
raw = _forkserver.forks_raw()  # the fork servers' own choice of fork
samples = []
for _ in range(int(sys.argv[1])):
    began = time.perf_counter()
    pid = _fork.fork(raw)
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    samples.append((time.perf_counter() - began) * 1000.0)
print(json.dumps(samples))
"""


def _fork_floor_samples(n: int) -> list[float]:
    done = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", _FORK_FLOOR, str(n)], check=True, capture_output=True, text=True
    )
    samples: list[float] = json.loads(done.stdout)
    return samples


def run(*, n: int, runs: int) -> Result:
    result = Result("spawn", "ms (fresh task p50)", isolation="fresh")
    result.notes["n"] = n
    with tempfile.TemporaryDirectory(prefix="packfleet-bench-spawn-") as tmp:
        project_dir = write_project(Path(tmp) / "project")
        for r in range(runs):
            result.loads.append(load_average())
            fresh = asyncio.run(_runner_samples(project_dir, PACKAGES["fresh"], n, Path(tmp) / f"f{r}"))
            pooled = asyncio.run(_runner_samples(project_dir, PACKAGES["pooled"], n, Path(tmp) / f"p{r}"))
            bare = _bare_samples(n)
            floor = _fork_floor_samples(n)
            result.add_run(
                percentile(fresh, 50),
                fresh_p99_ms=percentile(fresh, 99),
                pooled_p50_ms=percentile(pooled, 50),
                pooled_p99_ms=percentile(pooled, 99),
                bare_python_p50_ms=percentile(bare, 50),
                bare_python_p99_ms=percentile(bare, 99),
                fork_floor_p50_ms=percentile(floor, 50),
            )
            result.loads.append(load_average())
    return result
