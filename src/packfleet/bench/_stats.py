"""Medians over runs, percentiles within a run, and the two ways results are printed.

Every scenario runs ``runs`` times (3 by default) and reports the median with the min and max, plus
the machine's load average before and after, so a run disturbed by something else on the machine
shows as a wide min..max or a high load rather than as a quietly wrong median.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between closest ranks.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
    >>> percentile([5.0], 99)
    5.0
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def load_average() -> float:
    """The 1-minute load average (how many processes wanted a CPU), the noise indicator printed."""
    return round(os.getloadavg()[0], 2)


@dataclass
class Result:
    """One scenario (in one catalog/isolation mode) over several runs.

    ``values`` holds the headline figure of each run; ``metrics`` holds the other figures of each
    run by name (e.g. ``p99_ms``, ``cpu_ms_per_task``); each is summarized as median/min/max.
    """

    scenario: str
    unit: str
    catalog: str | None = None
    isolation: str | None = None
    values: list[float] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    loads: list[float] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def add_run(self, value: float, **metrics: float) -> None:
        self.values.append(value)
        for name, metric in metrics.items():
            self.metrics.setdefault(name, []).append(metric)

    def to_json(self) -> dict[str, Any]:
        def summary(values: list[float]) -> dict[str, float]:
            return {
                "median": _round(statistics.median(values)),
                "min": _round(min(values)),
                "max": _round(max(values)),
            }

        head = summary(self.values) if self.values else {"median": None, "min": None, "max": None}
        return {
            "scenario": self.scenario,
            "catalog": self.catalog,
            "isolation": self.isolation,
            **head,
            "unit": self.unit,
            "runs": len(self.values),
            "values": [_round(v) for v in self.values],
            "metrics": {name: summary(values) for name, values in self.metrics.items() if values},
            "load": {"min": min(self.loads, default=None), "max": max(self.loads, default=None)},
            "cpus": os.cpu_count(),
            **self.notes,
        }

    def json_line(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"), sort_keys=False)


def _round(value: float) -> float:
    if math.isnan(value) or math.isinf(value):
        return value
    return round(value, 3 if abs(value) < 100 else 1)


def table(results: Sequence[Result]) -> str:
    """The readable table ``make bench`` ends with: one row per result, headline then the rest."""
    header = ("scenario", "catalog", "isolation", "median", "min", "max", "unit", "load", "other medians")
    rows = [header]
    for result in results:
        data = result.to_json()
        others = ", ".join(f"{name}={m['median']:g}" for name, m in data["metrics"].items())
        limit_ratio = data.get("of_limit")
        if limit_ratio is not None:
            others = f"{others}, of_limit={limit_ratio:g}" if others else f"of_limit={limit_ratio:g}"
        load = data["load"]
        rows.append(
            (
                result.scenario,
                result.catalog or "-",
                result.isolation or "-",
                _text(data["median"]),
                _text(data["min"]),
                _text(data["max"]),
                result.unit,
                "-" if load["min"] is None else f"{load['min']:.2f}-{load['max']:.2f}",
                others,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def _text(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
