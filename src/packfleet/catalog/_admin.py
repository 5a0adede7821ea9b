"""Principals, join tokens, the audit log and master properties."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast, get_args

from sqlalchemy import Connection, Row, select, update

from packfleet.catalog._base import CatalogBase
from packfleet.catalog._records import (
    ROLES,
    AuditRecord,
    JoinTokenRecord,
    PrincipalCertificate,
    PrincipalRecord,
    Role,
)
from packfleet.catalog._schema import (
    audit_log,
    join_tokens,
    master_properties,
    principal_certificates,
    principals,
    worker_certificates,
)
from packfleet.errors import Conflict, InvalidValue, NotFound
from packfleet.thumbprint import normalize_thumbprint

_JOIN_FIX = "packfleet manager token create"
# Principals have no command of their own: the fleet inventory lists every admin and executor
# principal that holds a certificate, and the audit log every one ever added or removed.
_PRINCIPALS_FIX = "packfleet manager certs, or packfleet manager audit --action principal"


def _check_principal(name: str, role: str, thumbprint: str | None) -> str | None:
    if role not in ROLES:
        raise InvalidValue(f"role {role!r} is not one of {', '.join(get_args(Role))}")
    if not name.strip():
        raise InvalidValue("a principal needs a name")
    return normalize_thumbprint(thumbprint) if thumbprint is not None else None


def _principal(row: Row[Any]) -> PrincipalRecord:
    return PrincipalRecord(
        id=row.id,
        name=row.name,
        role=cast(Role, row.role),
        thumbprint=row.thumbprint,
        password_hash=row.password_hash,
        created_at=row.created_at,
    )


def _token(row: Row[Any]) -> JoinTokenRecord:
    return JoinTokenRecord(
        id=row.id,
        token_id=row.token_id,
        secret_hash=row.secret_hash,
        expires_at=row.expires_at,
        uses_left=row.uses_left,
        enable=row.enable,
        endpoint=row.endpoint,
        created_by=row.created_by,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


class AdminCatalog(CatalogBase):
    """Who may administer the master, how workers join, and what everyone changed."""

    # --- principals ------------------------------------------------------------------------------

    def add_principal(
        self,
        name: str,
        role: Role,
        *,
        actor: str,
        thumbprint: str | None = None,
        password_hash: str | None = None,
        cert_pem: str | None = None,
    ) -> PrincipalRecord:
        """Add an admin or executor identity: a client certificate, a console password, or both.

        ``password_hash`` is the argon2 hash (never the password). A certificate may not be both a
        principal's and a worker's: a worker certificate is never accepted for admin routes.
        ``cert_pem`` is the certificate of ``thumbprint`` (PEM, no key): kept so that every master
        sharing the catalog trusts it (see :meth:`principal_certificates`).
        """
        tp = _check_principal(name, role, thumbprint)
        if cert_pem is not None and tp is None:
            raise InvalidValue("a certificate PEM needs the thumbprint it belongs to")
        with self._write() as conn:
            if conn.scalar(select(principals.c.id).where(principals.c.name == name)) is not None:
                raise Conflict(f"principal {name!r} already exists", fix="pick another name")
            record = self._new_principal(conn, name, role, tp, password_hash, actor)
            if tp is not None and cert_pem is not None:
                self._share_certificate(conn, tp, name, cert_pem)
            return record

    def _share_certificate(self, conn: Connection, thumbprint: str, name: str, pem: str) -> None:
        # A thumbprint revoked earlier and pinned again becomes active again (same row, new owner).
        values = {"principal": name, "pem": pem, "created_at": self.now(), "revoked_at": None}
        stmt = self._insert(principal_certificates).values(thumbprint=thumbprint, **values)
        conn.execute(stmt.on_conflict_do_update(index_elements=["thumbprint"], set_=values))

    def _unshare_certificate(self, conn: Connection, thumbprint: str) -> None:
        # The row stays as a tombstone: it tells the other masters to drop the certificate from
        # their Root stores (a certificate the catalog never shared is left to the administrator).
        conn.execute(
            update(principal_certificates)
            .where(principal_certificates.c.thumbprint == thumbprint)
            .where(principal_certificates.c.revoked_at.is_(None))
            .values(revoked_at=self.now())
        )

    def principal_certificates(self) -> list[PrincipalCertificate]:
        """Every identity certificate the catalog shares, active and revoked, by thumbprint."""
        with self._read() as conn:
            rows = conn.execute(
                select(principal_certificates).order_by(principal_certificates.c.thumbprint)
            ).all()
        return [
            PrincipalCertificate(row.thumbprint, row.principal, row.pem, row.created_at, row.revoked_at)
            for row in rows
        ]

    def ensure_principal(
        self,
        name: str,
        role: Role,
        *,
        actor: str,
        thumbprint: str | None = None,
        password_hash: str | None = None,
    ) -> PrincipalRecord:
        """Make principal ``name`` exist with this role and certificate (``master init`` re-run).

        Creates it, or updates role, thumbprint and (when given) password hash of the existing one;
        audits only an actual change.
        """
        tp = _check_principal(name, role, thumbprint)
        with self._write() as conn:
            row = conn.execute(select(principals).where(principals.c.name == name).with_for_update()).first()
            if row is None:
                return self._new_principal(conn, name, role, tp, password_hash, actor)
            changes: dict[str, Any] = {}
            if row.role != role:
                changes["role"] = role
            if tp is not None and row.thumbprint != tp:
                self._refuse_taken_thumbprint(conn, tp)
                changes["thumbprint"] = tp
                if row.thumbprint is not None:
                    self._unshare_certificate(conn, row.thumbprint)  # no longer anyone's identity
            if password_hash is not None and row.password_hash != password_hash:
                changes["password_hash"] = password_hash
            if changes:
                conn.execute(update(principals).where(principals.c.id == row.id).values(**changes))
                shown = {k: v for k, v in changes.items() if k != "password_hash"}
                shown["password_changed"] = "password_hash" in changes
                self._audit(conn, actor, "principal.update", name, shown)
            return _principal(conn.execute(select(principals).where(principals.c.id == row.id)).one())

    def _new_principal(
        self,
        conn: Connection,
        name: str,
        role: Role,
        thumbprint: str | None,
        password_hash: str | None,
        actor: str,
    ) -> PrincipalRecord:
        if thumbprint is not None:
            self._refuse_taken_thumbprint(conn, thumbprint)
        conn.execute(
            principals.insert().values(
                name=name,
                role=role,
                thumbprint=thumbprint,
                password_hash=password_hash,
                created_at=self.now(),
            )
        )
        details = {"role": role, "thumbprint": thumbprint, "password": password_hash is not None}
        self._audit(conn, actor, "principal.add", name, details)
        return _principal(conn.execute(select(principals).where(principals.c.name == name)).one())

    def _refuse_taken_thumbprint(self, conn: Connection, thumbprint: str) -> None:
        owner = conn.scalar(select(principals.c.name).where(principals.c.thumbprint == thumbprint))
        if owner is not None:
            raise Conflict(f"certificate {thumbprint} already belongs to principal {owner!r}")
        worker = conn.execute(
            select(worker_certificates.c.agent_id).where(worker_certificates.c.thumbprint == thumbprint)
        ).first()
        if worker is not None:
            raise Conflict(
                f"certificate {thumbprint} is a worker certificate"
                + (f" (worker {worker.agent_id})" if worker.agent_id else "")
                + "; admin and executor clients need their own certificate",
                fix="packfleet master init creates an admin certificate",
            )

    def get_principal(self, name: str) -> PrincipalRecord:
        """The principal called ``name``."""
        with self._read() as conn:
            row = conn.execute(select(principals).where(principals.c.name == name)).first()
        if row is None:
            raise NotFound(f"no principal {name!r}", fix=_PRINCIPALS_FIX)
        return _principal(row)

    def list_principals(self) -> list[PrincipalRecord]:
        """Every principal, by name."""
        with self._read() as conn:
            rows = conn.execute(select(principals).order_by(principals.c.name)).all()
        return [_principal(row) for row in rows]

    def remove_principal(self, name: str, *, actor: str) -> PrincipalRecord:
        """Remove a principal; its certificate and password stop working at once."""
        with self._write() as conn:
            row = conn.execute(select(principals).where(principals.c.name == name).with_for_update()).first()
            if row is None:
                raise NotFound(f"no principal {name!r}", fix=_PRINCIPALS_FIX)
            conn.execute(principals.delete().where(principals.c.id == row.id))
            if row.thumbprint is not None:
                self._unshare_certificate(conn, row.thumbprint)
            self._audit(conn, actor, "principal.remove", name, {"thumbprint": row.thumbprint})
        return _principal(row)

    # --- audit and master properties -------------------------------------------------------------

    def audit(self, actor: str, action: str, target: str, details: Mapping[str, Any] | None = None) -> None:
        """Record something done outside the catalog (a store change, a binding change...)."""
        with self._write() as conn:
            self._audit(conn, actor, action, target, details)

    def list_audit(
        self,
        *,
        limit: int = 100,
        after_id: int = 0,
        newest: bool = False,
        before_id: int | None = None,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
    ) -> list[AuditRecord]:
        """Audit rows in order, after ``after_id`` (to page or follow the log).

        With ``newest`` the *last* ``limit`` rows (still oldest first), as ``manager audit`` shows them.
        ``before_id`` pages backwards from there; ``actor`` and ``target`` match exactly, ``action``
        matches itself or its prefix before a dot (``worker`` finds ``worker.disable``).
        """
        query = select(audit_log).where(audit_log.c.id > after_id)
        if before_id is not None:
            query = query.where(audit_log.c.id < before_id)
        if actor:
            query = query.where(audit_log.c.actor == actor)
        if target:
            query = query.where(audit_log.c.target == target)
        if action:
            query = query.where(
                (audit_log.c.action == action) | audit_log.c.action.startswith(action + ".", autoescape=True)
            )
        query = query.order_by(audit_log.c.id.desc() if newest else audit_log.c.id).limit(limit)
        with self._read() as conn:
            rows = conn.execute(query).all()
        if newest:
            rows = rows[::-1]
        return [
            AuditRecord(row.id, row.time, row.actor, row.action, row.target, dict(row.details))
            for row in rows
        ]

    def set_property(self, key: str, value: str) -> None:
        """Store a master property (SSIS ``catalog.master_properties``), replacing any old value."""
        now = self.now()
        with self._write() as conn:
            stmt = self._insert(master_properties).values(key=key, value=value, updated_at=now)
            conn.execute(
                stmt.on_conflict_do_update(index_elements=["key"], set_={"value": value, "updated_at": now})
            )

    def get_property(self, key: str) -> str | None:
        """A master property's value, or None when unset."""
        with self._read() as conn:
            value = conn.scalar(select(master_properties.c.value).where(master_properties.c.key == key))
        return None if value is None else str(value)

    # --- join tokens -----------------------------------------------------------------------------

    def create_join_token(
        self,
        token_id: str,
        secret_hash: str,
        *,
        expires_at: datetime,
        uses: int,
        enable: bool,
        endpoint: str,
        actor: str,
    ) -> JoinTokenRecord:
        """Store a join token: ``token_id`` is public, only the secret's hash is kept."""
        if uses < 1:
            raise InvalidValue(f"a join token needs at least one use, not {uses}")
        with self._write() as conn:
            taken = conn.scalar(select(join_tokens.c.id).where(join_tokens.c.token_id == token_id))
            if taken is not None:
                raise Conflict(f"join token {token_id!r} already exists", fix=_JOIN_FIX)
            conn.execute(
                join_tokens.insert().values(
                    token_id=token_id,
                    secret_hash=secret_hash,
                    expires_at=expires_at,
                    uses_left=uses,
                    enable=enable,
                    endpoint=endpoint,
                    created_by=actor,
                    created_at=self.now(),
                )
            )
            details = {"expires_at": expires_at, "uses": uses, "enable": enable}
            self._audit(conn, actor, "token.create", token_id, details | {"endpoint": endpoint})
            return self._load_token(conn, token_id)

    def _load_token(self, conn: Connection, token_id: str, *, lock: bool = False) -> JoinTokenRecord:
        query = select(join_tokens).where(join_tokens.c.token_id == token_id)
        row = conn.execute(query.with_for_update() if lock else query).first()
        if row is None:
            raise NotFound(f"no join token {token_id!r}", fix="packfleet manager token list")
        return _token(row)

    def get_join_token(self, token_id: str) -> JoinTokenRecord:
        """The join token ``token_id``."""
        with self._read() as conn:
            return self._load_token(conn, token_id)

    def list_join_tokens(self) -> list[JoinTokenRecord]:
        """Every join token, newest first."""
        with self._read() as conn:
            rows = conn.execute(select(join_tokens).order_by(join_tokens.c.id.desc())).all()
        return [_token(row) for row in rows]

    def revoke_join_token(self, token_id: str, *, actor: str) -> JoinTokenRecord:
        """Revoke a token so no further worker can join with it (already revoked: no change)."""
        with self._write() as conn:
            token = self._load_token(conn, token_id, lock=True)
            if token.revoked_at is None:
                conn.execute(
                    update(join_tokens)
                    .where(join_tokens.c.token_id == token_id)
                    .values(revoked_at=self.now())
                )
                self._audit(conn, actor, "token.revoke", token_id, {"uses_left": token.uses_left})
            return self._load_token(conn, token_id)
