"""A full log cache disk: the package waits on its pipe, and no event is ever lost without a marker.

The cache folder is a real 256 KiB tmpfs (``mount -t tmpfs``, so the tests need root), far smaller
than the 3,000 lines a package prints here: the write-ahead journal fills it several times over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from packfleet.errors import SettingsError
from packfleet.protocol import CompletionReport, EventMessage
from packfleet.worker import LogCache, _execution
from packfleet.worker._logcache import RESERVE_BYTES, RESERVE_NAME, _dumps

from .conftest import FAST, DemoProject, MakeAgent, Pki, write_home
from .helpers import journal
from .stubmaster import StubMaster

LINES = 3000

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "logcache"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], check=True)  # noqa: S607
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)  # noqa: S607


def record_bytes(stub: StubMaster, task_id: int) -> int:
    """How many bytes the journal records of a task's events take (what the disk had to hold)."""
    return sum(len(json.dumps({"e": dataclasses.asdict(e)})) + 1 for e in stub.lines(task_id))


async def test_a_full_cache_slows_the_package_and_every_line_arrives(
    tmp_path: Path, small_disk: Path, pki: Pki, stub: StubMaster, demo: DemoProject, make_agent: MakeAgent
) -> None:
    home = write_home(tmp_path / "w", pki, stub.endpoint, execution_log_cache_folder=str(small_disk))
    stub.add(demo.task(1, "hello", lines=LINES))
    agent = await make_agent(home, sleep=asyncio.sleep, timing=dataclasses.replace(FAST, log_stall_poll=0.05))
    await asyncio.wait_for(agent.run(burst=True), 120)

    report = stub.completion(1)
    messages = [e.message for e in stub.lines(1)]
    assert report.outcome == "succeeded", report.message
    assert [m for m in messages if m.startswith("line ")] == [f"line {i}" for i in range(LINES)]
    assert any(re.fullmatch(r"package 'hello' succeeded in .*", m) for m in messages)
    assert not any("events lost" in m for m in messages)
    assert [e.seq for e in stub.lines(1)] == list(range(1, len(messages) + 1))
    # The disk really was too small for the log: the journal filled it and was cut while it ran.
    assert record_bytes(stub, 1) > 256 * 1024


async def test_a_cache_that_stays_full_fails_the_attempt_with_the_reason_and_counts_the_loss(
    tmp_path: Path,
    small_disk: Path,
    pki: Pki,
    stub: StubMaster,
    demo: DemoProject,
    make_agent: MakeAgent,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Fresh rate limits, so an earlier test's line does not hold this one back.
    monkeypatch.setattr(_execution, "_loss_log", _execution._RateLimitedLog(60.0))
    monkeypatch.setattr(_execution, "_stall_log", _execution._RateLimitedLog(60.0))
    monkeypatch.setattr(_execution, "_resume_log", _execution._RateLimitedLog(60.0, logging.INFO))
    caplog.set_level(logging.INFO, logger="packfleet.worker")
    home = write_home(tmp_path / "w", pki, stub.endpoint, execution_log_cache_folder=str(small_disk))
    # The master takes no events while the package runs, so nothing leaves the full journal.
    stub.event_script = ["503"] * 100_000
    stub.add(demo.task(1, "hello", lines=LINES))
    timing = dataclasses.replace(FAST, log_stall_limit=2.0, log_stall_poll=0.05)
    agent = await make_agent(home, timing=timing)
    burst = asyncio.ensure_future(agent.run(burst=True))
    try:
        for _ in range(3000):  # bounded: 60 s
            if agent.cache.waiting_events and not agent.running:
                break  # the attempt has ended
            await asyncio.sleep(0.02)
        stub.event_script.clear()  # the master is back: what the journal holds goes out
        await asyncio.wait_for(burst, 120)
    finally:
        burst.cancel()

    report = stub.completion(1)
    events = stub.lines(1)
    messages = [e.message for e in events]
    assert report.outcome == "failed"
    assert "execution log cache" in report.message and "could not be written" in report.message
    assert "ExecutionLogCacheFolder" in report.message  # the fix
    assert any("could not be written" in e.message and e.source == "system" for e in events)
    [lost] = [int(m.split()[0]) for m in messages if re.fullmatch(r"\d+ events lost", m)]
    delivered = [m for m in messages if m.startswith("line ")]
    # What arrived is an unbroken prefix of the output, and the marker counts the rest.
    assert delivered == [f"line {i}" for i in range(len(delivered))]
    # task.log has every event the worker read, one line each (every message here is one line):
    # each one either reached the master or is counted. Not only the package's stdout lines: under
    # `make test` a package process's coverage hook may write to stderr as the kill lands.
    read = (agent.settings.tasks_root(home) / "1001-1" / "task.log").read_text().splitlines()
    own = (report.message, f"{lost} events lost")
    marks = [e for e in events if e.source == "system" and e.message in own]
    assert len(marks) == 2  # the attempt's own two, written to the cache, not read from the package
    not_delivered = len(read) - (len(events) - len(marks))
    assert lost == not_delivered > 0, [line for line in read if " stdout line " not in line]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # The worker log says it once each: no line per lost event.
    said = [r.getMessage() for r in caplog.records]
    assert len([m for m in said if "event message(s) were lost" in m]) == 1
    assert len([m for m in said if "the package's output is not read" in m]) == 1
    assert f"{lost} event message(s) were lost" in caplog.text


def _event(cache: LogCache, n: int, *, critical: bool = False) -> None:
    cache.append(1, 1, time="2024-01-01T00:00:00+00:00", level=20, source="stdout", message=f"{n:0200d}",
                 critical=critical)  # fmt: skip


def _fill(folder: Path) -> Path:
    """A file that takes every free byte of the tmpfs."""
    ballast = folder / "ballast"
    with ballast.open("wb", buffering=0) as handle:
        for size in [4096] * 10_000 + [256] * 16 + [1] * 256:  # bounded; ends with the last bytes
            try:
                handle.write(b"\0" * size)
            except OSError:
                continue
    return ballast


def test_a_delivered_segment_is_deleted_when_the_disk_fills_even_if_acknowledgements_follow_it(
    small_disk: Path,
) -> None:
    cache = LogCache(small_disk)
    cache.load()
    cache.open_attempt(1, 1, 1)
    for n in range(5):
        _event(cache, n)
    segment = small_disk / "journal-0000000001.jsonl"
    # A last event sized so that it and the acknowledgement after it fill the last page (tmpfs
    # allocates in pages): the event after them needs a page the disk no longer has.
    empty = EventMessage(1, 1, 1, 6, "2024-01-01T00:00:00+00:00", 20, "stdout", "")
    start, base = segment.stat().st_size, len(_dumps({"e": vars(empty)}))
    pad = next(
        m for m in range(8192) if (start + base + m + len(_dumps({"a": [1, start + base + m]}))) % 4096 == 0
    )
    cache.append(1, 1, time=empty.time, level=20, source="stdout", message="x" * pad)
    cache.sync()
    cache.acknowledge(cache.pending_events(10))  # an "a" record now ends the segment
    assert segment.stat().st_size % 4096 == 0 and segment.read_bytes().endswith(b"]}\n")
    ballast = _fill(small_disk)
    try:
        with pytest.raises(SettingsError, match="No space left"):
            _event(cache, 5)
        # The next try starts a segment and deletes the delivered one: there is room again.
        _event(cache, 5)
        assert [p.name for p in journal(small_disk)] == ["ballast", "journal-0000000002.jsonl"]
    finally:
        ballast.unlink()
    cache.close()


def test_the_reserve_takes_the_records_that_must_not_be_lost_when_the_disk_is_full(small_disk: Path) -> None:
    cache = LogCache(small_disk)
    cache.load()
    assert (small_disk / RESERVE_NAME).stat().st_size == RESERVE_BYTES
    cache.open_attempt(1, 1, 1)
    ballast = _fill(small_disk)
    try:
        with pytest.raises(SettingsError, match="No space left"):
            _event(cache, 0)
        _event(cache, 0, critical=True)  # "N events lost", the failure reason
        cache.finish(1, 1, CompletionReport(1, 1, "failed", None, "the cache was full"))
        assert not (small_disk / RESERVE_NAME).exists()
        cache.sync()
        assert [e.seq for e in cache.pending_events(10)] == [1]
    finally:
        ballast.unlink()
    cache.close()
