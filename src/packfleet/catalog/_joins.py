"""Joining with a token, and connecting a new certificate to an existing worker, each in one transaction.

Redeeming a join token touches three things that must change together: the token's use count, the
worker certificate and its binding, and the worker's other certificates (retired when a token is
bound to an existing worker). Doing them in one transaction is what makes "a token stays usable
until a certificate has actually been delivered" hold: a use is counted only with the certificate
it admitted, and a join that failed half-way leaves the token as it was.

What a token says beyond the ``join_tokens`` columns (the worker it is bound to, the certificates it
has admitted) is kept as the master property ``join_token.<token_id>`` (JSON), so this feature
needed no schema change.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime

from sqlalchemy import Connection, select, update

from packfleet.catalog._admin import AdminCatalog
from packfleet.catalog._base import canonical_agent_id
from packfleet.catalog._certificates import CertificateFacts, certificate_facts
from packfleet.catalog._records import JoinTokenRecord, _Record
from packfleet.catalog._schema import join_tokens, master_properties, worker_certificates
from packfleet.catalog._workers import WorkerCatalog
from packfleet.errors import Conflict

_JOIN_AGAIN = "on the master: packfleet manager token create   (then: packfleet worker join TOKEN)"
_PROPERTY = "join_token."


@dataclasses.dataclass(frozen=True, slots=True)
class JoinOutcome(_Record):
    """What a redeemed join token did: which worker the certificate now belongs to, and how."""

    token_id: str
    agent_id: str
    display_name: str
    thumbprint: str
    sha256: str
    enabled: bool
    #: A retry of a join this token had already completed for this very certificate: nothing changed.
    repeated: bool
    #: The worker's earlier certificates, retired by a token bound to it (drop them from Root).
    retired: tuple[str, ...]
    uses_left: int


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectOutcome(_Record):
    """A new certificate connected to an existing worker, and the certificates it replaced."""

    agent_id: str
    display_name: str
    thumbprint: str
    enabled: bool
    retired: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class TokenBinding:
    """The master property beside a join token: its worker (if bound) and the certificates it admitted."""

    agent_id: str | None = None
    #: SHA-256 of each certificate this token admitted -> the agent id it was bound to.
    delivered: dict[str, str] = dataclasses.field(default_factory=dict)

    def dump(self) -> str:
        return json.dumps({"agent_id": self.agent_id, "delivered": self.delivered}, sort_keys=True)

    @classmethod
    def load(cls, text: str | None) -> TokenBinding:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(data.get("agent_id"), dict(data.get("delivered") or {}))


class JoinCatalog(WorkerCatalog, AdminCatalog):
    """``worker join`` and ``manager worker connect``: admitting a certificate with an atomic record."""

    def _binding(self, conn: Connection, token_id: str) -> TokenBinding:
        key = _PROPERTY + token_id
        return TokenBinding.load(
            conn.scalar(select(master_properties.c.value).where(master_properties.c.key == key))
        )

    def _save_binding(self, conn: Connection, token_id: str, binding: TokenBinding) -> None:
        now, value = self.now(), binding.dump()
        stmt = self._insert(master_properties).values(key=_PROPERTY + token_id, value=value, updated_at=now)
        conn.execute(
            stmt.on_conflict_do_update(index_elements=["key"], set_={"value": value, "updated_at": now})
        )

    def bind_join_token(self, token_id: str, agent_id: str, *, actor: str) -> None:
        """Tie a token to an existing worker: whoever joins with it becomes that worker (re-admission)."""
        agent_id = canonical_agent_id(agent_id)
        with self._write() as conn:
            self._load_token(conn, token_id, lock=True)
            self._require_worker(conn, agent_id)
            self._save_binding(conn, token_id, TokenBinding(agent_id))
            self._audit(conn, actor, "token.bind", token_id, {"agent_id": agent_id})

    def join_token_bindings(self) -> dict[str, TokenBinding]:
        """The binding of every token that has one, by token id."""
        with self._read() as conn:
            rows = conn.execute(
                select(master_properties.c.key, master_properties.c.value).where(
                    master_properties.c.key.startswith(_PROPERTY)
                )
            ).all()
        return {row.key[len(_PROPERTY) :]: TokenBinding.load(row.value) for row in rows}

    def redeem_join_token(
        self, token_id: str, pem: bytes, *, agent_id: str, display_name: str
    ) -> JoinOutcome:
        """Admit the worker certificate ``pem`` with join token ``token_id`` (its secret already checked).

        An unbound token admits a *new* worker under the ``agent_id`` the worker brings; a token bound
        to a worker (``manager worker connect --token``) admits the certificate for that worker,
        whatever ``agent_id`` says, and retires the worker's other certificates. The same certificate
        presented again with the same token is a retry (its answer was lost): it succeeds without
        spending a use, even once the token is used up or has expired, because it admits nothing
        new. A revoked token admits nothing, retries included.
        """
        facts = certificate_facts(pem)
        asked = canonical_agent_id(agent_id)
        now = self.now()
        with self._write() as conn:
            token = self._load_token(conn, token_id, lock=True)
            binding = self._binding(conn, token_id)
            if token.revoked_at is not None:
                raise Conflict(
                    f"join token {token_id} was revoked at {token.revoked_at:%Y-%m-%d %H:%M} UTC",
                    fix=_JOIN_AGAIN,
                )
            repeat = self._repeat(conn, token, binding, facts)
            if repeat is not None:
                return repeat
            self._check_usable(token, now)
            target = binding.agent_id or asked
            worker = self._load_worker(conn, target)
            if binding.agent_id is None and worker is not None:
                raise Conflict(
                    f"agent id {target} is already worker {worker.display_name!r}; a join token that "
                    "is not bound to it cannot give it a certificate",
                    fix=f"on the master: packfleet manager worker connect {target} --token",
                )
            self._upsert_certificate(
                conn, facts, target, None, token.enable, worker_name=display_name or facts.name
            )
            retired = self._retire_others(conn, target, facts.thumbprint) if worker is not None else ()
            conn.execute(
                update(join_tokens)
                .where(join_tokens.c.token_id == token_id)
                .values(uses_left=join_tokens.c.uses_left - 1)
            )
            delivered = {**binding.delivered, facts.sha256: target}
            self._save_binding(conn, token_id, dataclasses.replace(binding, delivered=delivered))
            joined = self._require_worker(conn, target)
            details = {
                "token_id": token_id,
                "thumbprint": facts.thumbprint,
                "sha256": facts.sha256,
                "enabled": joined.is_enabled,
                "retired": list(retired),
                "uses_left": token.uses_left - 1,
            }
            self._audit(conn, f"worker:{target}", "worker.join", target, details)
        return JoinOutcome(
            token_id,
            target,
            joined.display_name,
            facts.thumbprint,
            facts.sha256,
            joined.is_enabled,
            False,
            retired,
            token.uses_left - 1,
        )

    def _repeat(
        self, conn: Connection, token: JoinTokenRecord, binding: TokenBinding, facts: CertificateFacts
    ) -> JoinOutcome | None:
        agent_id = binding.delivered.get(facts.sha256)
        if agent_id is None:
            return None
        cert = conn.execute(
            select(worker_certificates).where(worker_certificates.c.thumbprint == facts.thumbprint)
        ).first()
        worker = self._load_worker(conn, agent_id)
        if cert is None or cert.status != "active" or cert.agent_id != agent_id or worker is None:
            # Admitted once, then deleted, revoked or replaced by an administrator: a retry must
            # not undo that.
            raise Conflict(
                f"join token {token.token_id} admitted certificate {facts.thumbprint} before, but it is "
                "no longer an active certificate of its worker",
                fix=_JOIN_AGAIN,
            )
        return JoinOutcome(
            token.token_id,
            agent_id,
            worker.display_name,
            facts.thumbprint,
            facts.sha256,
            worker.is_enabled,
            True,
            (),
            token.uses_left,
        )

    @staticmethod
    def _check_usable(token: JoinTokenRecord, now: datetime) -> None:
        if token.expires_at <= now:
            raise Conflict(
                f"join token {token.token_id} expired at {token.expires_at:%Y-%m-%d %H:%M} UTC",
                fix=_JOIN_AGAIN,
            )
        if token.uses_left < 1:
            raise Conflict(
                f"join token {token.token_id} is used up: it admitted as many workers as it was made for",
                fix=_JOIN_AGAIN,
            )

    def _retire_others(self, conn: Connection, agent_id: str, keep: str) -> tuple[str, ...]:
        """Retire every active certificate of ``agent_id`` but ``keep``; return their thumbprints."""
        retired = conn.scalars(
            select(worker_certificates.c.thumbprint)
            .where(worker_certificates.c.agent_id == agent_id)
            .where(worker_certificates.c.status == "active")
            .where(worker_certificates.c.thumbprint != keep)
            .order_by(worker_certificates.c.thumbprint)
        ).all()
        if retired:
            conn.execute(
                update(worker_certificates)
                .where(worker_certificates.c.thumbprint.in_(retired))
                .values(status="retired")
            )
        return tuple(retired)

    def connect_worker_certificate(self, ref: str, pem: bytes, *, actor: str) -> ConnectOutcome:
        """SSIS Manager's "delete the worker and add it again", in one step and without losing it.

        The certificate ``pem`` becomes the worker's only active certificate: its other certificates
        are retired (the master drops them from its Root store), the worker keeps its AgentId,
        enabled state, name, tags and history.
        """
        facts = certificate_facts(pem)
        with self._write() as conn:
            agent_id = self._resolve_worker(conn, ref)
            worker = self._require_worker(conn, agent_id)
            self._upsert_certificate(conn, facts, agent_id, None, False, worker_name=worker.display_name)
            retired = self._retire_others(conn, agent_id, facts.thumbprint)
            details = {
                "thumbprint": facts.thumbprint,
                "sha256": facts.sha256,
                "subject": facts.subject,
                "not_after": facts.not_after,
                "retired": list(retired),
                "enabled": worker.is_enabled,
            }
            self._audit(conn, actor, "worker.connect", agent_id, details)
        return ConnectOutcome(agent_id, worker.display_name, facts.thumbprint, worker.is_enabled, retired)
