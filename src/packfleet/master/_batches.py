"""Catalog calls that arrive together, made together: worker heartbeats and certificate lookups.

A fleet's heartbeats come in waves (a master restart, a rotation step, thousands of workers on a
10 s interval), and on SQLite every transaction queues on the catalog's one writer thread: a
heartbeat a transaction, each with its own ``BEGIN IMMEDIATE`` and commit, is what made the writer
the fleet's bottleneck. Here the heartbeats that arrive while a batch is being written wait for the
next one, which takes all of them (up to :data:`MAX_BATCH`): an idle master writes a lone heartbeat
at once, a busy one writes them in bulk, and none waits for a timer. The lookups of who a
certificate belongs to (``catalog.authorize``, on a principal cache miss: after a restart every
worker's first request misses) are read the same way, many in one query.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

from packfleet.catalog import HeartbeatOutcome, Principal, WorkerInfo
from packfleet.errors import PackfleetError
from packfleet.master._state import MasterState
from packfleet.thumbprint import normalize_thumbprint

#: The most heartbeats one transaction carries: a bound on how long the writer is held at once.
MAX_BATCH = 500


@dataclass
class _Pending:
    thumbprint: str
    info: WorkerInfo
    pem: bytes | None
    answer: asyncio.Future[HeartbeatOutcome] = field(repr=False)


class HeartbeatWriter:
    """Queues heartbeats and writes them with ``catalog.worker_heartbeats``, one batch at a time."""

    def __init__(self, state: MasterState) -> None:
        self._state = state
        self._pending: list[_Pending] = []
        self._writing: asyncio.Task[None] | None = None

    async def write(self, thumbprint: str, info: WorkerInfo, pem: bytes | None) -> HeartbeatOutcome:
        """Apply one heartbeat (as ``catalog.worker_heartbeat`` does) in the next batch; its outcome."""
        loop = asyncio.get_running_loop()
        pending = _Pending(thumbprint, info, pem, loop.create_future())
        self._pending.append(pending)
        if self._writing is None or self._writing.done():
            self._writing = loop.create_task(self._drain())
            self._state.background.add(self._writing)
            self._writing.add_done_callback(self._state.background.discard)
        return await pending.answer

    async def _drain(self) -> None:
        state = self._state
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            beats = [(p.thumbprint, p.info, p.pem) for p in batch]
            try:
                answers = await state.db(state.catalog.worker_heartbeats, beats, pinned=state.pinned_in_root)
            except asyncio.CancelledError:  # the master is stopping: nobody will write these
                for p in batch + self._pending:
                    p.answer.cancel()
                self._pending = []
                raise
            except Exception as exc:  # noqa: BLE001 - each waiter raises it (a problem document)
                for p in batch:
                    if not p.answer.done():
                        p.answer.set_exception(exc)
                continue
            for p, answer in zip(batch, answers, strict=True):
                if p.answer.done():  # its request went away
                    continue
                if isinstance(answer, PackfleetError):
                    p.answer.set_exception(answer)
                else:
                    p.answer.set_result(answer)


class BatchedAuthorize:
    """``catalog.authorize`` for a :class:`~packfleet.master._auth.PrincipalCache`: the lookups
    that miss while one read is under way are answered by the next, with ``authorize_many``."""

    def __init__(self, state: MasterState) -> None:
        self._state = state
        self._pending: dict[str, list[asyncio.Future[Principal | None]]] = {}
        self._reading: asyncio.Task[None] | None = None

    async def __call__(self, thumbprint: str) -> Principal | None:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Principal | None] = loop.create_future()
        self._pending.setdefault(thumbprint, []).append(answer)
        if self._reading is None or self._reading.done():
            self._reading = loop.create_task(self._drain())
            self._state.background.add(self._reading)
            self._reading.add_done_callback(self._state.background.discard)
        return await answer

    async def _drain(self) -> None:
        state = self._state
        while self._pending:
            wanted = list(self._pending)[:MAX_BATCH]
            batch = {t: self._pending.pop(t) for t in wanted}
            try:
                found = await state.db(state.catalog.authorize_many, wanted)
            except asyncio.CancelledError:
                for waiters in [*batch.values(), *self._pending.values()]:
                    for w in waiters:
                        w.cancel()
                self._pending = {}
                raise
            except Exception as exc:  # noqa: BLE001 - each waiter raises it
                for waiters in batch.values():
                    for w in waiters:
                        if not w.done():
                            w.set_exception(exc)
                continue
            for thumbprint, waiters in batch.items():
                principal = found.get(normalize_thumbprint(thumbprint))
                for w in waiters:
                    if not w.done():
                        w.set_result(principal)


HEARTBEATS: web.AppKey[HeartbeatWriter] = web.AppKey("packfleet_heartbeat_writer", HeartbeatWriter)
