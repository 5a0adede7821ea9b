"""``packfleet manager identity``: certificates for people and scripts that administer the master.

The key is made here and never leaves this machine; only the certificate travels to the master,
which pins it to the role. The files are what ``--admin-cert``/``--admin-key`` (or
``PACKFLEET_ADMIN_CERT``/``PACKFLEET_ADMIN_KEY``) take on the administrator's own machine.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import click
from rich.console import Console

from packfleet.cli._client import call, state
from packfleet.cli._manager import manager_group
from packfleet.cli._output import Column, json_option, print_table, short_time
from packfleet.errors import UsageError
from packfleet.pki import create_self_signed
from packfleet.protocol import IDENTITY_ROLES, identity_name_problem


@manager_group.group("identity")
def identity_group() -> None:
    """Identities for administering from other machines: admin, executor or viewer.

    \b
    packfleet manager identity create alice --role viewer --out ./alice
    packfleet --master https://HOST:8391 --master-cert master.cer \\
              --admin-cert alice/alice.crt --admin-key alice/alice.key manager worker list
    packfleet manager identity revoke alice
    """


def _write(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never overwrite an identity someone may still use; the mode is set at creation, so
    # the key is never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)  # the umask may have narrowed it; never widened


@identity_group.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(IDENTITY_ROLES), required=True, help="What the identity may do.")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for NAME.crt and NAME.key (created if missing).",
)
@click.option("--days", default=365, show_default=True, type=click.IntRange(1, 3650))
@json_option
def identity_create(name: str, role: str, out_dir: Path, days: int) -> None:
    """Make NAME.crt and NAME.key (PEM, key 0600) and pin the certificate on the master with ROLE.

    admin: everything. executor: reads, and runs and cancels executions. viewer: reads only.
    """
    # The master's rule (the protocol's), before a key is made; and no leading "." here, where the
    # name also names the files (NAME.crt would be hidden, ".." a directory).
    problem = identity_name_problem(name)
    if problem is not None or name.startswith("."):
        raise UsageError(
            problem or f"{name!r} is not a usable identity name", fix="a plain name such as alice or ci-bot"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    taken = [str(p) for p in (cert_file, key_file) if p.exists()]
    if taken:
        raise UsageError(
            f"{', '.join(taken)} already exist; an identity's files are never overwritten",
            fix=f"pick another --out directory, or: packfleet manager identity revoke {name} and remove them",
        )
    cred = create_self_signed([f"packfleet-{role}-{name}"], days=days)
    _write(key_file, cred.key_pem(), 0o600)
    _write(cert_file, cred.cert_pem(), 0o644)
    try:
        record = call(lambda c: c.create_identity(name, role, cred.cert_pem().decode()))
    except BaseException:
        # Not pinned: files for an identity that does not exist would only mislead.
        for path in (cert_file, key_file):
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    shown = record.wire() | {"cert_file": str(cert_file), "key_file": str(key_file)}

    def human(out: Console) -> None:
        out.print(f"identity {name} ({role}) pinned on the master: certificate {record.thumbprint}")
        out.print(f"  {cert_file}\n  {key_file}  (mode 0600: keep it private)")
        out.print(
            "use it from any machine: packfleet --master URL --master-cert master.cer "
            f"--admin-cert {cert_file} --admin-key {key_file} manager worker list"
        )

    state().emit(shown, human)


@identity_group.command("list")
@json_option
def identity_list() -> None:
    """List identities: name, role, certificate thumbprint, expiry."""
    rows = call(lambda c: c.list_identities())

    def human(out: Console) -> None:
        lines = [
            [
                r.name,
                r.role,
                r.thumbprint or "-",
                short_time(r.not_after),
                short_time(r.created_at),
            ]
            for r in rows
        ]
        columns: list[Column | str] = ["name", "role", Column("thumbprint", key=True)]
        print_table(out, [*columns, Column("expires", key=True), Column("created", key=True)], lines)

    state().emit(rows, human)


@identity_group.command("revoke")
@click.argument("name")
@json_option
def identity_revoke(name: str) -> None:
    """Revoke an identity: its certificate stops working at once and its connections close."""
    record = call(lambda c: c.revoke_identity(name))
    state().emit(record, lambda out: out.print(f"identity {name} revoked ({record.thumbprint})"))
