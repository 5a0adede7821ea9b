"""Web console users: who may sign in to the console, with which role.

The catalog stores only the argon2id hash; hashing and checking passwords is the console's work, so
the catalog never sees a password.
"""

from __future__ import annotations

from typing import Any, cast, get_args

from sqlalchemy import Row, select

from packfleet.catalog._base import CatalogBase
from packfleet.catalog._records import CONSOLE_ROLES, ConsoleRole, ConsoleUserRecord
from packfleet.catalog._schema import console_users
from packfleet.errors import Conflict, InvalidValue, NotFound

_LIST_FIX = "packfleet manager user list"


def _user(row: Row[Any]) -> ConsoleUserRecord:
    return ConsoleUserRecord(
        id=row.id,
        name=row.name,
        role=cast(ConsoleRole, row.role),
        password_hash=row.password_hash,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _check(name: str, role: str) -> None:
    if role not in CONSOLE_ROLES:
        raise InvalidValue(
            f"console role {role!r} is not one of {', '.join(get_args(ConsoleRole))}",
            fix="packfleet manager user add NAME --role viewer --password-stdin",
        )
    if not name or name != name.strip() or len(name) > 128 or any(not c.isprintable() for c in name):
        raise InvalidValue(
            f"console user name {name!r} must be 1 to 128 printable characters without leading or "
            "trailing spaces",
            fix="packfleet manager user add NAME --role viewer --password-stdin",
        )


class UserCatalog(CatalogBase):
    """Console users: add, list, change password, delete; every change audited."""

    def add_user(self, name: str, role: ConsoleRole, password_hash: str, *, actor: str) -> ConsoleUserRecord:
        """Add console user ``name``; refuses a name already taken."""
        _check(name, role)
        now = self.now()
        with self._write() as conn:
            if conn.scalar(select(console_users.c.id).where(console_users.c.name == name)) is not None:
                raise Conflict(
                    f"console user {name!r} already exists",
                    fix=f"packfleet manager user passwd {name} --password-stdin (or pick another name)",
                )
            conn.execute(
                console_users.insert().values(
                    name=name, role=role, password_hash=password_hash, created_at=now, updated_at=now
                )
            )
            self._audit(conn, actor, "user.add", name, {"role": role})
            row = conn.execute(select(console_users).where(console_users.c.name == name)).one()
        return _user(row)

    def get_user(self, name: str) -> ConsoleUserRecord:
        """Console user ``name`` (NotFound when there is none)."""
        with self._read() as conn:
            row = conn.execute(select(console_users).where(console_users.c.name == name)).first()
        if row is None:
            raise NotFound(f"no console user {name!r}", fix=_LIST_FIX)
        return _user(row)

    def list_users(self) -> list[ConsoleUserRecord]:
        """Every console user, by name."""
        with self._read() as conn:
            rows = conn.execute(select(console_users).order_by(console_users.c.name)).all()
        return [_user(row) for row in rows]

    def set_user_password(
        self, name: str, password_hash: str, *, actor: str, role: ConsoleRole | None = None
    ) -> ConsoleUserRecord:
        """Replace the password hash (and, when given, the role) of console user ``name``.

        ``updated_at`` moves, which ends every session signed in before the change.
        """
        if role is not None:
            _check(name, role)
        with self._write() as conn:
            row = conn.execute(
                select(console_users).where(console_users.c.name == name).with_for_update()
            ).first()
            if row is None:
                raise NotFound(f"no console user {name!r}", fix=_LIST_FIX)
            values: dict[str, Any] = {"password_hash": password_hash, "updated_at": self.now()}
            if role is not None:
                values["role"] = role
            conn.execute(console_users.update().where(console_users.c.id == row.id).values(**values))
            self._audit(conn, actor, "user.passwd", name, {"role": role} if role else {})
            row = conn.execute(select(console_users).where(console_users.c.id == row.id)).one()
        return _user(row)

    def delete_user(self, name: str, *, actor: str) -> ConsoleUserRecord:
        """Delete console user ``name``; its sessions stop working at their next request."""
        with self._write() as conn:
            row = conn.execute(
                select(console_users).where(console_users.c.name == name).with_for_update()
            ).first()
            if row is None:
                raise NotFound(f"no console user {name!r}", fix=_LIST_FIX)
            conn.execute(console_users.delete().where(console_users.c.id == row.id))
            self._audit(conn, actor, "user.delete", name, {"role": row.role})
        return _user(row)
