"""The bench's arithmetic and accounting: percentiles, the JSON line scripts read, CPU of reaped children."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest

from packfleet.bench import CpuMeter, Result, percentile, table


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([3.0, 1.0, 2.0], 0) == 1.0


def test_a_result_summarizes_its_runs_in_the_documented_keys() -> None:
    result = Result("throughput", "tasks/s", catalog="sqlite", isolation="pooled")
    for value, cpu in ((900.0, 1.4), (1100.0, 1.2), (1000.0, 1.3)):
        result.add_run(value, cpu_ms_per_task=cpu)
    result.loads += [0.5, 1.5]
    line = json.loads(result.json_line())
    assert {k: line[k] for k in ("scenario", "catalog", "isolation", "median", "min", "max", "unit")} == {
        "scenario": "throughput",
        "catalog": "sqlite",
        "isolation": "pooled",
        "median": 1000.0,
        "min": 900.0,
        "max": 1100.0,
        "unit": "tasks/s",
    }
    assert line["metrics"]["cpu_ms_per_task"] == {"median": 1.3, "min": 1.2, "max": 1.4}
    assert line["load"] == {"min": 0.5, "max": 1.5}
    rendered = table([result])
    assert "throughput" in rendered.splitlines()[2] and "cpu_ms_per_task=1.3" in rendered


def test_the_cpu_meter_counts_a_child_that_ran_and_was_reaped_in_between() -> None:
    meter = CpuMeter([])
    meter.start()
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)  # noqa: S603 - our own interpreter
    used = meter.stop()
    # The child burned 0.3 s of CPU; the kernel's clock-tick accounting may round it a hair below.
    assert 0.29 <= used < 5.0


PARENT_OF_A_BURNER = """
import subprocess, sys
sys.stdin.readline()  # once the meter has started
burn = (
    "import sys, time\\nend = time.process_time() + 0.3\\n"
    "while time.process_time() < end: pass\\nsys.stdin.read()"
)
child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE)
sys.stdin.read()  # until told
child.stdin.close()
child.wait()
"""


def test_the_cpu_meter_gives_a_named_roots_descendants_their_own_part() -> None:
    parent = subprocess.Popen(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", PARENT_OF_A_BURNER], stdin=subprocess.PIPE
    )
    assert parent.stdin is not None
    try:
        meter = CpuMeter([parent.pid], parts={parent.pid: ("parent", "children")})
        meter.start()
        parent.stdin.write(b"go\n")
        parent.stdin.flush()
        deadline = time.monotonic() + 30
        while sum(_burned(child) for child in psutil.Process(parent.pid).children()) < 0.29:
            assert time.monotonic() < deadline, "the child never burned its CPU"
            time.sleep(0.05)
        used = meter.stop()
    finally:
        parent.stdin.close()
        parent.wait(10)
    assert sum(meter.by_part.values()) == pytest.approx(used)
    assert 0.29 <= meter.by_part["children"] < 5.0
    assert meter.by_part["parent"] < 0.25  # it started a process and waited
    assert set(meter.by_part) == {"parent", "children", "client"}


def _burned(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)
