"""The ``console`` bench scenario, small: a real master process, its catalog filled in bulk, every
page fetched with a session cookie, and a live tail fed through the worker API to an SSE client."""

from __future__ import annotations

import pytest

from packfleet.bench import _console
from packfleet.bench._cluster import BenchCluster
from packfleet.bench._main import SCENARIOS

pytestmark = pytest.mark.e2e


def test_the_console_scenario_times_every_page_and_the_tail_receives_every_line() -> None:
    assert "console" in SCENARIOS
    with BenchCluster("sqlite", workers=0) as bench:
        pages, tail = _console.run(
            bench, workers=30, executions=600, requests=3, rate=200, seconds=1.0, runs=1
        )
        assert bench.master_pid()  # the master survived it all
    data = pages.to_json()
    pages_seen = set(_console.pages("a", 1))
    waited = {k: m for k, m in data["metrics"].items() if not k.endswith("_server_p95_ms")}
    made = {k: m for k, m in data["metrics"].items() if k.endswith("_server_p95_ms")}
    assert {name.removesuffix("_p95_ms") for name in waited} == pages_seen
    assert {name.removesuffix("_server_p95_ms") for name in made} == pages_seen, "Server-Timing of every page"
    assert all(m["median"] > 0 for m in data["metrics"].values())
    assert data["median"] == max(m["median"] for m in waited.values())
    # The console's own time is part of what the client waited for, request by request.
    for name in pages_seen:
        assert made[f"{name}_server_p95_ms"]["median"] <= waited[f"{name}_p95_ms"]["median"]
    figures = tail.to_json()
    assert figures["metrics"]["sent"]["median"] == 200
    assert figures["metrics"]["received"]["median"] == 200  # no line lost
    assert figures["metrics"]["distinct"]["median"] == 200  # nor shown twice
    assert figures["median"] > 0
