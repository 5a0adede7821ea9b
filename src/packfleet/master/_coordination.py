"""Several masters on one PostgreSQL catalog: shared wake-ups and one leader for the sweeps.

DESIGN.md's high-availability mode: masters share the catalog, leasing stays correct through
``FOR UPDATE SKIP LOCKED``, and two more things must hold across processes:

- **Wake-ups.** A worker long-polling master B must wake when master A creates an execution or its
  sweep requeues a task. The catalog sends ``NOTIFY packfleet_tasks`` on every commit that makes a
  task ready; this module ``LISTEN``s on a dedicated connection and turns each notification into a
  local :data:`TASKS` wake-up: of as many long-polls as the commit made tasks, or of all of them
  (a sweep, a master before counts). A master skips its own notifications (the payload names its
  catalog object): it woke its long-polls when the commit returned, and waking them again for the
  same task would wake a second one for nothing.
- **News between masters.** The same connection LISTENs on the channels of the shared fleet state
  (a master certificate rotation step, a change of trusted worker certificates, certificates whose
  connections must close now) and hands each notification to the master's ``on_notice``.
- **One sweeper.** The expired-lease sweep and the cleanup of completed jobs should run once per
  interval for the whole cluster, not once per master. The master holding the session-level
  advisory lock :data:`LEADER_LOCK` on its own connection leads; if that connection (or process)
  dies, PostgreSQL releases the lock and another master takes over at its next tick. (A second
  connection, because psycopg holds a connection while it waits for notifications.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

from packfleet.catalog import CUTOFF_CHANNEL, ROTATION_CHANNEL, TASKS_CHANNEL, TRUST_CHANNEL
from packfleet.master._wakeup import TASKS, Wakeups

log = logging.getLogger("packfleet.master")

#: Advisory lock key (any 64-bit number; this is "pfleader" in ASCII). It must differ from the
#: catalog's schema-upgrade lock ("packflee"): with one key, the leader's session lock blocked every
#: other master's start-up upgrade (and ``master init``) for as long as the leader lived.
LEADER_LOCK = 0x70666C6561646572
_RECONNECT_DELAY = 2.0
#: Channels whose notifications go to ``on_notice`` (TASKS_CHANNEL wakes the long-polls).
NOTICE_CHANNELS = (ROTATION_CHANNEL, TRUST_CHANNEL, CUTOFF_CHANNEL)
#: What a master does with a notice: ``on_notice(channel, payload)``. Called with an empty payload for
#: the rotation and trust channels whenever the listening connection is (re)made: notices sent while
#: nobody listened are lost, and those two can be caught up on from the catalog.
OnNotice = Callable[[str, str], None]


def libpq_url(url: str) -> str:
    """The libpq form of a SQLAlchemy ``postgresql+psycopg://`` URL (psycopg connects with it)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresCoordination:
    """LISTEN for ready tasks on one connection; hold the sweep leadership on another.

    ``origin`` is this master's ``Catalog.origin``: its own task notifications are skipped.
    """

    def __init__(
        self,
        url: str,
        wakeups: Wakeups,
        *,
        connect_timeout: float = 15,
        on_notice: OnNotice | None = None,
        origin: str = "",
    ) -> None:
        self._conninfo = libpq_url(url)
        self._wakeups = wakeups
        self._origin = origin
        self._on_notice = on_notice
        self._connect_timeout = int(connect_timeout)
        self._listen_conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._lock_conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._leader = False

    @property
    def leader(self) -> bool:
        return self._leader

    async def start(self) -> None:
        self._listen_conn = await self._listening_connection()
        self._listener = asyncio.create_task(self._listen(), name="packfleet-pg-listen")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        for conn in (self._listen_conn, self._lock_conn):
            if conn is not None and not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
        self._listen_conn = self._lock_conn = None
        self._leader = False

    async def lead(self) -> bool:
        """Whether this master should run the cluster-wide jobs now (takes the lock if it is free)."""
        try:
            if self._lock_conn is None or self._lock_conn.closed:
                self._leader = False
                self._lock_conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=self._connect_timeout
                )
            if self._leader:
                await self._lock_conn.execute("SELECT 1")  # still alive, so still holding the lock
                return True
            # Session-level: once taken it is held until this connection ends.
            cursor = await self._lock_conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,))
            row = await cursor.fetchone()
        except (psycopg.Error, OSError) as exc:
            log.warning("cannot ask for the sweep leadership: %s", exc)
            self._leader = False
            return False
        self._leader = bool(row and row[0])
        if self._leader:
            log.info("this master now leads the periodic sweeps (advisory lock %#x)", LEADER_LOCK)
        return self._leader

    async def _listening_connection(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        conn = await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, connect_timeout=self._connect_timeout
        )
        await conn.execute(f"LISTEN {TASKS_CHANNEL}")
        if self._on_notice is not None:
            for channel in NOTICE_CHANNELS:
                await conn.execute(f"LISTEN {channel}")
        return conn

    def _notice(self, channel: str, payload: str) -> None:
        if channel == TASKS_CHANNEL:
            self._tasks_ready(payload)
        elif self._on_notice is not None:
            try:
                self._on_notice(channel, payload)
            except Exception:  # one bad notice must not stop the listener
                log.exception("cannot act on the catalog notification %s", channel)

    def _tasks_ready(self, payload: str) -> None:
        """Wake long-polls for a ``packfleet_tasks`` notification (see ``Catalog._notify_tasks``)."""
        origin, _, count = payload.partition(" ")
        if origin and origin == self._origin:
            return
        if count.isdigit():
            self._wakeups.notify_one(TASKS, int(count))
        else:
            self._wakeups.notify(TASKS)

    async def _listen(self) -> None:
        while True:
            try:
                if self._listen_conn is None or self._listen_conn.closed:
                    self._listen_conn = await self._listening_connection()
                    # Anything may have become ready, or changed, while nobody listened.
                    self._wakeups.notify(TASKS)
                    for channel in NOTICE_CHANNELS:
                        if channel != CUTOFF_CHANNEL:
                            self._notice(channel, "")
                async for notify in self._listen_conn.notifies():
                    self._notice(notify.channel, notify.payload)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                log.warning("lost the catalog notification connection (%s); reconnecting", exc)
                if self._listen_conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        await self._listen_conn.close()
                self._listen_conn = None
                await asyncio.sleep(_RECONNECT_DELAY)
