"""Certificate rotation in the catalog: a worker's superseded certificate, retired on its request.

SSIS's "change the worker certificate" procedure ends with the old certificate deleted by hand
(``certmgr /del``); packfleet's rotation does the same through the master, and this is the record of
it: the old certificate becomes ``retired`` (refused as a deleted worker's would be), its worker and
its new certificate stay as they are.
"""

from __future__ import annotations

from sqlalchemy import select, update

from packfleet.catalog._base import CatalogBase, canonical_agent_id
from packfleet.catalog._schema import worker_certificates
from packfleet.errors import Conflict, NotFound
from packfleet.thumbprint import normalize_thumbprint


class RotationCatalog(CatalogBase):
    """What a certificate rotation changes in the catalog."""

    def retire_worker_certificate(
        self, thumbprint: str, *, agent_id: str, replaced_by: str, actor: str
    ) -> bool:
        """Retire ``thumbprint`` of worker ``agent_id`` now that ``replaced_by`` (active) serves it.

        Returns False when it was retired already (a retried request). Refuses a certificate of
        another worker, a revoked one (revocation is final and stays visible as such), and a
        replacement that is not an active certificate of the same worker, so a worker can never
        retire the only certificate it has.
        """
        thumbprint = normalize_thumbprint(thumbprint)
        replaced_by = normalize_thumbprint(replaced_by)
        agent_id = canonical_agent_id(agent_id)
        if thumbprint == replaced_by:
            raise Conflict(
                f"certificate {thumbprint} cannot replace itself",
                fix="retire the old certificate while connected with the new one",
            )
        with self._write() as conn:
            rows = {
                row.thumbprint: row
                for row in conn.execute(
                    select(worker_certificates)
                    .where(worker_certificates.c.thumbprint.in_([thumbprint, replaced_by]))
                    .with_for_update()
                ).all()
            }
            old, new = rows.get(thumbprint), rows.get(replaced_by)
            if old is None or old.agent_id != agent_id:
                raise NotFound(
                    f"worker {agent_id} has no certificate {thumbprint}",
                    fix="packfleet manager worker show " + agent_id,
                )
            if new is None or new.agent_id != agent_id or new.status != "active":
                raise Conflict(
                    f"certificate {replaced_by} is not an active certificate of worker {agent_id}, so "
                    f"it cannot take over from {thumbprint}",
                    fix="register the new certificate first (packfleet worker rotate-cert does both)",
                )
            if old.status == "retired":
                return False
            if old.status != "active":
                raise Conflict(
                    f"certificate {thumbprint} of worker {agent_id} is {old.status}, not active",
                    fix="packfleet manager worker show " + agent_id,
                )
            conn.execute(
                update(worker_certificates)
                .where(worker_certificates.c.thumbprint == thumbprint)
                .values(status="retired")
            )
            details = {"agent_id": agent_id, "replaced_by": replaced_by}
            self._audit(conn, actor, "certificate.retire", thumbprint, details)
        return True
