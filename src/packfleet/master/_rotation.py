"""Master certificate rotation without downtime: announce, switch, retire, on every master at once.

The seed's "change the master certificate" procedure stops every worker: the master gets a new
certificate, binding and SSLCertThumbprint and restarts, then each worker is fixed by hand (import
master.cer into Root, set MasterHttpsCertThumbprint, restart). packfleet runs the same steps in an
order where nothing ever fails:

1. **announce**: a master makes the new certificate (same names unless told otherwise) and records
   it in the catalog with its key sealed by the secrets key every master shares; each master puts it
   into its Root store with its key, and hands its PEM to every worker in the heartbeat reply. A
   worker adds it to its Root store, pins it as NextMasterHttpsCertThumbprint beside the current pin,
   and says so at once in another heartbeat (``accepted_master_thumbprints``), which whichever master
   got it records in the catalog. Each step reaches the workers through the lease long-polls they
   hold (answered with ``heartbeat_now``); a worker that does not report a step it was told is asked
   again that way after :data:`REPORT_GRACE` seconds. The PEM travels over a connection the worker
   authenticated with the current pin, which is why it may trust it.
2. **switch**: once every online worker accepts the new certificate, the phase in the catalog says
   so, and each master rewrites its binding and SSLCertThumbprint together (under the reload lock, so
   its file watcher never sees one without the other) and hot-swaps its TLS context. Open
   connections keep the old certificate; new ones get the new one, which every worker already
   accepts. Workers see the new thumbprint in the reply and promote it (MasterHttpsCertThumbprint =
   new, Next = "", old one out of their Root store).
3. **finish**: the old certificate leaves every master's Root store.

The rotation lives in the catalog (``master_cert_rotation``, ``master_cert_acceptances``), never in
one master's memory, so any master can take the next step: a rotation started on a master that then
died is finished from another. Each master brings its own files in line with the catalog's phase
(:meth:`MasterCertRotation.sync`) when a step is taken (``NOTIFY`` on PostgreSQL), at start, before
each step it is asked for, and every few seconds in case a notification was missed. Every step
writes the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from packfleet.catalog import MasterRotationRecord, canonical_agent_id
from packfleet.config import add_binding, delete_binding, set_setting
from packfleet.errors import (
    CatalogError,
    CertificateNotFound,
    Conflict,
    PackfleetError,
    PkiError,
    SettingsError,
)
from packfleet.master._state import MasterState
from packfleet.master._tls import load_tls_material
from packfleet.master._wakeup import ROTATION, worker_topic
from packfleet.pki import (
    CertStore,
    Credential,
    export_certificate,
    load_credential_bytes,
    successor_of,
)
from packfleet.protocol import HeartbeatReply
from packfleet.transport import master_server_context

log = logging.getLogger("packfleet.master")

#: The master property where earlier versions kept the rotation under way (moved to its table at start).
ROTATION_PROPERTY = "rotation.master_cert"
#: A worker counts as online when its last heartbeat is this recent (as ``manager worker list``).
ONLINE_WINDOW = timedelta(minutes=3)
_MASTER_CER = "master.cer"
#: How many heartbeats in a row without progress a rotation step asks a worker for.
_MAX_STALE = 3
#: The name the new certificate's key is sealed under (binds the sealed value to this use).
_SEALED_KEY_NAME = "master-cert.key"
#: The longest a status long-poll is held, and how often it reads the catalog meanwhile (seconds).
MAX_STATUS_WAIT = 30.0
STATUS_REFRESH = 1.0
#: How long a worker told a step in a heartbeat reply has to report it by itself (another heartbeat,
#: sent at once) before its lease long-poll asks for it (seconds): a worker that reports on its own
#: is never asked, an older one that does not is asked this much later.
REPORT_GRACE = 10.0


@dataclass(frozen=True)
class RotationRecord:
    """The rotation under way: ``announced`` (workers learn the new certificate) or ``switched``."""

    phase: str
    old: str
    new: str
    started_at: str
    actor: str
    switched_at: str = ""

    @classmethod
    def of(cls, shared: MasterRotationRecord) -> RotationRecord:
        return cls(
            phase=shared.phase,
            old=shared.old,
            new=shared.new,
            started_at=shared.started_at.isoformat(),
            actor=shared.actor,
            switched_at=shared.switched_at.isoformat() if shared.switched_at else "",
        )

    @classmethod
    def from_json(cls, text: str) -> RotationRecord | None:
        """A rotation in the master property of earlier versions."""
        if not text.strip():
            return None
        try:
            data = json.loads(text)
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise CatalogError(
                f"master property {ROTATION_PROPERTY} does not hold a rotation: {exc}",
                fix="nothing to do: the master drops it at start and logs so",
            ) from None


@dataclass(frozen=True)
class RotateRequest:
    """``action``: start, switch, finish or abort. ``cns``/``days`` apply to start only."""

    action: str = dataclasses.field(metadata={"schema": {"enum": ["start", "switch", "finish", "abort"]}})
    #: Host names and IP addresses (a format the document names; the handler checks each one).
    cns: list[str] = dataclasses.field(
        default_factory=list, metadata={"schema": {"items": {"type": "string", "format": "packfleet-host"}}}
    )
    days: int | None = dataclasses.field(default=None, metadata={"schema": {"minimum": 1, "maximum": 3650}})
    force: bool = False


class MasterCertRotation:
    """One master's half of a master certificate rotation, shared by its admin route and heartbeats.

    ``serving`` names the certificate new connections get; ``reload`` re-reads the TLS material and
    raises when it is refused; ``paused`` holds the server's reload lock while both files change.
    What the rotation is and what each worker accepts is read from the catalog; this object only
    remembers it between reads, and which workers it has already asked for a heartbeat.
    """

    def __init__(
        self,
        state: MasterState,
        *,
        serving: Callable[[], str],
        reload: Callable[[], Awaitable[None]],
        paused: Callable[[], AbstractAsyncContextManager[None]],
    ) -> None:
        self.state = state
        self.home: Path = state.home
        self._serving = serving
        self._reload = reload
        self._paused = paused
        #: The rotation under way as last read from the catalog (None: none under way).
        self.record: RotationRecord | None = None
        self._new_pem = ""
        #: What each worker accepts, by canonical agent id: the catalog's rows as last read, updated
        #: at once by the heartbeats this master receives.
        self.accepts: dict[str, list[str]] = {}
        #: Workers asked (through their lease long-poll) for a heartbeat they have not sent yet.
        self._hinted: set[str] = set()
        #: Heartbeats in a row, in this step, that accepted nothing new: a worker that cannot follow
        #: is asked at most _MAX_STALE times, then left to its own heartbeat interval.
        self._stale: dict[str, int] = {}
        #: One sync at a time: two would write the same files at once.
        self._syncing = asyncio.Lock()
        #: The (phase, new) this master last brought its files in line with.
        self._applied: tuple[str, str] | None = None
        #: What workers accept, heard by this master and not yet in the catalog (written in batches:
        #: a rotation step makes every worker heartbeat at once), and the batch being written.
        self._unsaved: dict[str, list[str]] = {}
        self._saving_now: dict[str, list[str]] = {}
        self._saving: asyncio.Task[None] | None = None
        #: Workers told a step in a heartbeat reply, to be asked for their report if it does not
        #: come by itself (:meth:`_hint_later`).
        self._hint_timers: dict[str, asyncio.TimerHandle] = {}
        #: Resolved when a worker's acceptances change here: wakes the status long-polls.
        self._news: asyncio.Future[None] | None = None

    # -- state ------------------------------------------------------------------------------------

    async def load(self) -> None:
        """At start: carry over a rotation an earlier version kept as a property, then :meth:`sync`."""
        text = await self.state.db(self.state.catalog.get_property, ROTATION_PROPERTY)
        try:
            legacy = RotationRecord.from_json(text or "")
        except CatalogError as exc:
            log.error("%s; dropped", exc.message)
            await self.state.db(self.state.catalog.set_property, ROTATION_PROPERTY, "")
            legacy = None
        if legacy is not None:
            await self._carry_over(legacy)
        await self.sync()
        if self.record is not None:
            log.info(
                "master certificate rotation %s -> %s is %s",
                self.record.old,
                self.record.new,
                self.record.phase,
            )

    async def _carry_over(self, legacy: RotationRecord) -> None:
        """Move a rotation from the master property into the shared tables (the key from this home)."""
        catalog = self.state.catalog
        try:
            new = await self.state.db(CertStore(self.home, "Root").get, legacy.new)
        except CertificateNotFound:
            log.error(
                "the master certificate rotation to %s cannot go on: the certificate is no longer in the "
                "Root store; it is dropped, start a new one: packfleet manager rotate master-cert",
                legacy.new,
            )
        else:
            sealed = self._seal(new)
            await self.state.db(
                catalog.begin_master_rotation,
                old=legacy.old,
                new=legacy.new,
                cert_pem=new.cert_pem().decode("ascii"),
                key_sealed=sealed,
                actor=legacy.actor,
            )
            if legacy.phase == "switched":
                await self.state.db(
                    catalog.advance_master_rotation, legacy.new, "switched", after=["announced"]
                )
        await self.state.db(catalog.set_property, ROTATION_PROPERTY, "")

    def _seal(self, cred: Credential) -> str:
        secrets = self.state.secrets
        if secrets is None:
            raise RuntimeError("the master's secrets key is not loaded")
        return secrets.get().seal(_SEALED_KEY_NAME, cred.key_pem().decode("ascii"))

    async def sync(self) -> None:
        """Bring this master's Root store, binding and SSLCertThumbprint in line with the catalog.

        Idempotent and cheap when nothing changed (one catalog read). Announced or switched: the new
        certificate is in Root with its key; switched (or finished): it is served; finished: the old
        one has left Root; aborted: the new one has.
        """
        async with self._syncing:
            shared = await self.state.db(self.state.catalog.master_rotation)
            before = self.record
            self.record = RotationRecord.of(shared) if shared is not None and shared.under_way else None
            self._new_pem = shared.new_cert_pem if self.record is not None and shared is not None else ""
            if shared is None:
                return
            # A step was taken (maybe on another master): workers have news, told once this
            # master serves what the step says (a worker woken before that would hear nothing new).
            stepped = before != self.record
            if self._applied == (shared.phase, shared.new):
                if stepped:
                    self._announce()
                return
            try:
                await self._apply(shared)
            except PackfleetError as exc:
                log.error(
                    "cannot bring this master in line with the master certificate rotation to %s (%s): %s",
                    shared.new,
                    shared.phase,
                    str(exc).replace("\n", " "),
                )
                if stepped:
                    self._announce()  # what the workers can act on already (an announced PEM)
                return
            self._applied = (shared.phase, shared.new)
            self._announce()

    async def _apply(self, shared: MasterRotationRecord) -> None:
        root = CertStore(self.home, "Root")
        serving = self._serving()
        if shared.phase in ("announced", "switched", "finished") and serving != shared.new:
            if not await self.state.db(root.contains, shared.new):
                await self.state.db(root.add, self._unsealed(shared))
                log.info(
                    "master certificate %s (rotation %s) added to the Root store", shared.new, shared.phase
                )
                await self._reload()
        if shared.phase == "announced" and serving == shared.new:
            # This master's files were switched but the phase was not written (it died in between).
            await self.state.db(
                self.state.catalog.advance_master_rotation, shared.new, "switched", after=["announced"]
            )
            return
        if shared.phase in ("switched", "finished") and serving != shared.new:
            await self._switch_files(shared.new)
        if shared.phase == "finished" and self._serving() != shared.old:
            with contextlib.suppress(CertificateNotFound):
                await self.state.db(root.delete, shared.old)
                log.info("master certificate %s retired from the Root store", shared.old)
                await self._reload()
        if shared.phase == "aborted" and serving != shared.new:
            with contextlib.suppress(CertificateNotFound):
                await self.state.db(root.delete, shared.new)
                log.info("master certificate %s (aborted rotation) left the Root store", shared.new)
                await self._reload()

    def _unsealed(self, shared: MasterRotationRecord) -> Credential:
        secrets = self.state.secrets
        if secrets is None:
            raise RuntimeError("the master's secrets key is not loaded")
        key_pem = str(secrets.get().open(_SEALED_KEY_NAME, shared.new_key_sealed))
        return load_credential_bytes(
            (shared.new_cert_pem + key_pem).encode(), source="the catalog's rotation"
        )

    async def _switch_files(self, thumbprint: str) -> None:
        """Serve ``thumbprint``: binding and SSLCertThumbprint together, then a hot swap."""
        await self.state.db(self._validate, thumbprint)
        async with self._paused():
            undo = await self.state.db(self._write_files, thumbprint)
        try:
            await self._reload()
        except (SettingsError, PkiError):
            async with self._paused():
                await self.state.db(undo)
            with contextlib.suppress(SettingsError, PkiError):
                await self._reload()
            raise
        await self.state.db(self._export, thumbprint)
        log.info("this master now serves the master certificate %s", thumbprint)

    # -- heartbeats -------------------------------------------------------------------------------

    def on_heartbeat(self, agent_id: str, accepted: list[str], reply: HeartbeatReply) -> HeartbeatReply:
        """Note what the worker accepts; tell it the served certificate and, when announcing, the next."""
        with contextlib.suppress(CatalogError):
            key = canonical_agent_id(agent_id)
            now_accepts = [t.upper() for t in accepted]
            same = self.accepts.get(key) == now_accepts
            self._stale[key] = self._stale.get(key, 0) + 1 if same else 0
            self.accepts[key] = now_accepts
            self._hinted.discard(key)
            if not same:
                self._tell_waiters()
            if not same or self.record is not None:
                # Into the catalog, where every master reads it; off the heartbeat's path.
                self._save_later(key, now_accepts)
            self._hint_later(key, now_accepts)
        record, serving = self.record, self._serving()
        # Announced while this master serves the old certificate, whatever the phase: between the
        # catalog saying "switched" and this master's hot swap, a reply naming the old certificate
        # without the next one would tell the worker the rotation was aborted, and it would drop
        # the pin it needs a moment later.
        announce = record is not None and bool(self._new_pem) and serving != record.new
        return dataclasses.replace(
            reply,
            master_cert_thumbprint=serving,
            next_master_cert_pem=self._new_pem if announce else "",
        )

    def _hint_later(self, key: str, accepts: list[str]) -> None:
        """Ask ``key`` for the heartbeat that reports the step this reply tells it, unless it sends one.

        A worker reports a step at once, in another heartbeat, when the reply changed its pins;
        one before that waits for its lease long-poll to say ``heartbeat_now`` (or for its
        AgentHeartbeatInterval). Asking after :data:`REPORT_GRACE` seconds, only if the report has
        not come, spares the fleet a long-poll answer and a new long-poll per worker and step.
        The worker's own topic: waking every worker's long-poll for each one's step costs N².
        """
        timer = self._hint_timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if not self._behind(accepts) or self._stale[key] >= _MAX_STALE:
            return
        loop = asyncio.get_running_loop()
        self._hint_timers[key] = loop.call_later(REPORT_GRACE, self._hint_now, key)

    def _hint_now(self, key: str) -> None:
        self._hint_timers.pop(key, None)
        if self._behind(self.accepts.get(key)):
            self.state.wakeups.notify(worker_topic(key))

    def _save_later(self, key: str, accepts: list[str]) -> None:
        """Write what ``key`` accepts with the others heard meanwhile: one transaction per batch."""
        self._unsaved[key] = accepts
        if self._saving is None or self._saving.done():
            self._saving = asyncio.get_running_loop().create_task(self._save())
            self.state.background.add(self._saving)
            self._saving.add_done_callback(self.state.background.discard)

    async def _save(self) -> None:
        while self._unsaved:
            self._saving_now, self._unsaved = self._unsaved, {}
            try:
                await self.state.db(self.state.catalog.record_master_cert_accepts_many, self._saving_now)
            except PackfleetError as exc:
                log.warning("cannot record what %d worker(s) accept: %s", len(self._saving_now), exc.message)
            finally:
                self._saving_now = {}

    async def _catalog_accepts(self) -> dict[str, list[str]]:
        """What each worker accepts, from the catalog, with what this master heard and has not
        written yet on top (newer than the rows)."""
        saving = self._saving
        if saving is not None and not saving.done():
            await asyncio.shield(saving)
        shared = await self.state.db(self.state.catalog.master_cert_accepts)
        return {**shared, **self._saving_now, **self._unsaved}

    def needs_heartbeat(self, agent_id: str) -> bool:
        """Whether a rotation step waits on this worker's next heartbeat, and it was not asked yet.

        Announced: the worker has not said it accepts the new certificate. Switched: it still
        accepts the old one. The lease long-poll answers at once with ``heartbeat_now`` when this
        is true, so a rotation of an online fleet takes seconds whatever AgentHeartbeatInterval
        is; once per heartbeat, so a worker that cannot follow is never asked in a loop.
        """
        try:
            key = canonical_agent_id(agent_id)
        except CatalogError:
            return False
        # Told the step in its last heartbeat's reply: its own report is on its way (or, after
        # REPORT_GRACE, asked for through its long-poll).
        if key in self._hinted or key in self._hint_timers or self._stale.get(key, 0) >= _MAX_STALE:
            return False
        if not self._behind(self.accepts.get(key)):
            return False
        self._hinted.add(key)
        return True

    def _behind(self, accepts: list[str] | None) -> bool:
        """Whether a worker accepting ``accepts`` (None: not heard from) has a step left to take."""
        record = self.record
        if record is None or (record.phase == "announced" and not self._new_pem):
            return False
        if record.phase == "announced":
            return accepts is None or record.new not in accepts
        return accepts != [record.new]

    def _announce(self) -> None:
        """A step changed what workers must do: wake their lease long-polls to ask for heartbeats.

        With no rotation under way (finished, aborted) no worker is asked anything: the next
        heartbeat of each says which certificate the master serves, and waking every long-poll of
        the fleet for nothing costs each a catalog look.
        """
        self._hinted.clear()
        self._stale.clear()
        for timer in self._hint_timers.values():
            timer.cancel()
        self._hint_timers.clear()
        if self.record is not None:
            self.state.wakeups.notify(ROTATION)

    def _tell_waiters(self) -> None:
        news, self._news = self._news, None
        if news is not None and not news.done():
            news.set_result(None)

    async def _news_or_timeout(self, timeout: float) -> None:
        if self._news is None or self._news.done():
            self._news = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._news), timeout)

    def _reached(self, agent_id: str, step: str) -> bool:
        record, accepts = self.record, self.accepts.get(agent_id, [])
        if record is None:
            return True
        return record.new in accepts if step == "confirmed" else accepts == [record.new]

    async def status(self, *, wait_for: str | None = None, wait: float = 0.0) -> dict[str, Any]:
        """The rotation and, per worker, whether it is online and which certificates it accepts.

        With ``wait_for`` (``confirmed`` or ``promoted``) and ``wait`` seconds, a long-poll: the
        answer comes once every worker awaited at the start (online and not there yet) has reached
        that step, the phase changed, or the wait ended, so the manager hears at once, without
        asking again and again for a status of the whole fleet. What workers accept is heard from
        the heartbeats this master receives, and read from the catalog every
        :data:`STATUS_REFRESH` seconds for those another master receives.
        """
        status = await self._status()
        if wait_for not in ("confirmed", "promoted") or wait <= 0 or self.record is None:
            return status
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait, MAX_STATUS_WAIT)
        phase = self.record.phase
        awaited = [r["agent_id"] for r in status["workers"] if r["online"] and not r[wait_for]]
        refresh_at = loop.time() + STATUS_REFRESH
        while True:
            awaited = [a for a in awaited if not self._reached(a, wait_for)]
            left = deadline - loop.time()
            if not awaited or left <= 0 or self.record is None or self.record.phase != phase:
                break
            await self._news_or_timeout(min(left, STATUS_REFRESH))
            if loop.time() >= refresh_at:
                refresh_at = loop.time() + STATUS_REFRESH
                self.accepts = {**self.accepts, **await self._catalog_accepts()}
                await self.sync()
        return await self._status()

    async def _status(self) -> dict[str, Any]:
        await self.sync()
        record = self.record
        # The light list (no certificates, no machine figures): a status of a thousand workers is
        # asked several times a step, and the whole records took 45 ms each (make bench, rotation).
        workers = await self.state.db(self.state.catalog.worker_names)
        shared = await self._catalog_accepts()
        # The catalog's rows win: any master may have received a worker's latest heartbeat.
        self.accepts = {**self.accepts, **shared}
        now = self.state.clock()
        rows = []
        for agent_id, display_name, enabled, seen in workers:
            accepts = self.accepts.get(agent_id, [])
            online = seen is not None and now - seen <= ONLINE_WINDOW
            rows.append(
                {
                    "agent_id": agent_id,
                    "display_name": display_name,
                    "enabled": enabled,
                    "online": online,
                    "last_online_time": seen.isoformat() if seen else None,
                    "accepts": accepts,
                    "confirmed": record is not None and record.new in accepts,
                    "promoted": record is not None and accepts == [record.new],
                }
            )
        return {
            "phase": record.phase if record else "none",
            "old": record.old if record else None,
            "new": record.new if record else None,
            "serving": self._serving(),
            "started_at": record.started_at if record else None,
            "switched_at": (record.switched_at or None) if record else None,
            "new_cert_pem": self._new_pem if record else "",
            "manual_steps": manual_steps(record.new) if record else [],
            "workers": rows,
        }

    def _waiting_for(self, rows: list[dict[str, Any]]) -> list[str]:
        return [f"{r['display_name']} ({r['agent_id']})" for r in rows if r["online"] and not r["confirmed"]]

    # -- steps ------------------------------------------------------------------------------------

    async def start(self, *, cns: list[str], days: int | None, actor: str) -> dict[str, Any]:
        """Create the next certificate and announce it; a rotation already under way is resumed."""
        await self.sync()
        if self.record is not None:
            return await self.status() | {"resumed": True}
        loop_db = self.state.db
        material = await loop_db(load_tls_material, self.home)
        current = CertStore(self.home, material.binding.certstorename).get(material.thumbprint)
        new = await loop_db(successor_of, current, names=cns, days=days)
        shared, began = await loop_db(
            self.state.catalog.begin_master_rotation,
            old=material.thumbprint,
            new=new.thumbprint,
            cert_pem=new.cert_pem().decode("ascii"),
            key_sealed=self._seal(new),
            actor=actor,
        )
        if not began:  # another master began one a moment ago: resume it, drop ours unused
            await self.sync()
            return await self.status() | {"resumed": True}
        info = new.info("Root")
        await self._audit(
            actor,
            "master-cert.rotation.start",
            new.thumbprint,
            {
                "old": material.thumbprint,
                "names": info.subject_cns,
                "not_after": info.not_after,
                "store": "Root",
            },
        )
        # MakeCert ... -ss Root -sr LocalMachine: the master certificate lives in Root with its key.
        await self.sync()
        log.info("master certificate rotation started: announcing %s to the workers", shared.new)
        return await self.status() | {"resumed": False}

    async def switch(self, *, actor: str, force: bool) -> dict[str, Any]:
        """Serve the new certificate, on this master and (through the catalog) on every other one."""
        record = await self._require("switch")
        if record.phase == "switched":
            return await self.status()
        status = await self.status()
        waiting = self._waiting_for(status["workers"])
        if waiting and not force:
            raise Conflict(
                f"online workers that do not accept certificate {record.new} yet: {', '.join(waiting)}; "
                "switching now would cut them off",
                fix="wait for their next heartbeat, or switch anyway with: packfleet manager rotate "
                "master-cert --force (then give them the certificate by hand)",
            )
        # Refuse before any master switches, rather than leave the others serving what this one cannot.
        await self.state.db(self._validate, record.new)
        await self.state.db(
            self.state.catalog.advance_master_rotation, record.new, "switched", after=["announced"]
        )
        await self._audit(
            actor, "master-cert.switch", record.new, {"old": record.old, "forced": bool(waiting)}
        )
        await self._sync_strictly(record.new)
        log.info("master certificate switched from %s to %s", record.old, record.new)
        return await self.status()

    async def _sync_strictly(self, new: str) -> None:
        """:meth:`sync`, raising when this master could not serve ``new`` (the step's caller hears why)."""
        await self.sync()
        if self._serving() != new:
            raise Conflict(
                f"the catalog's rotation is switched to {new}, but this master still serves "
                f"{self._serving()}; its log says why",
                fix="packfleet doctor (on this master), then: packfleet manager rotate master-cert",
            )

    async def finish(self, *, actor: str) -> dict[str, Any]:
        """Retire the old certificate from every master's Root store and end the rotation."""
        record = await self._require("finish")
        if record.phase != "switched":
            raise Conflict(
                f"the master still serves {record.old}; switch to {record.new} before retiring the old one",
                fix="packfleet manager rotate master-cert",
            )
        status = await self.status()
        if self._serving() != record.new:
            await self._sync_strictly(record.new)
        root = CertStore(self.home, "Root")
        had_old = await self.state.db(root.contains, record.old)
        await self.state.db(
            self.state.catalog.advance_master_rotation, record.new, "finished", after=["switched"]
        )
        await self.sync()
        removed = had_old and not await self.state.db(root.contains, record.old)
        behind = [f"{r['display_name']} ({r['agent_id']})" for r in status["workers"] if not r["promoted"]]
        await self._audit(
            actor,
            "master-cert.retire",
            record.old,
            {"new": record.new, "removed_from_root": removed, "workers_not_promoted": behind},
        )
        log.info("master certificate %s retired; rotation to %s finished", record.old, record.new)
        return status | {"phase": "finished", "removed_from_root": removed}

    async def abort(self, *, actor: str) -> dict[str, Any]:
        """Give up a rotation that has not switched: the new certificate leaves every Root store."""
        record = await self._require("abort")
        if record.phase != "announced":
            raise Conflict(
                f"the master already serves {record.new}; a switched rotation cannot be undone, finish it",
                fix="packfleet manager rotate master-cert",
            )
        await self.state.db(
            self.state.catalog.advance_master_rotation, record.new, "aborted", after=["announced"]
        )
        await self._audit(actor, "master-cert.rotation.abort", record.new, {"old": record.old})
        await self.sync()
        log.info("master certificate rotation to %s aborted", record.new)
        return await self.status() | {"phase": "aborted", "aborted": record.new}

    async def _require(self, action: str) -> RotationRecord:
        await self.sync()  # the catalog's rotation, whichever master took its last step
        if self.record is None:
            raise Conflict(
                f"no master certificate rotation is under way to {action}",
                fix="packfleet manager rotate master-cert",
            )
        return self.record

    async def _audit(self, actor: str, action: str, target: str, details: dict[str, Any]) -> None:
        await self.state.db(self.state.catalog.audit, actor, action, target, details)

    # -- files (run on the catalog executor, off the event loop) -----------------------------------

    def _validate(self, thumbprint: str) -> None:
        """Build a server context from the new certificate before any file changes.

        Without the Root store: loading it takes a quarter of a second for a thousand workers, and
        the reload that serves the new certificate loads it anyway, keeping the last good context
        if it is refused.
        """
        root = CertStore(self.home, "Root")
        cred = root.get(thumbprint)
        if cred.private_key is None:
            raise PkiError(
                f"the new master certificate {thumbprint} has no private key in the Root store",
                fix="packfleet manager rotate master-cert --abort, then start again",
            )
        master_server_context(root.cert_path(thumbprint), root.key_path(thumbprint), "")

    def _write_files(self, thumbprint: str) -> Callable[[], None]:
        """Point binding and SSLCertThumbprint at ``thumbprint``; return what puts them back."""
        material = load_tls_material(self.home)
        old = material.binding
        delete_binding(self.home, old.ipport)
        # The seed's step 2: delete and add the binding again, keeping the original appid.
        add_binding(self.home, dataclasses.replace(old, certhash=thumbprint, certstorename="Root"))
        set_setting(self.home, "master", "SSLCertThumbprint", thumbprint)

        def undo() -> None:
            with contextlib.suppress(SettingsError):
                delete_binding(self.home, old.ipport)
            add_binding(self.home, old)
            set_setting(self.home, "master", "SSLCertThumbprint", old.certhash)

        return undo

    def _export(self, thumbprint: str) -> None:
        # The seed's SSISScaleOutMaster.cer: what an administrator copies to a worker that missed it.
        export_certificate(CertStore(self.home, "Root").get(thumbprint), self.home / _MASTER_CER)


def manual_steps(new_thumbprint: str) -> list[str]:
    """The seed's steps 5.1-5.3 for a worker that did not take part in the rotation."""
    return [
        "copy master.cer from the master's home to the worker",
        "packfleet cert import master.cer --store Root",
        f"packfleet settings set worker MasterHttpsCertThumbprint {new_thumbprint}",
        "restart the worker, or send it SIGHUP (kill -HUP $(cat <worker home>/worker.pid))",
    ]
