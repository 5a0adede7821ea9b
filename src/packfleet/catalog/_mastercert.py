"""What the masters of one catalog share about the fleet beyond its rows of work.

- The **master certificate rotation** (``master_cert_rotation``): its phase, both thumbprints, and
  the new certificate with its key sealed by the masters' secrets key. Any master can serve it, and
  any master can finish a rotation another one started.
- **What each worker accepts** (``master_cert_acceptances``), from its last heartbeat to any master.
- **Notifications between masters** on PostgreSQL (``NOTIFY``, sent on commit): a rotation step
  (:data:`ROTATION_CHANNEL`), a change of the trusted worker certificates (:data:`TRUST_CHANNEL`),
  and certificates whose open connections every master must close now (:data:`CUTOFF_CHANNEL`). On
  SQLite there is one master and nothing to notify.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select, text, update

from packfleet.catalog._base import CatalogBase, canonical_agent_id
from packfleet.catalog._schema import master_cert_acceptances, master_cert_rotation
from packfleet.errors import Conflict

#: A rotation step was taken; payload: the new phase.
ROTATION_CHANNEL = "packfleet_rotation"
#: A worker certificate was trusted, retired or deleted: masters bring their Root store in line.
TRUST_CHANNEL = "packfleet_trust"
#: Comma-separated thumbprints whose open connections every master closes at once.
CUTOFF_CHANNEL = "packfleet_cutoff"
#: The phases of a rotation under way; ``finished`` and ``aborted`` are kept as the last rotation.
UNDER_WAY = ("announced", "switched")
_ROW = 1
#: PostgreSQL refuses a NOTIFY payload of 8000 bytes or more; thumbprints go in batches below that.
_PAYLOAD_BYTES = 7000
_THE_ROW = select(master_cert_rotation).where(master_cert_rotation.c.id == _ROW)
_THE_ROW_UPDATE = update(master_cert_rotation).where(master_cert_rotation.c.id == _ROW)


@dataclasses.dataclass(frozen=True, slots=True)
class MasterRotationRecord:
    """A master certificate rotation: under way (announced, switched) or the last (finished, aborted)."""

    phase: str
    old: str
    new: str
    new_cert_pem: str
    new_key_sealed: str
    started_at: datetime
    actor: str
    switched_at: datetime | None
    updated_at: datetime

    @property
    def under_way(self) -> bool:
        return self.phase in UNDER_WAY


def _record(row: Any) -> MasterRotationRecord:
    return MasterRotationRecord(
        phase=row.phase,
        old=row.old_thumbprint,
        new=row.new_thumbprint,
        new_cert_pem=row.new_cert_pem,
        new_key_sealed=row.new_key_sealed,
        started_at=row.started_at,
        actor=row.actor,
        switched_at=row.switched_at,
        updated_at=row.updated_at,
    )


class MasterCertCatalog(CatalogBase):
    """The shared master certificate rotation, worker acceptances, and notifications between masters."""

    def master_rotation(self) -> MasterRotationRecord | None:
        """The rotation under way, or the last one (``finished``/``aborted``); None if there never was one."""
        with self._read() as conn:
            row = conn.execute(_THE_ROW).first()
        return None if row is None else _record(row)

    def begin_master_rotation(
        self, *, old: str, new: str, cert_pem: str, key_sealed: str, actor: str
    ) -> tuple[MasterRotationRecord, bool]:
        """Record a rotation from ``old`` to ``new`` as announced, unless one is under way already.

        Returns the rotation and whether this call began it: two masters asked at once begin one
        rotation, and the other gets it back to resume (its own new certificate is never used).
        """
        now = self.now()
        with self._write() as conn:
            row = self._locked(conn)
            if row is not None and row.phase in UNDER_WAY:
                return _record(row), False
            values = {
                "phase": "announced",
                "old_thumbprint": old,
                "new_thumbprint": new,
                "new_cert_pem": cert_pem,
                "new_key_sealed": key_sealed,
                "started_at": now,
                "actor": actor,
                "switched_at": None,
                "updated_at": now,
            }
            if row is None:
                conn.execute(master_cert_rotation.insert().values(id=_ROW, **values))
            else:
                conn.execute(
                    update(master_cert_rotation).where(master_cert_rotation.c.id == _ROW).values(values)
                )
            self._notify(conn, ROTATION_CHANNEL, "announced")
            created = conn.execute(
                select(master_cert_rotation).where(master_cert_rotation.c.id == _ROW)
            ).one()
        return _record(created), True

    def advance_master_rotation(self, new: str, phase: str, *, after: Iterable[str]) -> MasterRotationRecord:
        """Move the rotation to ``new`` from one of the phases ``after`` to ``phase``.

        Taking a step twice (two masters, or a retried request) is no error: the rotation already in
        ``phase`` is returned. Any other state raises :class:`Conflict` naming it.
        """
        now = self.now()
        allowed = tuple(after)
        with self._write() as conn:
            row = self._locked(conn)
            if row is None or row.new_thumbprint != new:
                raise Conflict(
                    f"no master certificate rotation to {new} is under way",
                    fix="packfleet manager rotate master-cert",
                )
            if row.phase == phase:
                return _record(row)
            if row.phase not in allowed:
                raise Conflict(
                    f"the master certificate rotation to {new} is {row.phase}, not {' or '.join(allowed)}",
                    fix="packfleet manager rotate master-cert",
                )
            values: dict[str, Any] = {"phase": phase, "updated_at": now}
            if phase == "switched":
                values["switched_at"] = now
            conn.execute(_THE_ROW_UPDATE.values(values))
            self._notify(conn, ROTATION_CHANNEL, phase)
            changed = conn.execute(
                select(master_cert_rotation).where(master_cert_rotation.c.id == _ROW)
            ).one()
        return _record(changed)

    def _locked(self, conn: Connection) -> Any:
        return conn.execute(_THE_ROW.with_for_update()).first()

    def record_master_cert_accepts(self, agent_id: str, accepts: list[str]) -> None:
        """What worker ``agent_id`` said it accepts in its heartbeat (any master's)."""
        self.record_master_cert_accepts_many({agent_id: accepts})

    def record_master_cert_accepts_many(self, accepts: Mapping[str, list[str]]) -> None:
        """:meth:`record_master_cert_accepts` for many workers, in one transaction."""
        if not accepts:
            return
        now = self.now()
        rows = [
            {"agent_id": canonical_agent_id(agent), "accepts": list(taken), "heard_at": now}
            for agent, taken in accepts.items()
        ]
        with self._write() as conn:
            stmt = self._insert(master_cert_acceptances)
            upsert = stmt.on_conflict_do_update(
                index_elements=["agent_id"],
                set_={"accepts": stmt.excluded.accepts, "heard_at": stmt.excluded.heard_at},
            )
            conn.execute(upsert, rows)

    def master_cert_accepts(self) -> dict[str, list[str]]:
        """What each worker accepts, by canonical agent id, as its last heartbeat said."""
        with self._read() as conn:
            rows = conn.execute(select(master_cert_acceptances)).all()
        return {row.agent_id: [str(t) for t in row.accepts] for row in rows}

    def forget_master_cert_accepts(self, agent_ids: Iterable[str]) -> None:
        """Drop the acceptances of workers that no longer exist."""
        keys = [canonical_agent_id(a) for a in agent_ids]
        if not keys:
            return
        with self._write() as conn:
            conn.execute(delete(master_cert_acceptances).where(master_cert_acceptances.c.agent_id.in_(keys)))

    # -- notifications between masters ------------------------------------------------------------

    def notify_masters(self, channel: str, payloads: Iterable[str] = ("",)) -> None:
        """Send ``channel`` to every master LISTENing on it (PostgreSQL; nothing to do on SQLite)."""
        if self.dialect != "postgresql":
            return
        with self._write() as conn:
            for payload in payloads:
                self._notify(conn, channel, payload)

    def notify_cutoff(self, thumbprints: Iterable[str]) -> None:
        """Ask every master to close the open connections of ``thumbprints`` now."""
        batches: list[str] = []
        current: list[str] = []
        for thumbprint in thumbprints:
            if current and sum(len(t) + 1 for t in current) + len(thumbprint) > _PAYLOAD_BYTES:
                batches.append(",".join(current))
                current = []
            current.append(thumbprint)
        if current:
            batches.append(",".join(current))
        if batches:
            self.notify_masters(CUTOFF_CHANNEL, batches)

    def _notify(self, conn: Connection, channel: str, payload: str) -> None:
        if self.dialect == "postgresql":
            conn.execute(
                text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload}
            )
