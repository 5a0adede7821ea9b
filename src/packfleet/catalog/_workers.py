"""Workers and their certificates: the catalog half of DESIGN.md "Certificates and trust".

The TLS handshake already proved that a worker's certificate sits in the master's Root store; the
catalog decides what that certificate *means*: which worker (``AgentId``) it belongs to, and whether
that worker is enabled. SSIS keeps one certificate per worker and the seed's "change the worker
certificate" procedure swaps it by hand; here a worker may hold several, each ``active``, ``revoked``
or ``retired`` (its worker was deleted).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, bindparam, select, update

from packfleet.catalog._base import CatalogBase, canonical_agent_id
from packfleet.catalog._certificates import CertificateFacts, certificate_facts
from packfleet.catalog._records import (
    CertificateRecord,
    HeartbeatOutcome,
    Principal,
    WorkerCertificate,
    WorkerInfo,
    WorkerRecord,
)
from packfleet.catalog._schema import audit_log, principals, worker_agents, worker_certificates
from packfleet.errors import CatalogError, CatalogUnavailable, Conflict, NotFound, PackfleetError
from packfleet.thumbprint import is_thumbprint, normalize_thumbprint

_ADD_FIX = "packfleet manager worker add --cert <worker.cer> [--name NAME] [--enable] [--worker REF]"
_LIST_FIX = "packfleet manager worker list"
_NEW_CERT = '`packfleet cert create -n "CN=<worker>" --store My` on the worker'


def _certificate(row: Row[Any]) -> CertificateRecord:
    return CertificateRecord(
        thumbprint=row.thumbprint,
        sha256=row.sha256,
        agent_id=row.agent_id,
        display_name=row.display_name,
        enable_on_bind=row.enable_on_bind,
        subject=row.subject,
        not_before=row.not_before,
        not_after=row.not_after,
        status=row.status,
        created_at=row.created_at,
        pem=row.pem,
    )


def _worker(row: Row[Any], certs: Sequence[Row[Any]]) -> WorkerRecord:
    return WorkerRecord(
        agent_id=row.agent_id,
        display_name=row.display_name,
        description=row.description,
        machine_name=row.machine_name,
        tags=row.tags,
        user_account=row.user_account,
        is_enabled=row.is_enabled,
        last_online_time=row.last_online_time,
        machine_info=dict(row.machine_info),
        created_at=row.created_at,
        certificates=tuple(WorkerCertificate(c.thumbprint, c.sha256, c.not_after, c.status) for c in certs),
        clock_skew_seconds=row.clock_skew_seconds,
    )


def _machine_info(info: WorkerInfo) -> dict[str, Any]:
    return {
        "ips": list(info.ips),
        "cpu_percent": info.cpu_percent,
        "memory_free_mb": info.memory_free_mb,
        "running_tasks": info.running_tasks,
        "version": info.version,
        **({"max_tasks": info.max_tasks} if info.max_tasks > 0 else {}),
        **({"lease_gate": info.lease_gate} if info.lease_gate else {}),
    }


def _online(worker: WorkerRecord, agent_id: str, thumbprint: str) -> HeartbeatOutcome:
    """The outcome of a heartbeat the catalog recorded: the worker is enabled or disabled."""
    name = f"worker {worker.display_name!r} ({agent_id})"
    if worker.is_enabled:
        return HeartbeatOutcome("enabled", worker, f"{name} is enabled")
    return HeartbeatOutcome(
        "disabled",
        worker,
        f"{name} is registered with certificate {thumbprint} but disabled; an administrator "
        f"must enable it: packfleet manager worker enable {agent_id}",
    )


def _chunks(items: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    """``items`` a few hundred at a time: SQLite bounds the parameters of one statement."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


# The statements of the usual heartbeat and of a certificate lookup, built once. A fleet sends
# hundreds of heartbeats a second, and building a statement (and its cache key) anew each time cost
# SQLAlchemy several times what SQLite takes to run it.
_CERTS_BY_THUMBPRINT = (
    select(worker_certificates)
    .where(worker_certificates.c.thumbprint.in_(bindparam("thumbprints", expanding=True)))
    .order_by(worker_certificates.c.thumbprint)
    .with_for_update()
)
_WORKERS_BY_ID = select(worker_agents).where(
    worker_agents.c.agent_id.in_(bindparam("agent_ids", expanding=True))
)
_CERTS_OF_WORKERS = (
    select(worker_certificates)
    .where(worker_certificates.c.agent_id.in_(bindparam("agent_ids", expanding=True)))
    .order_by(worker_certificates.c.created_at, worker_certificates.c.thumbprint)
)
_PRINCIPALS_BY_THUMBPRINT = select(principals).where(
    principals.c.thumbprint.in_(bindparam("thumbprints", expanding=True))
)
_WORKER_CERTS_WITH_WORKER = (
    select(
        worker_certificates,
        worker_agents.c.display_name.label("worker_name"),
        worker_agents.c.is_enabled,
    )
    .outerjoin(worker_agents)
    .where(worker_certificates.c.thumbprint.in_(bindparam("thumbprints", expanding=True)))
)
#: A heartbeat that reports what the catalog holds already (the usual one: same machine, account,
#: figures and skew) only moves ``last_online_time``.
_SEEN_ONLINE = (
    update(worker_agents)
    .where(worker_agents.c.agent_id == bindparam("b_agent"))
    .values(last_online_time=bindparam("b_now"))
)
_REPORTED_ONLINE = (
    update(worker_agents)
    .where(worker_agents.c.agent_id == bindparam("b_agent"))
    .values(
        last_online_time=bindparam("b_now"),
        machine_name=bindparam("b_machine"),
        user_account=bindparam("b_account"),
        machine_info=bindparam("b_info", type_=worker_agents.c.machine_info.type),
        clock_skew_seconds=bindparam("b_skew"),
    )
)


def _reported(worker: WorkerRecord, info: WorkerInfo, now: datetime) -> WorkerRecord:
    """``worker`` as a heartbeat with ``info`` at ``now`` leaves it (what reading it back would give)."""
    return dataclasses.replace(
        worker,
        last_online_time=now,
        machine_name=info.machine_name,
        user_account=info.user_account,
        machine_info=_machine_info(info),
        clock_skew_seconds=info.clock_skew_seconds,
    )


def _same_report(before: WorkerRecord, after: WorkerRecord) -> bool:
    return (
        before.machine_name == after.machine_name
        and before.user_account == after.user_account
        and before.machine_info == after.machine_info
        and before.clock_skew_seconds == after.clock_skew_seconds
    )


class WorkerCatalog(CatalogBase):
    """Worker agents, their certificates, and who a client certificate belongs to."""

    # --- reading ------------------------------------------------------------------------------

    def _load_worker(self, conn: Connection, agent_id: str) -> WorkerRecord | None:
        row = conn.execute(select(worker_agents).where(worker_agents.c.agent_id == agent_id)).first()
        if row is None:
            return None
        certs = conn.execute(
            select(worker_certificates)
            .where(worker_certificates.c.agent_id == agent_id)
            .order_by(worker_certificates.c.created_at, worker_certificates.c.thumbprint)
        ).all()
        return _worker(row, certs)

    def _require_worker(self, conn: Connection, agent_id: str) -> WorkerRecord:
        worker = self._load_worker(conn, agent_id)
        if worker is None:
            raise NotFound(f"no worker with agent id {agent_id}", fix=_LIST_FIX)
        return worker

    def list_workers(self) -> list[WorkerRecord]:
        """Every worker (SSIS ``catalog.worker_agents``) with its certificates, by display name."""
        with self._read() as conn:
            rows = conn.execute(
                select(worker_agents).order_by(worker_agents.c.display_name, worker_agents.c.agent_id)
            ).all()
            certs = conn.execute(
                select(worker_certificates)
                .where(worker_certificates.c.agent_id.is_not(None))
                .order_by(worker_certificates.c.created_at, worker_certificates.c.thumbprint)
            ).all()
        by_agent: dict[str, list[Row[Any]]] = {}
        for cert in certs:
            by_agent.setdefault(cert.agent_id, []).append(cert)
        return [_worker(row, by_agent.get(row.agent_id, [])) for row in rows]

    def get_worker(self, ref: str) -> WorkerRecord:
        """Find a worker by agent id, by one of its thumbprints, or by its (unique) display name."""
        with self._read() as conn:
            agent_id = self._resolve_worker(conn, ref)
            return self._require_worker(conn, agent_id)

    def _resolve_worker(self, conn: Connection, ref: str) -> str:
        try:
            agent_id = canonical_agent_id(ref)
        except CatalogError:  # not an agent id; try the other spellings
            agent_id = None
        if agent_id is not None:
            return agent_id
        if is_thumbprint(ref):
            thumbprint = normalize_thumbprint(ref)
            cert = conn.execute(
                select(worker_certificates).where(worker_certificates.c.thumbprint == thumbprint)
            ).first()
            if cert is not None and cert.agent_id is not None:
                return str(cert.agent_id)
            state = "is pending (its worker has not sent a heartbeat yet)" if cert else "is unknown"
            raise NotFound(f"certificate {thumbprint} {state}; no worker has it", fix=_LIST_FIX)
        ids = conn.scalars(select(worker_agents.c.agent_id).where(worker_agents.c.display_name == ref)).all()
        if len(ids) == 1:
            return str(ids[0])
        if ids:
            raise Conflict(
                f"{len(ids)} workers are named {ref!r} ({', '.join(ids)}); name one by agent id",
                fix=_LIST_FIX,
            )
        raise NotFound(f"no worker has the agent id, thumbprint or name {ref!r}", fix=_LIST_FIX)

    def certificates(self) -> list[CertificateRecord]:
        """Every worker certificate the master knows, pending, bound, revoked or retired."""
        with self._read() as conn:
            rows = conn.execute(
                select(worker_certificates).order_by(
                    worker_certificates.c.created_at, worker_certificates.c.thumbprint
                )
            ).all()
        return [_certificate(row) for row in rows]

    def certificate_pem(self, thumbprint: str) -> bytes | None:
        """The PEM the catalog holds for worker certificate ``thumbprint`` (None if unknown)."""
        thumbprint = normalize_thumbprint(thumbprint)
        with self._read() as conn:
            pem = conn.scalar(
                select(worker_certificates.c.pem).where(worker_certificates.c.thumbprint == thumbprint)
            )
        return str(pem).encode() if pem else None

    def authorize(self, thumbprint: str) -> Principal | None:
        """Tell who the client certificate ``thumbprint`` belongs to, or None if nobody.

        Admin and executor certificates come from ``principals``; a worker certificate counts as
        enabled only while it is active, bound, and its worker is enabled (DESIGN.md: "the catalog
        has that thumbprint bound to an enabled worker").
        """
        return self.authorize_many([thumbprint])[normalize_thumbprint(thumbprint)]

    def authorize_many(self, thumbprints: Sequence[str]) -> dict[str, Principal | None]:
        """:meth:`authorize` for several certificates in one read, by normalized thumbprint."""
        wanted = sorted({normalize_thumbprint(t) for t in thumbprints})
        found: dict[str, Principal | None] = dict.fromkeys(wanted)
        with self._read() as conn:
            for chunk in _chunks(wanted):
                for person in conn.execute(_PRINCIPALS_BY_THUMBPRINT, {"thumbprints": list(chunk)}):
                    found[person.thumbprint] = Principal(
                        person.role, person.name, None, True, person.thumbprint, "active"
                    )
                rest = [t for t in chunk if found[t] is None]
                if not rest:
                    continue
                for row in conn.execute(_WORKER_CERTS_WITH_WORKER, {"thumbprints": rest}):
                    enabled = row.status == "active" and bool(row.is_enabled)
                    name = row.worker_name or row.display_name or row.thumbprint
                    found[row.thumbprint] = Principal(
                        "worker", name, row.agent_id, enabled, row.thumbprint, row.status
                    )
        return found

    # --- administrator changes -----------------------------------------------------------------

    def add_worker_certificate(
        self,
        pem: bytes,
        *,
        actor: str,
        display_name: str | None = None,
        agent_id: str | None = None,
        worker: str | None = None,
        enable: bool = False,
    ) -> CertificateRecord:
        """Record a worker certificate, as ``manager worker add`` does (SSIS Manager's "Connect").

        Without ``agent_id`` or ``worker`` the certificate stays *pending* until the worker that
        holds it sends its first heartbeat, which registers a *new* worker (enabled only with
        ``enable``); it never binds to an existing AgentId on its own. With ``agent_id`` it is bound
        now (the worker is created if the catalog does not know it yet); ``worker`` (agent id,
        thumbprint or name of an existing worker) binds it to that worker, as an additional
        certificate. Adding a retired certificate (its worker was deleted) makes it pending again,
        which is how a deleted worker is re-added.
        """
        facts = certificate_facts(pem)
        wanted = canonical_agent_id(agent_id) if agent_id is not None else None
        with self._write() as conn:
            if worker:
                wanted = self._resolve_worker(conn, worker)
                self._require_worker(conn, wanted)
            self._upsert_certificate(
                conn,
                facts,
                wanted,
                display_name,
                enable,
                worker_name=display_name or facts.name,
            )
            details: dict[str, Any] = {"display_name": display_name, "agent_id": wanted, "enable": enable}
            details |= {"sha256": facts.sha256, "subject": facts.subject, "not_after": facts.not_after}
            self._audit(conn, actor, "certificate.add", facts.thumbprint, details)
            if wanted is not None:
                bind = {"agent_id": wanted, "new_thumbprint": facts.thumbprint, "enabled": enable}
                self._audit(conn, actor, "certificate.bind", facts.thumbprint, bind)
            row = conn.execute(
                select(worker_certificates).where(worker_certificates.c.thumbprint == facts.thumbprint)
            ).one()
        return _certificate(row)

    def _upsert_certificate(
        self,
        conn: Connection,
        facts: CertificateFacts,
        agent_id: str | None,
        display_name: str | None,
        enable: bool,
        *,
        worker_name: str,
    ) -> None:
        """Make ``facts`` an active certificate, bound to ``agent_id`` or, without one, pending.

        A worker ``agent_id`` the catalog does not know yet is created as ``worker_name``;
        ``enable`` enables it (a pending certificate keeps ``enable`` for its first heartbeat). The
        certificate row is locked first, so two administrators adding the same certificate take
        turns, and a revoked one or one bound to another worker is refused before anything changes.
        ``display_name`` is the name a pending certificate gives its worker when it binds.
        """
        self._refuse_principal_cert(conn, facts.thumbprint)
        existing = conn.execute(
            select(worker_certificates)
            .where(worker_certificates.c.thumbprint == facts.thumbprint)
            .with_for_update()
        ).first()
        if existing is not None:
            self._check_readd(existing, agent_id)
        now = self.now()
        if agent_id is not None:
            worker = self._load_worker(conn, agent_id)
            if worker is None:
                self._create_worker(conn, agent_id, worker_name, enable, now, "")
            elif enable and not worker.is_enabled:
                conn.execute(
                    update(worker_agents).where(worker_agents.c.agent_id == agent_id).values(is_enabled=True)
                )
        values = {
            "sha256": facts.sha256,
            "agent_id": agent_id,
            "display_name": display_name,
            "enable_on_bind": enable,
            "pem": facts.pem,
            "subject": facts.subject,
            "not_before": facts.not_before,
            "not_after": facts.not_after,
            "status": "active",
        }
        if existing is None:
            conn.execute(
                worker_certificates.insert().values(thumbprint=facts.thumbprint, created_at=now, **values)
            )
        else:
            conn.execute(
                update(worker_certificates)
                .where(worker_certificates.c.thumbprint == facts.thumbprint)
                .values(**values)
            )

    @staticmethod
    def _check_readd(existing: Row[Any], wanted: str | None) -> None:
        thumbprint = existing.thumbprint
        if existing.status == "revoked":
            raise Conflict(
                f"certificate {thumbprint} was revoked and cannot be added again",
                fix=f"give the worker a new certificate ({_NEW_CERT}), then {_ADD_FIX}",
            )
        if existing.agent_id is not None and existing.agent_id != wanted:
            raise Conflict(
                f"certificate {thumbprint} is already bound to worker {existing.agent_id}",
                fix=f"delete that worker first (`packfleet manager worker delete "
                f"{existing.agent_id}`) or give this worker its own certificate",
            )

    def _refuse_principal_cert(self, conn: Connection, thumbprint: str) -> None:
        # A worker certificate is never accepted for admin routes; keep the two sets disjoint.
        owner = conn.scalar(select(principals.c.name).where(principals.c.thumbprint == thumbprint))
        if owner is not None:
            raise Conflict(
                f"certificate {thumbprint} is the certificate of {owner!r}, not of a worker",
                fix=f"give the worker its own certificate: {_NEW_CERT}",
            )

    def set_worker_enabled(
        self, agent_id: str, enabled: bool, *, actor: str, reason: str | None = None
    ) -> WorkerRecord:
        """Enable or disable a worker (SSIS ``[catalog].[enable_worker_agent]``/``disable_...``).

        A disabled worker keeps sending heartbeats but leases no new task; its running tasks finish.
        ``reason`` (the console asks for one when disabling) goes into the audit row.
        """
        agent_id = canonical_agent_id(agent_id)
        with self._write() as conn:
            self._require_worker(conn, agent_id)
            conn.execute(
                update(worker_agents).where(worker_agents.c.agent_id == agent_id).values(is_enabled=enabled)
            )
            details = {"reason": reason} if reason else None
            self._audit(conn, actor, "worker.enable" if enabled else "worker.disable", agent_id, details)
            return self._require_worker(conn, agent_id)

    def update_worker(
        self,
        agent_id: str,
        *,
        actor: str,
        description: str | None = None,
        tags: str | None = None,
        display_name: str | None = None,
    ) -> WorkerRecord:
        """Change what an administrator may set on a worker; None leaves a field as it is."""
        agent_id = canonical_agent_id(agent_id)
        changes = {
            key: value
            for key, value in (
                ("description", description),
                ("tags", tags),
                ("display_name", display_name),
            )
            if value is not None
        }
        with self._write() as conn:
            self._require_worker(conn, agent_id)
            if changes:
                conn.execute(
                    update(worker_agents).where(worker_agents.c.agent_id == agent_id).values(**changes)
                )
                self._audit(conn, actor, "worker.update", agent_id, changes)
            return self._require_worker(conn, agent_id)

    def delete_worker(self, agent_id: str, *, actor: str) -> list[str]:
        """Delete a worker and retire its certificates; return their thumbprints.

        The master should drop those thumbprints from its Root store (SSIS Manager's "Delete Worker").
        Tasks the worker had leased keep its id until the lease sweep requeues them.
        """
        agent_id = canonical_agent_id(agent_id)
        with self._write() as conn:
            worker = self._require_worker(conn, agent_id)
            thumbprints = [c.thumbprint for c in worker.certificates]
            # Keep the worker's name on its retired certificates: they outlive the worker row.
            for cert in worker.certificates:
                conn.execute(
                    update(worker_certificates)
                    .where(worker_certificates.c.thumbprint == cert.thumbprint)
                    .where(worker_certificates.c.display_name.is_(None))
                    .values(display_name=worker.display_name)
                )
            conn.execute(
                update(worker_certificates)
                .where(worker_certificates.c.agent_id == agent_id)
                .where(worker_certificates.c.status == "active")
                .values(status="retired")
            )
            conn.execute(worker_agents.delete().where(worker_agents.c.agent_id == agent_id))
            details = {"display_name": worker.display_name, "thumbprints": thumbprints}
            self._audit(conn, actor, "worker.delete", agent_id, details)
        return thumbprints

    def revoke_certificate(self, thumbprint: str, *, actor: str) -> CertificateRecord:
        """Revoke a worker certificate for good; its worker (if any) stays, with its other certs.

        The master must also close open connections of this thumbprint: TLS session tickets are
        off (``num_tickets=0``), so no resumed session can bring it back.
        """
        thumbprint = normalize_thumbprint(thumbprint)
        with self._write() as conn:
            row = conn.execute(
                select(worker_certificates)
                .where(worker_certificates.c.thumbprint == thumbprint)
                .with_for_update()
            ).first()
            if row is None:
                raise NotFound(f"no worker certificate {thumbprint}", fix=_LIST_FIX)
            if row.status != "revoked":
                conn.execute(
                    update(worker_certificates)
                    .where(worker_certificates.c.thumbprint == thumbprint)
                    .values(status="revoked")
                )
                details = {"agent_id": row.agent_id, "previous_status": row.status}
                self._audit(conn, actor, "certificate.revoke", thumbprint, details)
            row = conn.execute(
                select(worker_certificates).where(worker_certificates.c.thumbprint == thumbprint)
            ).one()
        return _certificate(row)

    # --- the worker's heartbeat ----------------------------------------------------------------

    def worker_heartbeat(
        self,
        thumbprint: str,
        info: WorkerInfo,
        *,
        pem: bytes | None = None,
        pinned: Callable[[str], bool] | None = None,
    ) -> HeartbeatOutcome:
        """Apply a worker heartbeat presented with client certificate ``thumbprint``.

        The certificate passed the TLS handshake. Then: bound to this agent -> record it online;
        pending or unknown, claiming an agent the catalog does not know -> register that new worker
        (disabled, unless the administrator added the pending certificate with ``enable``);
        pending or unknown, claiming an *existing* agent -> ``conflict``: a certificate takes over an
        existing AgentId only when an administrator named that worker for it (``manager worker add
        --worker``, ``manager worker connect``, a join token bound to the worker) or by rotation,
        never by its own say-so; bound to another agent -> ``conflict``; revoked -> ``revoked``; its
        worker was deleted -> ``deleted``. Every ``conflict`` is audited (``certificate.bind-refused``).
        ``pem`` (the peer certificate, if the caller has it) fills in subject and validity for
        certificates the catalog first hears of here.

        An unknown certificate binds only if ``pinned(thumbprint)`` says its *own* certificate is in
        the master's Root store (None: nothing is pinned, no unknown certificate binds). Passing the
        handshake is not enough: OpenSSL also accepts a certificate that merely *chains* to one in
        Root, and binding that one would let whoever holds a CA-like certificate in Root speak as
        any worker whose AgentId it claims.
        """
        prepared = self._prepare_heartbeat(thumbprint, info, pem)
        with self._write() as conn:
            return self._apply_heartbeat(conn, *prepared, pinned=pinned)

    def worker_heartbeats(
        self,
        beats: Sequence[tuple[str, WorkerInfo, bytes | None]],
        *,
        pinned: Callable[[str], bool] | None = None,
    ) -> list[HeartbeatOutcome | PackfleetError]:
        """:meth:`worker_heartbeat` for many ``(thumbprint, info, pem)`` at once, in one transaction.

        A fleet's heartbeats arrive together; one commit for all of them is what lets SQLite's one
        writer keep up. Each answer is in the order of ``beats``: the outcome, or the
        :class:`PackfleetError` that heartbeat alone raised. Applied one after the other, exactly as
        separate calls in that order would be; if the shared transaction fails, each heartbeat is
        applied again in a transaction of its own, so one bad heartbeat never fails the others.
        """
        prepared: list[tuple[str, str, WorkerInfo, bytes | None] | PackfleetError] = []
        for thumbprint, info, pem in beats:
            try:
                prepared.append(self._prepare_heartbeat(thumbprint, info, pem))
            except PackfleetError as exc:
                prepared.append(exc)
        try:
            with self._write() as conn:
                answers = self._apply_heartbeats(conn, prepared, pinned=pinned, bound_only=False)
                return [a for a in answers if a is not None]
        except CatalogUnavailable:
            raise
        except CatalogError:
            if len(prepared) == 1:
                raise
        # One of them failed the shared transaction (rolled back whole): each on its own now.
        answers_alone: list[HeartbeatOutcome | PackfleetError] = []
        for item in prepared:
            if isinstance(item, PackfleetError):
                answers_alone.append(item)
                continue
            try:
                with self._write() as conn:
                    answers_alone.append(self._apply_heartbeat(conn, *item, pinned=pinned))
            except CatalogUnavailable:
                raise
            except CatalogError as exc:
                answers_alone.append(exc)
        return answers_alone

    def bound_heartbeats(self, beats: Sequence[tuple[str, WorkerInfo]]) -> list[HeartbeatOutcome | None]:
        """Record the usual heartbeats of ``(thumbprint, info)``, in one transaction; None for the rest.

        The usual heartbeat comes with a worker's own active certificate, bound to the AgentId it
        names: its outcome is what :meth:`worker_heartbeat` would answer (``enabled`` or
        ``disabled``), and it needs none of the checks that come before a registration, so a master
        may send it before it even knows who the certificate belongs to. Any other heartbeat (an
        unknown, pending, revoked or retired certificate, another worker's, an AgentId that is not
        one) is answered None and left untouched: it goes through :meth:`worker_heartbeat` after
        those checks.
        """
        prepared: list[tuple[str, str, WorkerInfo, bytes | None] | PackfleetError] = []
        for thumbprint, info in beats:
            try:
                prepared.append(self._prepare_heartbeat(thumbprint, info, None))
            except PackfleetError as exc:
                prepared.append(exc)
        with self._write() as conn:
            answers = self._apply_heartbeats(conn, prepared, pinned=None, bound_only=True)
        return [a if isinstance(a, HeartbeatOutcome) else None for a in answers]

    def _apply_heartbeats(
        self,
        conn: Connection,
        prepared: Sequence[tuple[str, str, WorkerInfo, bytes | None] | PackfleetError],
        *,
        pinned: Callable[[str], bool] | None,
        bound_only: bool,
    ) -> list[HeartbeatOutcome | PackfleetError | None]:
        """Apply ``prepared`` heartbeats in one transaction, the usual ones together.

        The usual heartbeat is a worker's own, active, bound certificate: it only records the worker
        online. Those are written with one UPDATE for all (two when some report new figures) and
        read with three SELECTs, instead of four statements each; every other heartbeat (a
        registration, a refusal) goes through :meth:`_apply_heartbeat` in its turn, or, with
        ``bound_only``, is answered None. Heartbeats never change a bound certificate, so the two
        kinds do not depend on each other.
        """
        answers: list[HeartbeatOutcome | PackfleetError | None] = [
            item if isinstance(item, PackfleetError) and not bound_only else None for item in prepared
        ]
        thumbprints = sorted({item[0] for item in prepared if not isinstance(item, PackfleetError)})
        certs: dict[str, Row[Any]] = {}
        for chunk in _chunks(thumbprints):
            rows = conn.execute(_CERTS_BY_THUMBPRINT, {"thumbprints": list(chunk)})
            certs.update((row.thumbprint, row) for row in rows)
        usual: list[tuple[int, str, str, WorkerInfo]] = []
        for i, item in enumerate(prepared):
            if isinstance(item, PackfleetError):
                continue
            cert = certs.get(item[0])
            if cert is not None and cert.status == "active" and cert.agent_id == item[1]:
                usual.append((i, item[0], item[1], item[2]))
            elif not bound_only:
                answers[i] = self._apply_heartbeat(conn, *item, pinned=pinned)
        if usual:
            self._record_online(conn, usual, answers)
        return answers

    def _record_online(
        self,
        conn: Connection,
        usual: Sequence[tuple[int, str, str, WorkerInfo]],
        answers: list[HeartbeatOutcome | PackfleetError | None],
    ) -> None:
        """Record the usual heartbeats ``(index, thumbprint, agent id, info)``; fill in their answers.

        A worker's last heartbeat in the batch is the one that counts (as if each were applied in
        turn). Most heartbeats report the figures the catalog holds already; for those only
        ``last_online_time`` is written.
        """
        now = self.now()
        last = {agent_id: info for _i, _thumbprint, agent_id, info in usual}
        before = self._load_workers(conn, sorted(last))
        after: dict[str, WorkerRecord] = {}
        seen: list[dict[str, Any]] = []
        reported: list[dict[str, Any]] = []
        for agent_id, info in last.items():
            worker = before.get(agent_id) or self._require_worker(conn, agent_id)
            after[agent_id] = _reported(worker, info, now)
            if _same_report(worker, after[agent_id]):
                seen.append({"b_agent": agent_id, "b_now": now})
            else:
                reported.append(
                    {
                        "b_agent": agent_id,
                        "b_now": now,
                        "b_machine": info.machine_name,
                        "b_account": info.user_account,
                        "b_info": _machine_info(info),
                        "b_skew": info.clock_skew_seconds,
                    }
                )
        if seen:
            conn.execute(_SEEN_ONLINE, seen)
        if reported:
            conn.execute(_REPORTED_ONLINE, reported)
        for i, thumbprint, agent_id, _info in usual:
            answers[i] = _online(after[agent_id], agent_id, thumbprint)

    def _load_workers(self, conn: Connection, agent_ids: Sequence[str]) -> dict[str, WorkerRecord]:
        """:meth:`_load_worker` for many workers: two reads for all of them."""
        found: dict[str, WorkerRecord] = {}
        for chunk in _chunks(agent_ids):
            rows = conn.execute(_WORKERS_BY_ID, {"agent_ids": list(chunk)}).all()
            certs: dict[str, list[Row[Any]]] = {}
            for cert in conn.execute(_CERTS_OF_WORKERS, {"agent_ids": list(chunk)}):
                certs.setdefault(cert.agent_id, []).append(cert)
            found.update((row.agent_id, _worker(row, certs.get(row.agent_id, []))) for row in rows)
        return found

    def _prepare_heartbeat(
        self, thumbprint: str, info: WorkerInfo, pem: bytes | None
    ) -> tuple[str, str, WorkerInfo, bytes | None]:
        """What a heartbeat's transaction needs, worked out before it begins (raises InvalidValue)."""
        return normalize_thumbprint(thumbprint), canonical_agent_id(info.agent_id), info, pem

    def _apply_heartbeat(
        self,
        conn: Connection,
        thumbprint: str,
        agent_id: str,
        info: WorkerInfo,
        pem: bytes | None,
        *,
        pinned: Callable[[str], bool] | None,
    ) -> HeartbeatOutcome:
        now = self.now()
        cert = conn.execute(
            select(worker_certificates)
            .where(worker_certificates.c.thumbprint == thumbprint)
            .with_for_update()
        ).first()
        refusal = self._refusal(conn, cert, thumbprint, agent_id)
        if refusal is None and cert is None and (pinned is None or not pinned(thumbprint)):
            refusal = HeartbeatOutcome(
                "conflict",
                None,
                f"certificate {thumbprint} is not itself in the master's Root store (it is "
                "trusted only through a certificate that signed it); packfleet pins each worker's "
                f"own certificate: {_ADD_FIX}, or packfleet manager worker connect {agent_id} --token",
                f"{_ADD_FIX}, or packfleet manager worker connect {agent_id} --token",
            )
        if refusal is None and (cert is None or cert.agent_id is None):
            refusal = self._unnamed_claim(conn, cert, thumbprint, agent_id)
        if refusal is not None:
            if refusal.state == "conflict":
                self._audit_refusal(conn, thumbprint, agent_id, refusal.message)
            return refusal
        if cert is None:
            # Parsed only for a certificate the catalog first hears of: every later heartbeat skips it.
            facts = certificate_facts(pem) if pem is not None else None
            if facts is not None and facts.thumbprint != thumbprint:
                facts = None  # not the certificate of this connection; do not record it
            self._bind_unknown(conn, thumbprint, facts, info, agent_id)
        elif cert.agent_id is None:
            self._bind_pending(conn, cert, info, agent_id)
        conn.execute(
            update(worker_agents)
            .where(worker_agents.c.agent_id == agent_id)
            .values(
                last_online_time=now,
                machine_name=info.machine_name,
                user_account=info.user_account,
                machine_info=_machine_info(info),
                clock_skew_seconds=info.clock_skew_seconds,
            )
        )
        return _online(self._require_worker(conn, agent_id), agent_id, thumbprint)

    def _unnamed_claim(
        self, conn: Connection, cert: Row[Any] | None, thumbprint: str, agent_id: str
    ) -> HeartbeatOutcome | None:
        """Refuse a pending or unknown certificate that claims an AgentId some worker already has.

        Binding it would hand that worker's identity (its leased tasks, its enabled state) to
        whoever holds a certificate the master merely trusts. The seed's manual "change the worker
        certificate" ends here too, once: the administrator confirms with the command in ``fix``.
        """
        worker = self._load_worker(conn, agent_id)
        if worker is None:
            return None
        how = (
            "was added without naming a worker (manager worker add without --worker)"
            if cert is not None
            else "is only in the master's Root store"
        )
        fix = f"packfleet manager worker connect {agent_id} --cert {thumbprint}"
        return HeartbeatOutcome(
            "conflict",
            None,
            f"certificate {thumbprint} claims AgentId {agent_id}, which is worker "
            f"{worker.display_name!r}, but it {how}: a certificate is bound to an existing worker only "
            f"when an administrator names that worker for it. If it is {worker.display_name!r}'s new "
            f"certificate, confirm the binding on the master: {fix}; otherwise give this machine its "
            "own AgentId (packfleet worker init)",
            fix,
        )

    #: A refused bind is audited once per certificate, claimed agent and this many seconds: a
    #: refused worker retries at every heartbeat and would otherwise flood the audit log.
    REFUSAL_AUDIT_SECONDS = 3600.0

    def _audit_refusal(self, conn: Connection, thumbprint: str, agent_id: str, why: str) -> None:
        since = self.now() - timedelta(seconds=self.REFUSAL_AUDIT_SECONDS)
        recent = conn.execute(
            select(audit_log.c.details)
            .where(audit_log.c.action == "certificate.bind-refused")
            .where(audit_log.c.target == thumbprint)
            .where(audit_log.c.time >= since)
        ).all()
        if any(row.details.get("agent_id") == agent_id for row in recent):
            return
        details = {"agent_id": agent_id, "reason": why}
        self._audit(conn, f"certificate:{thumbprint}", "certificate.bind-refused", thumbprint, details)

    def refused_binds(self, thumbprint: str | None = None) -> list[tuple[str, str, str]]:
        """(thumbprint, claimed agent id, reason) of refused binds whose certificate is still unbound.

        Only those of ``thumbprint`` when given. ``doctor`` shows them with the command that
        confirms the binding, on the master and on the worker that was refused.
        """
        query = select(audit_log.c.target, audit_log.c.details).where(
            audit_log.c.action == "certificate.bind-refused"
        )
        if thumbprint is not None:
            query = query.where(audit_log.c.target == normalize_thumbprint(thumbprint))
        with self._read() as conn:
            rows = conn.execute(query.order_by(audit_log.c.id)).all()
            bound = set(
                conn.scalars(
                    select(worker_certificates.c.thumbprint).where(
                        worker_certificates.c.agent_id.is_not(None)
                    )
                ).all()
            )
            known = set(conn.scalars(select(worker_agents.c.agent_id)).all())
        found: dict[tuple[str, str], str] = {}
        for row in rows:
            agent = str(row.details.get("agent_id", ""))
            if row.target not in bound and agent in known:
                found[(row.target, agent)] = str(row.details.get("reason", ""))
        return [(t, a, r) for (t, a), r in found.items()]

    def _refusal(
        self, conn: Connection, cert: Row[Any] | None, thumbprint: str, agent_id: str
    ) -> HeartbeatOutcome | None:
        if cert is None:
            owner = conn.scalar(select(principals.c.name).where(principals.c.thumbprint == thumbprint))
            if owner is None:
                return None
            return HeartbeatOutcome(
                "conflict",
                None,
                f"certificate {thumbprint} is the certificate of {owner!r}, not of a worker; "
                f"give the worker its own certificate: {_NEW_CERT}",
                _NEW_CERT,
            )
        if cert.status == "revoked":
            worker = self._load_worker(conn, cert.agent_id) if cert.agent_id else None
            return HeartbeatOutcome(
                "revoked",
                worker,
                f"certificate {thumbprint} was revoked; re-admit worker {agent_id} with a new "
                f"certificate: packfleet manager worker connect {agent_id} --token (on the master), then "
                "packfleet worker join TOKEN (on the worker)",
            )
        if cert.status == "retired":
            owner = self._load_worker(conn, cert.agent_id) if cert.agent_id else None
            if owner is not None:
                return HeartbeatOutcome(
                    "revoked",
                    owner,
                    f"certificate {thumbprint} was replaced by a newer certificate of worker "
                    f"{cert.agent_id} (rotation or connect); use that one (packfleet doctor shows which), "
                    f"or re-admit: packfleet manager worker connect {cert.agent_id} --token",
                )
            return HeartbeatOutcome(
                "deleted",
                None,
                f"the worker that had certificate {thumbprint} was deleted; to add it again: {_ADD_FIX}",
            )
        if cert.agent_id is not None and cert.agent_id != agent_id:
            return HeartbeatOutcome(
                "conflict",
                None,
                f"certificate {thumbprint} belongs to worker {cert.agent_id}, not to agent "
                f"{agent_id}; a certificate identifies one worker. Give this worker its own "
                f"certificate, or delete the other: packfleet manager worker delete {cert.agent_id}",
                f"packfleet manager worker delete {cert.agent_id}",
            )
        return None

    def _bind_unknown(
        self,
        conn: Connection,
        thumbprint: str,
        facts: CertificateFacts | None,
        info: WorkerInfo,
        agent_id: str,
    ) -> None:
        """Register the new worker ``agent_id`` (disabled) with a certificate the catalog never saw."""
        name = info.display_name or info.machine_name
        self._create_worker(conn, agent_id, name, False, self.now(), info.machine_name)
        conn.execute(
            worker_certificates.insert().values(
                thumbprint=thumbprint,
                sha256=facts.sha256 if facts else None,
                agent_id=agent_id,
                display_name=None,
                enable_on_bind=False,
                pem=facts.pem if facts else None,
                subject=facts.subject if facts else None,
                not_before=facts.not_before if facts else None,
                not_after=facts.not_after if facts else None,
                status="active",
                created_at=self.now(),
            )
        )
        details = {"display_name": info.display_name, "machine_name": info.machine_name}
        self._audit(
            conn, f"worker:{agent_id}", "worker.register", agent_id, details | {"thumbprint": thumbprint}
        )

    def _bind_pending(self, conn: Connection, cert: Row[Any], info: WorkerInfo, agent_id: str) -> None:
        """Register the new worker ``agent_id`` with a pending certificate (``manager worker add``)."""
        # As `manager worker add --name` promises: the name holds until the worker reports its own.
        name = info.display_name or cert.display_name or info.machine_name
        enabled = bool(cert.enable_on_bind)
        self._create_worker(conn, agent_id, name, enabled, self.now(), info.machine_name)
        conn.execute(
            update(worker_certificates)
            .where(worker_certificates.c.thumbprint == cert.thumbprint)
            .values(agent_id=agent_id)
        )
        details: Mapping[str, Any] = {
            "agent_id": agent_id,
            "old_thumbprints": [],
            "new_thumbprint": cert.thumbprint,
            "enabled": enabled,
        }
        self._audit(conn, f"worker:{agent_id}", "certificate.bind", cert.thumbprint, details)

    def _create_worker(
        self,
        conn: Connection,
        agent_id: str,
        display_name: str,
        enabled: bool,
        now: datetime,
        machine_name: str,
    ) -> None:
        conn.execute(
            worker_agents.insert().values(
                agent_id=agent_id,
                display_name=display_name,
                description="",
                machine_name=machine_name,
                tags="",
                user_account="",
                is_enabled=enabled,
                last_online_time=None,
                machine_info={},
                created_at=now,
            )
        )
