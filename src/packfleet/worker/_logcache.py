"""The execution log cache: every event message and completion report is on disk before it is sent.

SSIS's worker keeps undelivered execution logs in ``ExecutionLogCacheFolder`` so that a master that
is down for a while loses nothing. packfleet does the same, one task attempt at a time::

    <cache>/<task_id>-<attempt>.events.jsonl   one EventMessage per line, append-only
    <cache>/<task_id>-<attempt>.acked          {"seq": 41, "offset": 5123}: what the master has
    <cache>/<task_id>-<attempt>.done.json      {"report": {...}} once the task ended (null: no report)

Lines are written with one ``write(2)`` each and fsynced in batches (:meth:`LogCache.sync`, which the
sender calls before every request), so a crash loses at most what was never sent. The acknowledged
position only moves forward after the master answered; a crash between its answer and the write of
``.acked`` re-sends a few events, which the master drops by their ``seq`` (the protocol makes event
delivery idempotent). An attempt's files are deleted once its events are acknowledged and its
completion was accepted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from packfleet.errors import ProtocolError, SettingsError
from packfleet.protocol import CompletionReport, EventMessage, EventSource, decode, encode

log = logging.getLogger("packfleet.worker")

_EVENTS = ".events.jsonl"
_ACKED = ".acked"
_DONE = ".done.json"
_KEY = re.compile(r"(\d+)-(\d+)")
_FOLDER_FIX = "packfleet settings set worker ExecutionLogCacheFolder DIR (a folder this account may write)"


@dataclass
class _Attempt:
    execution_id: int
    task_id: int
    attempt: int
    path: Path
    next_seq: int = 1
    acked_seq: int = 0
    acked_offset: int = 0
    fd: int | None = None
    dirty: bool = False
    done: bool = False
    report: CompletionReport | None = None
    #: End offsets of the events last handed out by :meth:`LogCache.pending_events`, by seq.
    inflight: dict[int, int] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.task_id}-{self.attempt}"

    def sibling(self, suffix: str) -> Path:
        return self.path.with_name(self.key + suffix)

    @property
    def fully_acked(self) -> bool:
        return self.acked_seq >= self.next_seq - 1


def _write_small(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` atomically: a crash leaves the old content or the new one, never half.

    ``durable=False`` skips the fsync (about 0.5 ms on the event loop on ext4): for a file whose
    loss after a power cut only costs a harmless re-send, the rename alone keeps it whole.
    """
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


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

    # -- start-up ---------------------------------------------------------------------------------

    def load(self) -> int:
        """Read what a previous run left behind; return how many events still wait for the master.

        An attempt without a ``.done.json`` was running when that run stopped. Its process is gone
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
        waiting = 0
        for path in sorted(self.folder.glob("*" + _EVENTS), key=lambda p: (p.stat().st_mtime, p.name)):
            found = _KEY.fullmatch(path.name.removesuffix(_EVENTS))
            if found is None:
                continue
            task_id, attempt = int(found[1]), int(found[2])
            entry = self._replay(path, task_id, attempt)
            self._attempts[(task_id, attempt)] = entry
            if not entry.done:
                log.info(
                    "task %s attempt %s was running when the worker last stopped; its %d cached "
                    "event(s) will be sent, the master requeues the task when its lease expires",
                    task_id,
                    attempt,
                    entry.next_seq - 1 - entry.acked_seq,
                )
                self._write_done(entry, None)
            waiting += entry.next_seq - 1 - entry.acked_seq
            self._forget_if_settled(entry)
        for suffix in (_ACKED, _DONE):
            # Left by a crash while an attempt was being forgotten (its events file goes last).
            for stray in self.folder.glob("*" + suffix):
                if not stray.with_name(stray.name.removesuffix(suffix) + _EVENTS).exists():
                    stray.unlink()
        return waiting

    def _replay(self, path: Path, task_id: int, attempt: int) -> _Attempt:
        entry = _Attempt(execution_id=0, task_id=task_id, attempt=attempt, path=path)
        acked = entry.sibling(_ACKED)
        if acked.exists():
            state = json.loads(acked.read_text("utf-8"))
            entry.acked_seq, entry.acked_offset = int(state["seq"]), int(state["offset"])
        data = path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            # A line cut short by a crash was never sent (the sender only reads whole lines).
            with open(path, "r+b") as handle:
                handle.truncate(complete)
        entry.next_seq = entry.acked_seq + 1
        for line in data[entry.acked_offset : complete].splitlines():
            try:
                event = decode(EventMessage, json.loads(line))
            except (ValueError, ProtocolError) as exc:
                log.warning("skipping an unreadable line of %s: %s", path, exc)
                continue
            entry.execution_id = event.execution_id
            entry.next_seq = event.seq + 1
        done = entry.sibling(_DONE)
        if done.exists():
            entry.done = True
            report = json.loads(done.read_text("utf-8"))["report"]
            entry.report = None if report is None else decode(CompletionReport, report)
        return entry

    # -- writing ----------------------------------------------------------------------------------

    def open_attempt(self, execution_id: int, task_id: int, attempt: int) -> None:
        """Start the event file of a task attempt (events of one attempt are numbered from 1)."""
        path = self.folder / f"{task_id}-{attempt}{_EVENTS}"
        entry = self._attempts.get((task_id, attempt))
        if entry is None:
            entry = _Attempt(execution_id=execution_id, task_id=task_id, attempt=attempt, path=path)
            self._attempts[(task_id, attempt)] = entry
        try:
            entry.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SettingsError(
                f"cannot write the execution log cache file {path}: {exc.strerror or exc}", fix=_FOLDER_FIX
            ) from exc

    def append(
        self, task_id: int, attempt: int, *, time: str, level: int, source: EventSource, message: str
    ) -> EventMessage:
        """Number the next event of an attempt and write it to its file; return it as sent."""
        entry = self._attempts[(task_id, attempt)]
        if entry.fd is None:
            raise ValueError(f"task {task_id} attempt {attempt} has no open event file")  # a bug
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
        line = json.dumps(encode(event), separators=(",", ":"), ensure_ascii=False) + "\n"
        try:
            os.write(entry.fd, line.encode("utf-8"))
        except OSError as exc:
            raise SettingsError(
                f"cannot write the execution log cache file {entry.path}: {exc.strerror or exc}",
                fix=_FOLDER_FIX,
            ) from exc
        entry.next_seq += 1
        entry.dirty = True
        return event

    def sync(self) -> None:
        """fsync every event file written since the last call (the batched half of write-ahead)."""
        for entry in self._attempts.values():
            if entry.dirty and entry.fd is not None:
                os.fsync(entry.fd)
                entry.dirty = False

    def finish(self, task_id: int, attempt: int, report: CompletionReport | None) -> None:
        """Close an attempt: its events are final, and ``report`` (None: none is due) waits to be sent."""
        entry = self._attempts[(task_id, attempt)]
        if entry.fd is not None:
            os.fsync(entry.fd)
            os.close(entry.fd)
            entry.fd = None
            entry.dirty = False
        self._write_done(entry, report)
        self._forget_if_settled(entry)

    def _write_done(self, entry: _Attempt, report: CompletionReport | None) -> None:
        payload = {"report": None if report is None else encode(report)}
        _write_small(entry.sibling(_DONE), json.dumps(payload).encode())
        entry.done = True
        entry.report = report

    def close(self) -> None:
        """Flush and close open event files (the worker is stopping; their attempts stay cached)."""
        for entry in self._attempts.values():
            if entry.fd is not None:
                os.fsync(entry.fd)
                os.close(entry.fd)
                entry.fd = None
                entry.dirty = False

    # -- sending ----------------------------------------------------------------------------------

    def pending_events(self, limit: int) -> list[EventMessage]:
        """Up to ``limit`` unacknowledged events, oldest attempt first, each attempt in seq order."""
        batch: list[EventMessage] = []
        for entry in list(self._attempts.values()):
            if len(batch) >= limit:
                break
            entry.inflight.clear()
            if entry.fully_acked:
                continue
            offset = entry.acked_offset
            with open(entry.path, "rb") as handle:
                handle.seek(offset)
                for line in handle:
                    if not line.endswith(b"\n") or len(batch) >= limit:
                        break
                    offset += len(line)
                    try:
                        event = decode(EventMessage, json.loads(line))
                    except (ValueError, ProtocolError):
                        continue
                    entry.inflight[event.seq] = offset
                    batch.append(event)
        return batch

    def acknowledge(self, events: list[EventMessage]) -> None:
        """The master has ``events`` (or they were given up): move each attempt's acked position."""
        touched: dict[tuple[int, int], int] = {}
        for event in events:
            key = (event.task_id, event.attempt)
            touched[key] = max(touched.get(key, 0), event.seq)
        for key, seq in touched.items():
            entry = self._attempts.get(key)
            if entry is None or seq <= entry.acked_seq or seq not in entry.inflight:
                continue
            entry.acked_seq, entry.acked_offset = seq, entry.inflight[seq]
            for done_seq in [s for s in entry.inflight if s <= seq]:
                del entry.inflight[done_seq]
            state = {"seq": entry.acked_seq, "offset": entry.acked_offset}
            # Not fsynced (make bench: one fsync per task on the event loop): an .acked position lost
            # to a power cut only re-sends events the master already has and drops by their seq.
            _write_small(entry.sibling(_ACKED), json.dumps(state).encode(), durable=False)
            self._forget_if_settled(entry)

    def pending_completions(self) -> list[CompletionReport]:
        """Reports of ended attempts whose events the master has all: a report follows its events."""
        return [
            entry.report
            for entry in self._attempts.values()
            if entry.done and entry.report is not None and entry.fully_acked
        ]

    def settle(self, task_id: int, attempt: int) -> None:
        """The master accepted (or called stale) the report of an attempt: forget the attempt."""
        entry = self._attempts.get((task_id, attempt))
        if entry is not None:
            entry.report = None
            self._forget_if_settled(entry)

    def _forget_if_settled(self, entry: _Attempt) -> None:
        if not (entry.done and entry.report is None and entry.fully_acked):
            return
        for suffix in (_DONE, _ACKED, _EVENTS):  # events last: it is what `load` looks for
            with contextlib.suppress(FileNotFoundError):
                entry.sibling(suffix).unlink()
        self._attempts.pop((entry.task_id, entry.attempt), None)

    # -- state ------------------------------------------------------------------------------------

    @property
    def waiting_events(self) -> int:
        return sum(entry.next_seq - 1 - entry.acked_seq for entry in self._attempts.values())

    @property
    def idle(self) -> bool:
        """Nothing left to deliver: no unacknowledged event, no unaccepted report, no open attempt."""
        return not any(
            entry.fd is not None or not entry.fully_acked or entry.report is not None
            for entry in self._attempts.values()
        )
