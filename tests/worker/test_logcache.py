"""The execution log cache on its own: write-ahead, acknowledged positions, crash recovery."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from packfleet.errors import SettingsError
from packfleet.protocol import CompletionReport
from packfleet.worker import LogCache, _logcache

from .helpers import journal


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
    cache.sync()
    batch = cache.pending_events(4)
    assert [(e.task_id, e.attempt, e.seq, e.execution_id) for e in batch] == [
        (1, 1, 1, 101),
        (1, 1, 2, 101),
        (1, 1, 3, 101),
        (1, 2, 1, 101),
    ]
    cache.acknowledge(batch)
    assert [(e.attempt, e.seq) for e in cache.pending_events(10)] == [(2, 2)]


@pytest.mark.parametrize(
    "message", ["", "plain", 'quote " backslash \\ tab \t newline \n control \x01', "é 日本 \u2028 🙂"]
)
def test_an_event_record_is_the_json_of_the_event_and_reads_back_whole(tmp_path: Path, message: str) -> None:
    cache = LogCache(tmp_path)
    cache.load()
    cache.open_attempt(execution_id=9, task_id=8, attempt=2)
    event = cache.append(8, 2, time="2024-01-01T00:00:00.5+00:00", level=40, source="log", message=message)
    cache.sync()

    [line] = journal(tmp_path)[0].read_bytes().splitlines(keepends=True)
    assert line == _logcache._dumps({"e": vars(event)})
    assert cache.pending_events(10) == [event]


def segments(folder: Path) -> list[str]:
    return sorted(p.name for p in journal(folder))


def test_an_attempt_is_forgotten_once_its_events_and_report_are_accepted(tmp_path: Path) -> None:
    cache = LogCache(tmp_path)
    cache.load()
    fill(cache, 7, 2)
    report = CompletionReport(task_id=7, attempt=1, outcome="succeeded", exit_code=0, message="ok")
    cache.finish(7, 1, report)
    assert cache.pending_events(10) == []  # nothing is handed out before it is committed
    cache.sync()
    assert cache.pending_completions() == []  # a report waits for its events
    cache.acknowledge(cache.pending_events(10))
    assert cache.pending_completions() == [report]
    assert segments(tmp_path) == ["journal-0000000001.jsonl"]
    cache.settle(7, 1)
    assert cache.idle
    # Nothing is pending: the active segment is kept for the next records (no new file, no
    # directory fsync for an idle worker's next task), and a restart finds nothing to send.
    assert segments(tmp_path) == ["journal-0000000001.jsonl"]
    fill(cache, 8, 1)
    assert segments(tmp_path) == ["journal-0000000001.jsonl"]
    cache.sync()
    cache.acknowledge(cache.pending_events(10))
    cache.finish(8, 1, None)
    assert LogCache(tmp_path).load() == 0
    cache.close()  # stopping with nothing pending deletes the journal
    assert journal(tmp_path) == []


def test_a_full_segment_is_deleted_once_nothing_is_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = LogCache(tmp_path)
    cache.load()
    fill(cache, 7, 2)
    cache.sync()
    cache.acknowledge(cache.pending_events(10))
    assert journal(tmp_path) != []
    monkeypatch.setattr(_logcache, "SEGMENT_BYTES", 100)  # what it holds now fills a segment
    cache.finish(7, 1, None)
    assert cache.idle
    assert journal(tmp_path) == []


def test_the_acknowledged_position_survives_a_restart(tmp_path: Path) -> None:
    first = LogCache(tmp_path)
    first.load()
    fill(first, 3, 5)
    first.sync()
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
    report = CompletionReport(task_id=8, attempt=1, outcome="failed", exit_code=1, message="boom")
    fill(crashed, 8, 1)
    crashed.finish(8, 1, report)
    with open(tmp_path / "journal-0000000001.jsonl", "ab") as handle:
        handle.write(b'{"e":{"execution_id":109,"task_id":9,"att')  # the write the crash interrupted
    # No commit, no finish(), no close(): the process was killed here (what it wrote is on disk).

    recovered = LogCache(tmp_path)
    assert recovered.load() == 3
    assert (tmp_path / "journal-0000000001.jsonl").read_bytes().endswith(b"\n")
    events = recovered.pending_events(10)
    assert [(e.task_id, e.message) for e in events] == [(9, "0"), (9, "1"), (8, "0")]
    recovered.acknowledge(events)
    # Task 9 was running: no report is due for it (the master requeues it); task 8's is.
    assert recovered.pending_completions() == [report]
    recovered.settle(8, 1)
    assert recovered.idle
    recovered.close()
    assert journal(tmp_path) == []


def test_only_a_prefix_is_acknowledged_and_a_resend_starts_after_it(tmp_path: Path) -> None:
    cache = LogCache(tmp_path)
    cache.load()
    fill(cache, 1, 2)
    fill(cache, 2, 2)
    cache.sync()
    batch = cache.pending_events(10)
    cache.acknowledge(batch[:3])  # the master stored three before failing
    assert cache.waiting_events == 1
    assert [(e.task_id, e.seq) for e in cache.pending_events(10)] == [(2, 2)]


async def test_a_commit_covers_what_was_written_before_it_only(tmp_path: Path) -> None:
    cache = LogCache(tmp_path)
    cache.load()
    fill(cache, 1, 1)
    await cache.commit()
    fill(cache, 2, 1)  # written after the commit: not durable yet, so not handed out
    assert [e.task_id for e in cache.pending_events(10)] == [1]
    await cache.commit()
    assert [e.task_id for e in cache.pending_events(10)] == [1, 2]


async def test_what_a_commit_covers_is_sent_while_its_fsync_runs_and_durable_when_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = LogCache(tmp_path)
    cache.load()
    fill(cache, 1, 2)
    report = CompletionReport(task_id=1, attempt=1, outcome="succeeded", exit_code=0, message="ok")
    cache.finish(1, 1, report)
    release = threading.Event()
    synced: list[int] = []
    real_fsync = cache._fsync

    def slow_fsync(fds: list[int], sync_dir: bool) -> None:
        assert release.wait(10), "the test never released the fsync"
        real_fsync(fds, sync_dir)
        synced.extend(fds)

    monkeypatch.setattr(cache, "_fsync", slow_fsync)
    durable = await cache.start_commit()
    # The fsync has not returned, yet what it covers is handed out: events, then the report with them.
    batch = cache.pending_events(10)
    assert [e.seq for e in batch] == [1, 2]
    assert cache.completions_with(batch) == [report]
    fill(cache, 2, 1)  # written after the commit started: the next commit's
    assert [e.task_id for e in cache.pending_events(10)] == [1, 1]
    # The master answers before the fsync ends: the journal may retire its segment meanwhile.
    cache.acknowledge(cache.pending_events(10))
    cache.settle(1, 1)
    assert not durable.done()
    release.set()
    await durable
    assert synced, "the commit fsynced the active segment"
    await cache.commit()
    assert [e.task_id for e in cache.pending_events(10)] == [2]
    cache.close()
    assert LogCache(tmp_path).load() == 1  # task 2's event, durable and not yet acknowledged


def test_segments_rotate_and_are_deleted_once_acknowledged_and_settled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_logcache, "SEGMENT_BYTES", 300)
    cache = LogCache(tmp_path)
    cache.load()
    report = CompletionReport(task_id=1, attempt=1, outcome="succeeded", exit_code=0, message="")
    fill(cache, 1, 3)
    cache.finish(1, 1, report)
    fill(cache, 2, 6)
    cache.sync()
    assert len(segments(tmp_path)) >= 3
    with_report = next(name for name in segments(tmp_path) if b'"d":' in (tmp_path / name).read_bytes())
    assert with_report != "journal-0000000001.jsonl"
    cache.acknowledge(cache.pending_events(100))
    # Every event is delivered, but task 1's report is not yet: its segment stays, older ones go.
    assert segments(tmp_path)[0] == with_report
    assert cache.pending_completions() == [report]
    cache.settle(1, 1)
    assert with_report not in segments(tmp_path)
    restarted = LogCache(tmp_path)
    cache.close()
    assert restarted.load() == 0  # task 2 was still open: closed without a report, nothing to send
    assert journal(tmp_path) == []


def test_a_restart_resends_what_was_not_acknowledged_and_numbering_goes_on(tmp_path: Path) -> None:
    first = LogCache(tmp_path)
    first.load()
    fill(first, 5, 4)
    first.sync()
    first.acknowledge(first.pending_events(1))
    first.close()  # stopped while the attempt was open

    second = LogCache(tmp_path)
    assert second.load() == 3
    assert [(e.seq, e.execution_id) for e in second.pending_events(10)] == [(2, 105), (3, 105), (4, 105)]
    assert second.pending_completions() == []


def test_a_record_cut_short_by_a_full_disk_does_not_spoil_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = LogCache(tmp_path)
    cache.load()
    fill(cache, 1, 1)
    real_write = os.write
    calls: list[int] = []

    def full_disk(fd: int, data: bytes | memoryview) -> int:
        calls.append(fd)
        if len(calls) == 1:
            return real_write(fd, bytes(data[:10]))  # part of the record reached the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(SettingsError, match="No space left"):
        cache.append(1, 1, time="2024-01-01T00:00:00+00:00", level=20, source="stdout", message="lost")
    monkeypatch.setattr(os, "write", real_write)
    cache.append(1, 1, time="2024-01-01T00:00:00+00:00", level=20, source="stdout", message="after")
    cache.sync()
    assert [(e.seq, e.message) for e in cache.pending_events(10)] == [(1, "0"), (2, "after")]
