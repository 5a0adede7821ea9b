"""Master certificate rotation without downtime: announce, switch, retire.

The seed's "change the master certificate" procedure stops every worker: the master gets a new
certificate, binding and SSLCertThumbprint and restarts, then each worker is fixed by hand (import
master.cer into Root, set MasterHttpsCertThumbprint, restart). packfleet runs the same steps in an
order where nothing ever fails:

1. **announce**: the master makes the new certificate (same names unless told otherwise) into its
   Root store with its key, and hands its PEM to every worker in the heartbeat reply. A worker adds
   it to its Root store, pins it as NextMasterHttpsCertThumbprint beside the current pin, and says so
   in its next heartbeat (``accepted_master_thumbprints``). The PEM travels over a connection the
   worker authenticated with the current pin, which is why it may trust it.
2. **switch**: once every online worker accepts the new certificate, the master rewrites its binding
   and SSLCertThumbprint together (under the reload lock, so its file watcher never sees one without
   the other) and hot-swaps its TLS context. Open connections keep the old certificate; new ones get
   the new one, which every worker already accepts. Workers see the new thumbprint in the reply and
   promote it (MasterHttpsCertThumbprint = new, Next = "", old one out of their Root store).
3. **finish**: the old certificate leaves the master's Root store.

The phase lives in the catalog (``master_properties``), so a master restarted mid-rotation goes on
announcing, or serves the new certificate it had switched to. What each worker accepts is learnt
again from its heartbeats. Every step writes the audit log.
"""

from __future__ import annotations

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

from packfleet.catalog import canonical_agent_id
from packfleet.config import add_binding, delete_binding, set_setting
from packfleet.errors import CatalogError, CertificateNotFound, Conflict, PkiError, SettingsError
from packfleet.master._state import MasterState
from packfleet.master._tls import load_tls_material
from packfleet.master._wakeup import TASKS
from packfleet.pki import CertStore, export_certificate, successor_of
from packfleet.protocol import HeartbeatReply
from packfleet.transport import master_server_context

log = logging.getLogger("packfleet.master")

#: The master property (SSIS ``catalog.master_properties``) holding the rotation under way, as JSON.
ROTATION_PROPERTY = "rotation.master_cert"
#: A worker counts as online when its last heartbeat is this recent (as ``manager worker list``).
ONLINE_WINDOW = timedelta(minutes=3)
_MASTER_CER = "master.cer"
#: How many heartbeats in a row without progress a rotation step asks a worker for.
_MAX_STALE = 3


@dataclass(frozen=True)
class RotationRecord:
    """The rotation under way: ``announced`` (workers learn the new certificate) or ``switched``."""

    phase: str
    old: str
    new: str
    started_at: str
    actor: str
    switched_at: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> RotationRecord | None:
        if not text.strip():
            return None
        try:
            data = json.loads(text)
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise CatalogError(
                f"master property {ROTATION_PROPERTY} does not hold a rotation: {exc}",
                fix="packfleet manager rotate master-cert --abort",
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
    """The master's half of a master certificate rotation, shared by its admin route and heartbeats.

    ``serving`` names the certificate new connections get; ``reload`` re-reads the TLS material and
    raises when it is refused; ``paused`` holds the server's reload lock while both files change.
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
        self.record: RotationRecord | None = None
        self._new_pem = ""
        #: What each worker said it accepts in its last heartbeat, by canonical agent id.
        self.accepts: dict[str, list[str]] = {}
        #: Workers asked (through their lease long-poll) for a heartbeat they have not sent yet.
        self._hinted: set[str] = set()
        #: Heartbeats in a row, in this step, that accepted nothing new: a worker that cannot follow
        #: is asked at most _MAX_STALE times, then left to its own heartbeat interval.
        self._stale: dict[str, int] = {}

    # -- state ------------------------------------------------------------------------------------

    async def load(self) -> None:
        """Pick up a rotation left by a previous run of this master (or another master of the catalog)."""
        text = await self.state.db(self.state.catalog.get_property, ROTATION_PROPERTY)
        record = RotationRecord.from_json(text or "")
        if record is not None and record.phase == "announced" and self._serving() == record.new:
            # The files were switched but the phase was not written: the switch happened.
            record = dataclasses.replace(record, phase="switched", switched_at=self.state.clock().isoformat())
            await self._save(record)
        self.record = record
        self._new_pem = ""
        if record is not None:
            try:
                self._new_pem = CertStore(self.home, "Root").get(record.new).cert_pem().decode("ascii")
            except CertificateNotFound:
                log.error(
                    "the master certificate rotation to %s cannot go on: the certificate is no longer in "
                    "the Root store; abort it: packfleet manager rotate master-cert --abort",
                    record.new,
                )
            log.info("master certificate rotation %s -> %s is %s", record.old, record.new, record.phase)

    async def _save(self, record: RotationRecord | None) -> None:
        value = record.to_json() if record is not None else ""
        await self.state.db(self.state.catalog.set_property, ROTATION_PROPERTY, value)
        self.record = record

    async def _audit(self, actor: str, action: str, target: str, details: dict[str, Any]) -> None:
        await self.state.db(self.state.catalog.audit, actor, action, target, details)

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
            if self._behind(now_accepts) and self._stale[key] < _MAX_STALE:
                # This reply tells the worker the next step; its lease long-poll, woken, asks it for
                # the heartbeat that reports the step done (else it would wait out the long-poll).
                self.state.wakeups.notify(TASKS)
        record = self.record
        announce = record is not None and record.phase == "announced" and bool(self._new_pem)
        return dataclasses.replace(
            reply,
            master_cert_thumbprint=self._serving(),
            next_master_cert_pem=self._new_pem if announce else "",
        )

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
        if key in self._hinted or self._stale.get(key, 0) >= _MAX_STALE:
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
        """A step changed what workers must do: wake their lease long-polls to ask for heartbeats."""
        self._hinted.clear()
        self._stale.clear()
        self.state.wakeups.notify(TASKS)

    async def status(self) -> dict[str, Any]:
        """The rotation and, per worker, whether it is online and which certificates it accepts."""
        record = self.record
        workers = await self.state.db(self.state.catalog.list_workers)
        now = self.state.clock()
        rows = []
        for worker in workers:
            accepts = self.accepts.get(worker.agent_id, [])
            seen = worker.last_online_time
            online = seen is not None and now - seen <= ONLINE_WINDOW
            rows.append(
                {
                    "agent_id": worker.agent_id,
                    "display_name": worker.display_name,
                    "enabled": worker.is_enabled,
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
        if self.record is not None:
            return await self.status() | {"resumed": True}
        loop_db = self.state.db
        material = await loop_db(load_tls_material, self.home)
        current = CertStore(self.home, material.binding.certstorename).get(material.thumbprint)
        new = await loop_db(successor_of, current, names=cns, days=days)
        # MakeCert ... -ss Root -sr LocalMachine: the master certificate lives in Root with its key.
        await loop_db(CertStore(self.home, "Root").add, new)
        record = RotationRecord(
            phase="announced",
            old=material.thumbprint,
            new=new.thumbprint,
            started_at=self.state.clock().isoformat(),
            actor=actor,
        )
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
        self._new_pem = new.cert_pem().decode("ascii")
        await self._save(record)
        await self._reload()  # the Root store changed: trust what it now holds
        self._announce()
        log.info("master certificate rotation started: announcing %s to the workers", new.thumbprint)
        return await self.status() | {"resumed": False}

    async def switch(self, *, actor: str, force: bool) -> dict[str, Any]:
        """Serve the new certificate: binding and SSLCertThumbprint together, then a hot swap."""
        record = self._require("switch")
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
        await self.state.db(self._validate, record.new)
        async with self._paused():
            undo = await self.state.db(self._write_files, record.new)
        try:
            await self._reload()
        except (SettingsError, PkiError):
            async with self._paused():
                await self.state.db(undo)
            with contextlib.suppress(SettingsError, PkiError):
                await self._reload()
            raise
        await self.state.db(self._export, record.new)
        switched = dataclasses.replace(record, phase="switched", switched_at=self.state.clock().isoformat())
        await self._audit(
            actor, "master-cert.switch", record.new, {"old": record.old, "forced": bool(waiting)}
        )
        await self._save(switched)
        self._announce()
        log.info("master certificate switched from %s to %s", record.old, record.new)
        return await self.status()

    async def finish(self, *, actor: str) -> dict[str, Any]:
        """Retire the old certificate from the master's Root store and end the rotation."""
        record = self._require("finish")
        if record.phase != "switched":
            raise Conflict(
                f"the master still serves {record.old}; switch to {record.new} before retiring the old one",
                fix="packfleet manager rotate master-cert",
            )
        status = await self.status()
        removed = False
        if self._serving() != record.old:
            with contextlib.suppress(CertificateNotFound):
                await self.state.db(CertStore(self.home, "Root").delete, record.old)
                removed = True
        behind = [f"{r['display_name']} ({r['agent_id']})" for r in status["workers"] if not r["promoted"]]
        await self._audit(
            actor,
            "master-cert.retire",
            record.old,
            {"new": record.new, "removed_from_root": removed, "workers_not_promoted": behind},
        )
        await self._save(None)
        if removed:
            await self._reload()
        log.info("master certificate %s retired; rotation to %s finished", record.old, record.new)
        return status | {"phase": "finished", "removed_from_root": removed}

    async def abort(self, *, actor: str) -> dict[str, Any]:
        """Give up a rotation that has not switched: the new certificate leaves the Root store."""
        record = self._require("abort")
        if record.phase != "announced":
            raise Conflict(
                f"the master already serves {record.new}; a switched rotation cannot be undone, finish it",
                fix="packfleet manager rotate master-cert",
            )
        with contextlib.suppress(CertificateNotFound):
            await self.state.db(CertStore(self.home, "Root").delete, record.new)
        await self._audit(actor, "master-cert.rotation.abort", record.new, {"old": record.old})
        await self._save(None)
        self._new_pem = ""
        await self._reload()
        self._announce()
        log.info("master certificate rotation to %s aborted", record.new)
        return await self.status() | {"phase": "aborted", "aborted": record.new}

    def _require(self, action: str) -> RotationRecord:
        if self.record is None:
            raise Conflict(
                f"no master certificate rotation is under way to {action}",
                fix="packfleet manager rotate master-cert",
            )
        return self.record

    # -- files (run on the catalog executor, off the event loop) -----------------------------------

    def _validate(self, thumbprint: str) -> None:
        """Build a server context from the new certificate before any file changes."""
        root = CertStore(self.home, "Root")
        cred = root.get(thumbprint)
        if cred.private_key is None:
            raise PkiError(
                f"the new master certificate {thumbprint} has no private key in the Root store",
                fix="packfleet manager rotate master-cert --abort, then start again",
            )
        master_server_context(root.cert_path(thumbprint), root.key_path(thumbprint), root.trust_bundle_pem())

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
