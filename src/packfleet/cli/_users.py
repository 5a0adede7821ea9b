"""``packfleet manager user``: web console users (argon2id passwords, roles viewer/operator/admin).

Run on the master machine: the commands open the catalog named by this home's MasterSettings.config,
since a password must never travel through a command line or an API without need. Passwords come
from standard input only (``--password-stdin``), never from an argument that ``ps`` would show.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from packfleet.cli._manager import manager_group
from packfleet.cli._output import CliState, json_option
from packfleet.config import load_master_settings
from packfleet.errors import UsageError

if TYPE_CHECKING:
    from packfleet.catalog import Catalog, ConsoleUserRecord

#: The catalog's CONSOLE_ROLES (tests/cli keeps them equal). The catalog and the console are imported
#: by these commands only when they run: at import they load SQLAlchemy and argon2, which every
#: other ``packfleet`` command would pay for at start.
CONSOLE_ROLES = ("viewer", "operator", "admin")


def _state() -> CliState:
    return click.get_current_context().ensure_object(CliState)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@contextmanager
def _catalog() -> Iterator[Catalog]:
    from packfleet.catalog import Catalog

    home = _state().home()
    settings = load_master_settings(home)  # names `packfleet master init` when there is no master here
    catalog = Catalog.open(
        settings.resolved_catalog_url(home), connect_timeout=settings.sql_connection_timeout_secs
    )
    try:
        yield catalog
    finally:
        catalog.close()


def _hash(password: str) -> str:
    from packfleet.console import hash_password

    return hash_password(password)


def _read_password(use_stdin: bool) -> str:
    if not use_stdin:
        raise UsageError(
            "give the password on standard input, so it shows in no process list or shell history",
            fix="printf '%s' \"$PASSWORD\" | packfleet manager user add NAME --role viewer --password-stdin",
        )
    text = sys.stdin.read()
    # One trailing newline is what `echo` adds; anything else is part of the password.
    return text[:-1] if text.endswith("\n") else text


def _shown(user: ConsoleUserRecord) -> dict[str, str]:
    return {
        "name": user.name,
        "role": user.role,
        "created_at": user.created_at.isoformat(),
        "updated_at": user.updated_at.isoformat(),
    }


_ROLE = click.Choice(CONSOLE_ROLES)


@manager_group.group("user")
def user_group() -> None:
    """Web console users: viewer reads; operator also stops executions and enables or disables workers;
    admin does everything.

    \b
    printf '%s' "$PASSWORD" | packfleet manager user add alice --role operator --password-stdin
    packfleet manager user list
    """


@user_group.command("add")
@click.argument("name")
@click.option("--role", type=_ROLE, required=True, help="viewer, operator or admin.")
@click.option("--password-stdin", "password_stdin", is_flag=True, help="Read the password from stdin.")
@json_option
def add_command(name: str, role: str, password_stdin: bool) -> None:
    """Add a console user NAME with a password read from standard input."""
    password_hash = _hash(_read_password(password_stdin))
    with _catalog() as catalog:
        user = catalog.add_user(name, role, password_hash, actor=_actor())  # type: ignore[arg-type]
    _state().emit(_shown(user), lambda out: out.print(f"console user {user.name} added ({user.role})"))


@user_group.command("list")
@json_option
def list_command() -> None:
    """List console users and their roles."""
    with _catalog() as catalog:
        users = catalog.list_users()

    def human(out: Console) -> None:
        table = Table("name", "role", "created", "password changed")
        for user in users:
            table.add_row(
                user.name, user.role, f"{user.created_at:%Y-%m-%d %H:%M}", f"{user.updated_at:%Y-%m-%d %H:%M}"
            )
        out.print(
            table
            if users
            else "no console user yet: packfleet manager user add NAME --role admin --password-stdin"
        )

    _state().emit([_shown(u) for u in users], human)


@user_group.command("passwd")
@click.argument("name")
@click.option("--role", type=_ROLE, default=None, help="Also change the role.")
@click.option("--password-stdin", "password_stdin", is_flag=True, help="Read the new password from stdin.")
@json_option
def passwd_command(name: str, role: str | None, password_stdin: bool) -> None:
    """Set a new password (and optionally role) for NAME; its open sessions end."""
    password_hash = _hash(_read_password(password_stdin))
    with _catalog() as catalog:
        user = catalog.set_user_password(name, password_hash, actor=_actor(), role=role)  # type: ignore[arg-type]
    _state().emit(
        _shown(user), lambda out: out.print(f"console user {user.name}: password changed ({user.role})")
    )


@user_group.command("delete")
@click.argument("name")
@json_option
def delete_command(name: str) -> None:
    """Delete console user NAME; its open sessions end at their next request."""
    with _catalog() as catalog:
        user = catalog.delete_user(name, actor=_actor())
    _state().emit(_shown(user), lambda out: out.print(f"console user {user.name} deleted"))
