"""Catalog calls that arrive together, made together: worker heartbeats and certificate lookups.

A fleet's heartbeats come in waves (a master restart, a rotation step, thousands of workers on a
10 s interval), and on SQLite every transaction queues on the catalog's one writer thread: a
heartbeat a transaction, each with its own ``BEGIN IMMEDIATE`` and commit, is what made the writer
the fleet's bottleneck. Here the heartbeats that arrive while a batch is being written wait for the
next one, which takes all of them (up to :data:`MAX_BATCH`), and batches follow each other at most
every :data:`BATCH_INTERVAL`: an idle master writes a lone heartbeat at once, a busy one writes them
in bulk. The lookups of who a
certificate belongs to (``catalog.authorize``, on a principal cache miss: after a restart every
worker's first request misses) are read the same way, many in one query.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from packfleet.catalog import HeartbeatOutcome, Principal, WorkerInfo
from packfleet.errors import PackfleetError
from packfleet.master._state import MasterState
from packfleet.thumbprint import normalize_thumbprint

#: The most heartbeats one transaction carries: a bound on how long the writer is held at once.
MAX_BATCH = 500
#: The shortest time between the starts of two heartbeat batches (seconds). A transaction costs the
#: master several times what one more heartbeat in it does: 5,000 workers on a 10 s interval are 500
#: heartbeats a second, which arrive one by one and, written as they came, made as many transactions.
#: A heartbeat that comes within this time of the last batch waits for the next, so a busy master
#: writes at most a hundred a second, each of several; an idle one still writes a lone heartbeat at
#: once.
BATCH_INTERVAL = 0.010


@dataclass
class _Pending:
    thumbprint: str
    info: WorkerInfo
    pem: bytes | None
    answer: asyncio.Future[HeartbeatOutcome | None] = field(repr=False)
    #: Only if it is the usual heartbeat (``catalog.bound_heartbeats``); else applied in full.
    bound_only: bool = False
    #: For a full one: whether its certificate itself is in the Root store (looked up by its handler).
    pinned: bool = False


class HeartbeatWriter:
    """Queues heartbeats and writes them with ``catalog.bound_heartbeats`` and
    ``catalog.worker_heartbeats``, one batch at a time."""

    def __init__(self, state: MasterState) -> None:
        self._state = state
        self._pending: list[_Pending] = []
        self._writing: asyncio.Task[None] | None = None
        self._last_batch = float("-inf")  # loop time the last batch began

    async def write_bound(self, thumbprint: str, info: WorkerInfo) -> HeartbeatOutcome | None:
        """Record one heartbeat in the next batch if it is the usual one (its outcome), else None:
        then nothing was written, and it takes :meth:`write` after the checks a registration needs."""
        return await self._queue(_Pending(thumbprint, info, None, self._future(), bound_only=True))

    async def write(
        self, thumbprint: str, info: WorkerInfo, pem: bytes | None, *, pinned: bool
    ) -> HeartbeatOutcome:
        """Apply one heartbeat (as ``catalog.worker_heartbeat`` does) in the next batch; its outcome.

        ``pinned``: the certificate itself is in the master's Root store, which an unknown one must
        be to register (looked up by the caller, off the catalog's thread: it reads the store).
        """
        outcome = await self._queue(_Pending(thumbprint, info, pem, self._future(), pinned=pinned))
        assert outcome is not None  # noqa: S101 - worker_heartbeats answers every heartbeat
        return outcome

    @staticmethod
    def _future() -> asyncio.Future[HeartbeatOutcome | None]:
        return asyncio.get_running_loop().create_future()

    async def _queue(self, pending: _Pending) -> HeartbeatOutcome | None:
        self._pending.append(pending)
        if self._writing is None or self._writing.done():
            self._writing = asyncio.get_running_loop().create_task(self._drain())
            self._state.background.add(self._writing)
            self._writing.add_done_callback(self._state.background.discard)
        return await pending.answer

    async def _drain(self) -> None:
        catalog = self._state.catalog
        loop = asyncio.get_running_loop()
        while self._pending:
            early = self._last_batch + BATCH_INTERVAL - loop.time()
            if early > 0:
                try:
                    await asyncio.sleep(early)
                except asyncio.CancelledError:  # the master is stopping: nobody will write these
                    self._cancel([])
                    raise
            self._last_batch = loop.time()
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            bound = [p for p in batch if p.bound_only]
            full = [p for p in batch if not p.bound_only]
            # Almost always one kind only: a registration or a refusal is rare beside the usual.
            if bound:
                known = [(p.thumbprint, p.info) for p in bound]
                await self._apply(bound, full, functools.partial(catalog.bound_heartbeats, known))
            if full:
                pinned = frozenset(normalize_thumbprint(p.thumbprint) for p in full if p.pinned)
                beats = [(p.thumbprint, p.info, p.pem) for p in full]
                write = functools.partial(catalog.worker_heartbeats, beats, pinned=pinned.__contains__)
                await self._apply(full, [], write)

    async def _apply(
        self, batch: list[_Pending], later: list[_Pending], write: Callable[[], Sequence[Any]]
    ) -> None:
        """Run ``write`` on the catalog's thread; hand each of ``batch`` its answer."""
        try:
            answers = await self._state.db(write)
        except asyncio.CancelledError:  # the master is stopping: nobody will write these
            self._cancel(batch + later)
            raise
        except Exception as exc:  # noqa: BLE001 - each waiter raises it (a problem document)
            for p in batch:
                if not p.answer.done():
                    p.answer.set_exception(exc)
            return
        for p, answer in zip(batch, answers, strict=True):
            if p.answer.done():  # its request went away
                continue
            if isinstance(answer, PackfleetError):
                p.answer.set_exception(answer)
            else:
                p.answer.set_result(answer)

    def _cancel(self, taken: list[_Pending]) -> None:
        for p in taken + self._pending:
            p.answer.cancel()
        self._pending = []


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
