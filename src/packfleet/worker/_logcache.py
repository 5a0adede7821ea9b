"""The execution log cache: every event message and completion report is on disk before it is sent.

SSIS's worker keeps undelivered execution logs in ``ExecutionLogCacheFolder`` so that a master that
is down for a while loses nothing. packfleet keeps them in one append-only journal shared by all task
attempts, cut into segments of about :data:`SEGMENT_BYTES`::

    <cache>/journal-0000000001.jsonl     one JSON record per line, in the order they happened
    <cache>/journal-0000000002.jsonl     the active segment (the highest number)

    {"e": {EventMessage}}                an event, numbered per attempt (``seq``)
    {"d": [task_id, attempt, report]}    the attempt ended; ``report`` null: no report is due
    {"a": [segment, offset]}             the master has every event before this position
    {"s": [task_id, attempt]}            the master accepted (or called stale) the attempt's report

A record is one ``write(2)``: a ``kill -9`` loses nothing written (the page cache outlives the
process), a power cut at most what was never fsynced. Durability is group-committed, as database
write-ahead logs do: :meth:`LogCache.commit` fsyncs everything written since the last commit with one
``fsync`` per touched segment, off the event loop. The sender hands out only records a commit
covers, and it sends them while that commit's fsync runs (:meth:`LogCache.start_commit`): what the
master acknowledges is stored there, and what it does not is durable here by the end of the pass,
so nothing is lost either way, and the fsync is no longer on each report's path (about half a
millisecond of an idle no-op's round trip, make bench). Per-task files with an fsync each cost the
worker a third of its CPU under load (``make bench``).

Acknowledgements and settlements are written but never fsynced: losing them to a power cut only
re-sends events the master drops by their ``seq`` and reports it accepts again (both idempotent).
Events are acknowledged as a prefix of the journal, so one position says what the master has. A
segment is deleted once every event in it is acknowledged and every report in it settled. When
nothing at all is pending, the older segments are deleted and the active one is kept for the next
records (a new file costs an idle worker's next task two extra fsyncs); it is deleted too when it is
full, at start-up and when the worker stops.

A full disk: a write that fails is cut off, and the next record starts a new segment, so the full
one is deleted as soon as the master has its events (the caller holds the package back meanwhile).
``<cache>/reserve`` keeps :data:`RESERVE_BYTES` aside for the records that must get out even then.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
from dataclasses import dataclass
from json.encoder import encode_basestring as _string
from pathlib import Path
from typing import Any

from packfleet.errors import ProtocolError, SettingsError
from packfleet.protocol import CompletionReport, EventMessage, EventSource, decode, encode

log = logging.getLogger("packfleet.worker")

#: A segment is closed for writing once it is this large (it is deleted as a whole, so a smaller
#: one frees disk sooner after an outage; a larger one means fewer files and directory fsyncs).
SEGMENT_BYTES = 4 * 1024 * 1024
#: Space held back in ``<cache>/reserve`` for the records that must get out when the disk is full:
#: an attempt's "N events lost" marker, the reason it failed and its completion report. Released
#: when such a write finds the disk full, taken again once segments are deleted.
RESERVE_BYTES = 64 * 1024
RESERVE_NAME = "reserve"

_SEGMENT = re.compile(r"journal-(\d{10})\.jsonl")
_FOLDER_FIX = "packfleet settings set worker ExecutionLogCacheFolder DIR (a folder this account may write)"

#: A place in the journal: (segment number, byte offset); tuples order the way the journal does.
Position = tuple[int, int]


def _event(fields: Any) -> EventMessage:
    """An event record read back, built directly from the fields this module wrote.

    A record the dataclass does not fit raises TypeError. The protocol's checking decode cost the
    sender about 5 % of the worker's time under load (make bench); the master checks each event
    it receives anyway.
    """
    if not isinstance(fields, dict):
        raise TypeError(f"an event record is a JSON object, not {type(fields).__name__}")
    return EventMessage(**fields)


def _dumps(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def _event_record(event: EventMessage) -> bytes:
    """``_dumps({"e": vars(event)})``, the same bytes, written out field by field.

    An event record is the one record every line of every package costs: ``json.dumps`` with
    non-default options builds a new encoder per call, several times the cost of escaping the
    three strings (make bench).
    """
    return (
        f'{{"e":{{"execution_id":{event.execution_id:d},"task_id":{event.task_id:d},'
        f'"attempt":{event.attempt:d},"seq":{event.seq:d},"time":{_string(event.time)},'
        f'"level":{event.level:d},"source":{_string(event.source)},'
        f'"message":{_string(event.message)}}}}}\n'
    ).encode()


@dataclass
class _Attempt:
    execution_id: int
    task_id: int
    attempt: int
    next_seq: int = 1
    acked_seq: int = 0
    open: bool = False
    done: bool = False
    report: CompletionReport | None = None
    #: Where the ``d`` record ends (the report may go out once it is committed) and its segment.
    done_at: Position = (0, 0)

    @property
    def fully_acked(self) -> bool:
        return self.acked_seq >= self.next_seq - 1

    @property
    def settled(self) -> bool:
        return self.done and self.report is None and self.fully_acked


def _carries(seqs: set[int] | None, entry: _Attempt) -> bool:
    """Whether ``seqs`` holds every event of ``entry`` the master has not acknowledged yet."""
    last = entry.next_seq - 1
    if not seqs or last not in seqs or len(seqs) < last - entry.acked_seq:
        return False
    return all(seq in seqs for seq in range(entry.acked_seq + 1, last))


class LogCache:
    """Event messages and completion reports of this worker's task attempts, until the master has them.

    >>> cache = LogCache(home / "logcache"); cache.load()          # doctest: +SKIP
    >>> cache.open_attempt(execution_id=7, task_id=7, attempt=1)    # doctest: +SKIP
    >>> cache.append(7, 1, time="...", level=20, source="stdout", message="hello").seq  # doctest: +SKIP
    1
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._attempts: dict[tuple[int, int], _Attempt] = {}
        #: Segment number -> its size in bytes, for every segment on disk.
        self._sizes: dict[int, int] = {}
        #: Segment number -> how many unsettled reports its ``d`` records hold.
        self._reports: dict[int, int] = {}
        #: Segment number -> where its last event record ends: once the master has that event, the
        #: segment holds nothing it needs (acknowledgement records after it do not count).
        self._event_ends: dict[int, int] = {}
        self._active = 0
        self._fd: int | None = None
        self._cursor: Position = (0, 0)
        self._committed: Position = (0, 0)
        #: The end of what a finished or running commit covers: what the sender may hand out.
        self._sendable: Position = (0, 0)
        self._commit_task: asyncio.Future[None] | None = None
        #: Closed-for-writing segments whose fd still waits for the next commit's fsync.
        self._unsynced: list[int] = []
        self._dir_dirty = False
        self._committing = False
        #: End position of each event last handed out by :meth:`pending_events`, by (task, attempt, seq).
        self._inflight: dict[tuple[int, int, int], Position] = {}
        #: A write failed (a full disk): the next record starts a new segment, so the full one can
        #: be deleted as soon as the master has its events, which is what frees the space.
        self._roll = False
        self._reserved = False

    def _path(self, segment: int) -> Path:
        return self.folder / f"journal-{segment:010d}.jsonl"

    # -- start-up ---------------------------------------------------------------------------------

    def load(self) -> int:
        """Read what a previous run left behind; return how many events still wait for the master.

        An attempt without a ``d`` record was running when that run stopped. Its process is gone
        with it, so the attempt is closed here without a completion report: the master requeues the
        task when its lease expires, as SSIS Scale Out does when it loses a worker. Its events are
        still delivered.
        """
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise SettingsError(
                f"cannot create the execution log cache {self.folder}: {exc.strerror or exc}",
                fix=_FOLDER_FIX,
            ) from exc
        names = [p.name for p in self.folder.iterdir()]
        segments = sorted(int(found[1]) for name in names if (found := _SEGMENT.fullmatch(name)))
        legacy = sorted(name for name in names if name.endswith(".events.jsonl"))
        if legacy:
            log.warning(
                "the execution log cache %s holds %d per-task file(s) of an older packfleet (%s...); "
                "they are left in place and not sent",
                self.folder,
                len(legacy),
                legacy[0],
            )
        contents = {segment: self._read_whole(segment) for segment in segments}
        cursor: Position = (segments[0], 0) if segments else (0, 0)
        for data in contents.values():
            for line in data.splitlines(keepends=True):
                if line.startswith(b'{"a":'):
                    with contextlib.suppress(ValueError, TypeError):
                        at = json.loads(line)["a"]
                        cursor = max(cursor, (int(at[0]), int(at[1])))
        self._cursor = cursor
        for segment, data in contents.items():
            self._replay(segment, data)
        if segments:
            self._active = segments[-1]
            self._fd = self._open_segment(self._active)
        self._committed = self._sendable = (self._active, self._sizes.get(self._active, 0))
        self._reserved = (self.folder / RESERVE_NAME).exists()
        self._take_reserve()
        waiting = 0
        for entry in list(self._attempts.values()):
            if not entry.done:
                log.info(
                    "task %s attempt %s was running when the worker last stopped; its %d cached "
                    "event(s) will be sent, the master requeues the task when its lease expires",
                    entry.task_id,
                    entry.attempt,
                    entry.next_seq - 1 - entry.acked_seq,
                )
                entry.done = True
            waiting += entry.next_seq - 1 - entry.acked_seq
            self._forget_if_settled(entry)
        self._collect(whole=True)
        return waiting

    def _read_whole(self, segment: int) -> bytes:
        """A segment's complete lines, fsynced: what a killed process wrote may not be on disk yet."""
        path = self._path(segment)
        with open(path, "r+b") as handle:
            data = handle.read()
            complete = data.rfind(b"\n") + 1
            if complete < len(data):
                # A record cut short by a crash was never sent (only committed records are).
                handle.truncate(complete)
                data = data[:complete]
            os.fsync(handle.fileno())
        self._sizes[segment] = len(data)
        return data

    def _replay(self, segment: int, data: bytes) -> None:
        offset = 0
        for line in data.splitlines(keepends=True):
            offset += len(line)
            end = (segment, offset)
            try:
                record = json.loads(line)
                if "e" in record:
                    self._event_ends[segment] = offset
                    event = decode(EventMessage, record["e"])
                    entry = self._entry(event.execution_id, event.task_id, event.attempt)
                    entry.next_seq = event.seq + 1
                    if end <= self._cursor:
                        entry.acked_seq = event.seq
                elif "d" in record:
                    task_id, attempt, report = record["d"]
                    entry = self._entry(0, int(task_id), int(attempt))
                    entry.done = True
                    entry.report = None if report is None else decode(CompletionReport, report)
                    entry.done_at = end
                    if entry.report is not None:
                        self._reports[segment] = self._reports.get(segment, 0) + 1
                elif "s" in record:
                    entry_or_none = self._attempts.get((int(record["s"][0]), int(record["s"][1])))
                    if entry_or_none is not None:
                        self._drop_report(entry_or_none)
            except (ValueError, TypeError, KeyError, ProtocolError) as exc:
                log.warning("skipping an unreadable record of %s: %s", self._path(segment), exc)

    def _entry(self, execution_id: int, task_id: int, attempt: int) -> _Attempt:
        entry = self._attempts.get((task_id, attempt))
        if entry is None:
            entry = self._attempts[(task_id, attempt)] = _Attempt(execution_id, task_id, attempt)
        if execution_id:
            entry.execution_id = execution_id
        return entry

    # -- writing ----------------------------------------------------------------------------------

    def _open_segment(self, segment: int) -> int:
        path = self._path(segment)
        try:
            return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SettingsError(
                f"cannot write the execution log cache file {path}: {exc.strerror or exc}", fix=_FOLDER_FIX
            ) from exc

    def _take_reserve(self) -> None:
        """Hold :data:`RESERVE_BYTES` back for :meth:`release_reserve`, if the disk has them now."""
        if self._reserved:
            return
        path = self.folder / RESERVE_NAME
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                try:
                    os.posix_fallocate(fd, 0, RESERVE_BYTES)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    os.write(fd, bytes(RESERVE_BYTES))  # a file system without fallocate(2)
            finally:
                os.close(fd)
        except OSError:
            with contextlib.suppress(OSError):
                path.unlink()
            return
        self._reserved = True

    def release_reserve(self) -> bool:
        """Free the reserved space for the records that must be written now; False if none was held."""
        if not self._reserved:
            return False
        with contextlib.suppress(FileNotFoundError):
            (self.folder / RESERVE_NAME).unlink()
        self._reserved = False
        log.warning(
            "the execution log cache %s is full: using its reserve to record what was lost", self.folder
        )
        return True

    def _write(self, data: bytes, *, critical: bool = False) -> Position:
        """Append one record to the active segment (starting one if needed); return where it ends.

        A ``critical`` record (a loss marker, a completion) that finds the disk full is written
        into the space :meth:`release_reserve` frees.
        """
        try:
            return self._append(data)
        except SettingsError as exc:
            cause = exc.__cause__
            if critical and isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
                if self.release_reserve():
                    return self._append(data)
            raise

    def _append(self, data: bytes) -> Position:
        if self._fd is None or self._sizes[self._active] >= SEGMENT_BYTES or self._roll:
            fd = self._open_segment(self._active + 1)  # before anything changes: it may fail too
            previous, self._fd = self._fd, fd
            self._active += 1
            self._sizes[self._active] = 0
            self._dir_dirty = True  # a new name: the directory entry must be durable too
            if self._roll:
                # The full segment may already be all delivered (only acknowledgements after its
                # last event): delete it now, or nothing would, and the disk would stay full.
                self._roll = False
                self._delete_delivered()
            if previous is not None:
                if self._active - 1 in self._sizes or self._committing:
                    self._unsynced.append(previous)  # the next commit fsyncs and closes it
                else:
                    os.close(previous)  # deleted: closing is what gives its space back
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            # A record cut short (a full disk) must not glue itself to the next one: cut it off, so
            # every later record starts where the positions handed out say it does.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._sizes[self._active])
            self._roll = self._sizes[self._active] > 0
            raise SettingsError(
                f"cannot write the execution log cache file {self._path(self._active)}: "
                f"{exc.strerror or exc}",
                fix=_FOLDER_FIX,
            ) from exc
        self._sizes[self._active] += len(data)
        return (self._active, self._sizes[self._active])

    def open_attempt(self, execution_id: int, task_id: int, attempt: int) -> None:
        """Start an attempt (its events are numbered from 1); nothing is written until it has one."""
        self._entry(execution_id, task_id, attempt).open = True

    def append(
        self,
        task_id: int,
        attempt: int,
        *,
        time: str,
        level: int,
        source: EventSource,
        message: str,
        critical: bool = False,
    ) -> EventMessage:
        """Number the next event of an attempt and write it to the journal; return it as sent.

        Raises :class:`SettingsError` when it cannot be written (a full disk); nothing is numbered
        then, so the caller may try the same event again.
        """
        entry = self._attempts[(task_id, attempt)]
        if not entry.open:
            raise ValueError(f"task {task_id} attempt {attempt} is not open")  # a bug
        event = EventMessage(
            execution_id=entry.execution_id,
            task_id=task_id,
            attempt=attempt,
            seq=entry.next_seq,
            time=time,
            level=level,
            source=source,
            message=message,
        )
        segment, offset = self._write(_event_record(event), critical=critical)
        self._event_ends[segment] = offset
        entry.next_seq += 1
        return event

    def finish(self, task_id: int, attempt: int, report: CompletionReport | None) -> None:
        """Close an attempt: its events are final, and ``report`` (None: none is due) waits to be sent."""
        entry = self._attempts[(task_id, attempt)]
        entry.open = False
        entry.done = True
        entry.report = report
        if report is not None or not entry.fully_acked:
            record = _dumps({"d": [task_id, attempt, encode(report) if report else None]})
            entry.done_at = self._write(record, critical=True)
            if report is not None:
                self._reports[entry.done_at[0]] = self._reports.get(entry.done_at[0], 0) + 1
        self._forget_if_settled(entry)
        self._collect()

    async def commit(self) -> None:
        """Make everything written so far durable: one fsync per touched segment, in a thread."""
        await (await self.start_commit())

    async def start_commit(self) -> asyncio.Future[None]:
        """Start a commit of everything written so far and return when what it covers may be sent.

        The returned future is done once that is durable. The event loop goes on reading package
        output meanwhile; records written from now on are not covered and wait for the next
        commit. A commit still running (a cancelled pass's) is waited for first.
        """
        while (previous := self._commit_task) is not None and not previous.done():
            with contextlib.suppress(Exception):  # its own caller saw that failure
                await asyncio.shield(previous)
        self._commit_task = self._begin()
        return self._commit_task

    def _begin(self) -> asyncio.Future[None]:
        fds, retired, until, sync_dir = self._commit_plan()
        self._sendable = max(self._sendable, until)
        if not fds and not sync_dir:
            self._committed = max(self._committed, until)
            self._close_retired(retired)
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        self._committing = True
        return asyncio.ensure_future(self._fsync_then(fds, retired, until, sync_dir))

    async def _fsync_then(self, fds: list[int], retired: list[int], until: Position, sync_dir: bool) -> None:
        try:
            await asyncio.to_thread(self._fsync, fds, sync_dir)
        finally:
            self._committing = False
        self._committed = max(self._committed, until)
        self._close_retired(retired)

    def sync(self) -> None:
        """:meth:`commit` on the calling thread (start-up, shutdown and tests)."""
        fds, retired, until, sync_dir = self._commit_plan()
        self._fsync(fds, sync_dir)
        self._committed = max(self._committed, until)
        self._sendable = max(self._sendable, until)
        self._close_retired(retired)

    def _commit_plan(self) -> tuple[list[int], list[int], Position, bool]:
        """What a commit fsyncs, which retired fds it may close after, and what it makes durable.

        Only fds retired *before* the fsync are closed after it: one retired while it ran (its
        segment filled up, or the journal was emptied) may hold writes it did not cover.
        """
        until: Position = (self._active, self._sizes.get(self._active, 0))
        retired = list(self._unsynced)
        fds = list(retired)
        if self._fd is not None and until > self._committed:
            fds.append(self._fd)
        sync_dir, self._dir_dirty = self._dir_dirty, False
        return fds, retired, until, sync_dir

    def _fsync(self, fds: list[int], sync_dir: bool) -> None:
        for fd in fds:
            os.fsync(fd)
        if sync_dir:
            folder = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)

    def _close_retired(self, retired: list[int]) -> None:
        for fd in retired:
            self._unsynced.remove(fd)
            os.close(fd)

    def close(self) -> None:
        """Make everything durable and close the journal (the worker is stopping; it stays cached).

        A journal with nothing pending any more is deleted.
        """
        self.sync()
        self._collect(whole=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for entry in self._attempts.values():
            entry.open = False

    # -- sending ----------------------------------------------------------------------------------

    def pending_events(self, limit: int) -> list[EventMessage]:
        """Up to ``limit`` unacknowledged events a commit covers, in the order they were written."""
        batch: list[EventMessage] = []
        self._inflight.clear()
        segment, offset = self._cursor
        for number in sorted(s for s in self._sizes if s >= segment):
            if len(batch) >= limit or (number, 0) >= self._sendable:
                break
            start = offset if number == segment else 0
            stop = self._sendable[1] if number == self._sendable[0] else self._sizes[number]
            if start >= stop:
                continue
            with open(self._path(number), "rb") as handle:
                handle.seek(start)
                data = handle.read(stop - start)
            end = start
            for line in data.splitlines(keepends=True):
                end += len(line)
                if not line.startswith(b'{"e":'):
                    continue
                try:
                    event = _event(json.loads(line)["e"])
                except (ValueError, KeyError, TypeError, ProtocolError) as exc:
                    log.warning("skipping an unreadable event in %s: %s", self._path(number), exc)
                    continue
                self._inflight[(event.task_id, event.attempt, event.seq)] = (number, end)
                batch.append(event)
                if len(batch) >= limit:
                    break
        return batch

    def acknowledge(self, events: list[EventMessage]) -> None:
        """The master has ``events`` (or they were given up): a prefix of the last pending batch.

        Events are acknowledged in journal order, so the position after the last of them says
        everything before it is delivered.
        """
        furthest: Position | None = None
        for event in events:
            at = self._inflight.get((event.task_id, event.attempt, event.seq))
            if at is None:
                continue
            furthest = at if furthest is None else max(furthest, at)
            entry = self._attempts.get((event.task_id, event.attempt))
            if entry is not None:
                entry.acked_seq = max(entry.acked_seq, event.seq)
        if furthest is None or furthest <= self._cursor:
            return
        self._cursor = furthest
        for key in [k for k, at in self._inflight.items() if at <= furthest]:
            del self._inflight[key]
        for entry in [e for e in self._attempts.values() if e.settled]:
            self._forget_if_settled(entry)
        if self._collect():
            return
        self._note(_dumps({"a": list(furthest)}))

    def pending_completions(self) -> list[CompletionReport]:
        """Reports a commit covers, of ended attempts whose events the master has all.

        Reports follow their events.
        """
        return [
            entry.report
            for entry in self._attempts.values()
            if entry.report is not None and entry.fully_acked and entry.done_at <= self._sendable
        ]

    def completions_with(self, batch: list[EventMessage]) -> list[CompletionReport]:
        """:meth:`pending_completions` plus the reports whose last unacknowledged events are all in
        ``batch``: what may go in one request with ``batch``, the master storing the events first.

        Each attempt is checked seq by seq, so a report never overtakes an event that is neither
        acknowledged nor carried, whatever part of the journal ``batch`` is.
        """
        carried: dict[tuple[int, int], set[int]] = {}
        for event in batch:
            carried.setdefault((event.task_id, event.attempt), set()).add(event.seq)
        return [
            entry.report
            for entry in self._attempts.values()
            if entry.report is not None
            and entry.done_at <= self._sendable
            and (entry.fully_acked or _carries(carried.get((entry.task_id, entry.attempt)), entry))
        ]

    def settle(self, task_id: int, attempt: int) -> None:
        """The master accepted (or called stale) the report of an attempt: forget the attempt."""
        entry = self._attempts.get((task_id, attempt))
        if entry is None or entry.report is None:
            return
        self._drop_report(entry)
        self._forget_if_settled(entry)
        if not self._collect():
            self._note(_dumps({"s": [task_id, attempt]}))

    def _note(self, record: bytes) -> None:
        """Write an acknowledgement or settlement, which may be lost: without it, a restart only
        sends again what the master drops (events by ``seq``) or accepts again (reports)."""
        try:
            self._write(record)
        except SettingsError as exc:
            log.debug("an acknowledgement record was not written: %s", exc)

    def _drop_report(self, entry: _Attempt) -> None:
        if entry.report is not None:
            entry.report = None
            segment = entry.done_at[0]
            self._reports[segment] = self._reports.get(segment, 1) - 1

    def _forget_if_settled(self, entry: _Attempt) -> None:
        if entry.settled and not entry.open:
            self._attempts.pop((entry.task_id, entry.attempt), None)

    def _collect(self, *, whole: bool = False) -> bool:
        """Delete segments nobody needs; True when that was all of them (nothing is pending).

        When nothing is pending while the worker serves, the active segment is kept (unless it is
        full, or ``whole`` asks for everything: start-up and stopping) and the next record is
        appended to it. Deleting it meant that an idle worker's next task created a new file,
        and a new file's fsync plus the directory's cost three times an append's fsync on the
        bench machine, on the path of every execution that finds the worker idle (make bench).
        """
        if not self._sizes:
            return not self._attempts
        if not self._attempts and not whole and self._fd is not None:
            if self._sizes.get(self._active, 0) < SEGMENT_BYTES:
                self._delete_delivered()
                return False
        if not self._attempts:
            # Nothing pending: every record is obsolete. The next one starts a new segment.
            if self._fd is not None:
                if self._committing:
                    self._unsynced.append(self._fd)  # closed once the running fsync returns
                else:
                    os.close(self._fd)
                self._fd = None
            for number in list(self._sizes):
                self._unlink(number)
            self._cursor = (self._active + 1, 0)
            self._take_reserve()
            return True
        self._delete_delivered()
        return False

    def _delete_delivered(self) -> None:
        """Delete closed segments whose events the master has and whose reports are settled."""
        deleted = False
        for number in sorted(self._sizes):
            if number == self._active:
                break
            if self._cursor < (number, self._event_ends.get(number, 0)) or self._reports.get(number, 0) > 0:
                continue
            self._unlink(number)
            deleted = True
        if deleted:
            self._take_reserve()

    def _unlink(self, number: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(number).unlink()
        self._sizes.pop(number, None)
        self._reports.pop(number, None)
        self._event_ends.pop(number, None)

    # -- state ------------------------------------------------------------------------------------

    @property
    def waiting_events(self) -> int:
        return sum(entry.next_seq - 1 - entry.acked_seq for entry in self._attempts.values())

    @property
    def idle(self) -> bool:
        """Nothing left to deliver: no unacknowledged event, no unaccepted report, no open attempt."""
        return not any(
            entry.open or not entry.fully_acked or entry.report is not None
            for entry in self._attempts.values()
        )
