"""The execution log cache on its own: write-ahead, acknowledged positions, crash recovery."""

from __future__ import annotations

import json
from pathlib import Path

from packfleet.protocol import CompletionReport
from packfleet.worker import LogCache


def fill(cache: LogCache, task_id: int, count: int, *, attempt: int = 1) -> None:
    cache.open_attempt(execution_id=task_id + 100, task_id=task_id, attempt=attempt)
    for i in range(count):
        cache.append(
            task_id, attempt, time="2024-01-01T00:00:00+00:00", level=20, source="stdout", message=f"{i}"
        )


def test_events_are_numbered_per_attempt_and_handed_out_in_order(tmp_path: Path) -> None:
    cache = LogCache(tmp_path)
    assert cache.load() == 0
    fill(cache, 1, 3)
    fill(cache, 1, 2, attempt=2)
    batch = cache.pending_events(4)
    assert [(e.task_id, e.attempt, e.seq, e.execution_id) for e in batch] == [
        (1, 1, 1, 101),
        (1, 1, 2, 101),
        (1, 1, 3, 101),
        (1, 2, 1, 101),
    ]
    cache.acknowledge(batch)
    assert [(e.attempt, e.seq) for e in cache.pending_events(10)] == [(2, 2)]


def test_an_attempt_is_deleted_once_its_events_and_report_are_accepted(tmp_path: Path) -> None:
    cache = LogCache(tmp_path)
    cache.load()
    fill(cache, 7, 2)
    report = CompletionReport(task_id=7, attempt=1, outcome="succeeded", exit_code=0, message="ok")
    cache.finish(7, 1, report)
    assert cache.pending_completions() == []  # a report waits for its events
    cache.acknowledge(cache.pending_events(10))
    assert cache.pending_completions() == [report]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["7-1.acked", "7-1.done.json", "7-1.events.jsonl"]
    cache.settle(7, 1)
    assert list(tmp_path.iterdir()) == []
    assert cache.idle


def test_the_acknowledged_position_survives_a_restart(tmp_path: Path) -> None:
    first = LogCache(tmp_path)
    first.load()
    fill(first, 3, 5)
    first.acknowledge(first.pending_events(2))
    first.finish(3, 1, None)
    first.close()

    second = LogCache(tmp_path)
    assert second.load() == 3
    assert [e.seq for e in second.pending_events(10)] == [3, 4, 5]


def test_a_crash_leaves_a_torn_line_and_an_open_attempt_both_recovered(tmp_path: Path) -> None:
    crashed = LogCache(tmp_path)
    crashed.load()
    fill(crashed, 9, 2)
    crashed.sync()
    with open(tmp_path / "9-1.events.jsonl", "ab") as handle:
        handle.write(b'{"execution_id": 109, "task_id": 9, "att')  # the write the crash interrupted
    # No finish(), no close(): the process died here.

    recovered = LogCache(tmp_path)
    assert recovered.load() == 2
    assert [e.message for e in recovered.pending_events(10)] == ["0", "1"]
    done = json.loads((tmp_path / "9-1.done.json").read_text())
    assert done == {"report": None}  # no report for a task whose process died with the worker
    assert (tmp_path / "9-1.events.jsonl").read_bytes().endswith(b"\n")
    recovered.acknowledge(recovered.pending_events(10))
    assert list(tmp_path.iterdir()) == []


def test_files_left_by_a_crash_while_forgetting_an_attempt_are_removed(tmp_path: Path) -> None:
    (tmp_path / "4-1.acked").write_text('{"seq": 3, "offset": 99}')
    (tmp_path / "5-2.done.json").write_text('{"report": null}')
    assert LogCache(tmp_path).load() == 0
    assert list(tmp_path.iterdir()) == []
