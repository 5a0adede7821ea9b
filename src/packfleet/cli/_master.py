"""``packfleet master``: set up (``init``) and run a Scale Out Master."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from packfleet.cli._main import cli
from packfleet.cli._output import CliState, json_option
from packfleet.errors import UsageError
from packfleet.pki import KEY_TYPES

if TYPE_CHECKING:
    from packfleet.provision import MasterInit


def _state() -> CliState:
    return click.get_current_context().ensure_object(CliState)


@cli.group("master")
def master_group() -> None:
    """The Scale Out Master: the node that hands package executions to workers.

    \b
    packfleet master init --cn 127.0.0.1          # certificate, binding, settings, admin identity
    packfleet master run                          # serve on PortNumber (8391)
    packfleet master install-service              # systemd unit
    packfleet master rotate-secrets-key           # new key for sensitive values, old one retired
    """


@master_group.command("init")
@click.option(
    "--cn",
    "cns",
    multiple=True,
    metavar="NAME",
    help="A name workers will use to reach the master (repeatable). Default: this machine's name and IPs.",
)
@click.option("--port", default=8391, show_default=True, type=click.IntRange(1, 65535), help="HTTPS port.")
@click.option(
    "--catalog",
    "catalog_url",
    metavar="URL",
    help="SQLAlchemy URL of the catalog. Default: sqlite:///<home>/catalog.db. "
    "For HA: postgresql+psycopg://user@host/db.",
)
@click.option(
    "--address",
    metavar="URL",
    help="The URL workers will use (SSIS MASTER_ADDRESS). Default: https://<first CN>:<port>.",
)
@click.option(
    "--existing-cert",
    metavar="THUMBPRINT",
    help="Use a certificate already in the Root store (with its key) instead of creating one.",
)
@click.option(
    "--from-node",
    "from_node",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Set up a further master on the same PostgreSQL catalog from a bundle made by "
    "'master export-node' (same certificate, trust and shared settings). Needs --catalog.",
)
@click.option("--password-stdin", is_flag=True, help="Read the --from-node bundle's password from stdin.")
@click.option("--key", "key_type", type=click.Choice(KEY_TYPES), default="ecdsa-p256", show_default=True)
@click.option("--days", default=365, show_default=True, type=click.IntRange(1, 3650))
@json_option
def master_init(
    cns: tuple[str, ...],
    port: int,
    catalog_url: str | None,
    address: str | None,
    existing_cert: str | None,
    from_node: Path | None,
    password_stdin: bool,
    key_type: str,
    days: int,
) -> None:
    """Set up this machine as the master, as SSIS setup's "Scale Out Configuration - Master Node".

    Creates a self-signed master certificate (every --cn is a CN and a SAN entry) in the Root store
    with its key (MakeCert -r -ss Root -sr LocalMachine), binds it to 0.0.0.0:PORT (netsh http add
    sslcert), writes MasterSettings.config (SSLCertThumbprint), exports master.cer for the workers
    and creates the admin certificate the manager commands use. Running it again replaces the
    certificate and keeps the binding's appid.

    \b
    packfleet --home /srv/m master init --cn master.example.com --cn 10.0.0.5
    packfleet master init --from-node node.bundle --password-stdin --catalog postgresql+psycopg://u@db/pf
    """
    # Imported here: set-up pulls in the catalog layer, which `packfleet --help` need not load.
    from packfleet.provision import init_master, init_master_from_node

    state = _state()
    if from_node is not None:
        if not catalog_url:
            raise UsageError(
                "--from-node needs --catalog: the PostgreSQL catalog the first master uses",
                fix="packfleet master init --from-node FILE --password-stdin --catalog "
                "postgresql+psycopg://USER@HOST/DB",
            )
        if existing_cert:
            raise UsageError("--from-node brings the master certificate; leave out --existing-cert")
        result = init_master_from_node(
            state.home(),
            from_node,
            _password(password_stdin, confirm=False),
            catalog_url=catalog_url,
            port=port,
            cns=cns,
            address=address,
        )
        state.emit(result.to_dict(), lambda out: _print_master(out, result))
        return
    if password_stdin:
        raise UsageError("--password-stdin goes with --from-node")
    result = init_master(
        state.home(),
        cns=cns,
        port=port,
        catalog_url=catalog_url,
        address=address,
        existing_cert=existing_cert,
        key_type=key_type,
        days=days,
    )
    state.emit(result.to_dict(), lambda out: _print_master(out, result))


@master_group.command("rotate-secrets-key")
@json_option
def master_rotate_secrets_key() -> None:
    """Seal every sensitive parameter value in the catalog with a new key and retire the old one.

    The key lives in secrets.key in the master's home (mode 0600). The command writes the new key
    there first, re-seals the stored values, then drops the old key. A running master on this home
    picks up the new key without a restart. With several masters sharing one catalog, copy the new
    secrets.key to each of them afterwards (they refuse to start without it).

    \b
    packfleet --home /var/lib/packfleet master rotate-secrets-key
    """
    # Imported here: the catalog layer is not needed for `packfleet --help`.
    from packfleet.catalog import Catalog, rotate_secrets_key
    from packfleet.config import load_master_settings
    from packfleet.secretbox import secrets_key_path

    state = _state()
    home = state.home()
    settings = load_master_settings(home)
    url = settings.resolved_catalog_url(home)
    catalog, live = Catalog.open_sealed(
        url, secrets_key_path(home), connect_timeout=settings.sql_connection_timeout_secs
    )
    with catalog:
        catalog.audit("rotate-secrets-key", "secrets.rotate", str(live.path), {})
        result = rotate_secrets_key(catalog, live)
        catalog.audit(
            "rotate-secrets-key",
            "secrets.rotated",
            result.current,
            {"retired": list(result.retired), "resealed": result.resealed},
        )
    data = {
        "key_file": str(live.path),
        "current": result.current,
        "retired": list(result.retired),
        "resealed": result.resealed,
    }

    def human(out: Console) -> None:
        out.print(f"secrets key file  {live.path}")
        out.print(f"current key       {result.current}")
        out.print(f"retired keys      {', '.join(result.retired) or 'none'}")
        out.print(f"values re-sealed  {result.resealed}")

    state.emit(data, human)


def _print_master(out: Console, result: MasterInit) -> None:
    out.print(f"master certificate  {result.thumbprint}")
    out.print(f"bound to            {result.binding.ipport} (store Root, appid {result.binding.appid})")
    out.print(f"workers connect to  {result.address}")
    out.print(f"public certificate  {result.master_cer}   <- copy to each worker (worker init --master-cert)")
    out.print(f"admin certificate   {result.admin_thumbprint}")
    out.print(f"catalog             {result.catalog_url}")
    if result.uncovered:
        out.print(
            f"not covered         {', '.join(result.uncovered)}   <- names of this host the master "
            "certificate lacks: workers must not use them"
        )
    out.print(f"next: packfleet --home {_quoted(result.home)} master run")


@master_group.command("export-node")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The bundle to write (mode 0600).",
)
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin instead of a prompt.")
@json_option
def master_export_node(out: Path, password_stdin: bool) -> None:
    """Write what a further master on the same PostgreSQL catalog needs, encrypted with a password.

    The bundle (mode 0600) holds the master certificate and key, the Root store's trusted
    certificates, the admin identity, the settings every master must agree on (CatalogUrl, sweep
    intervals, retention, TLS floor) and the home's secrets files. Use it on the other machine
    with: packfleet master init --from-node FILE --password-stdin --catalog URL.

    \b
    printf '%s\n' "$PW" | packfleet master export-node --out node.bundle --password-stdin
    """
    from packfleet.provision import export_node

    state = _state()
    result = export_node(state.home(), out, _password(password_stdin, confirm=True))

    def show(console: Console) -> None:
        console.print(f"bundle              {result.path} (mode 0600)")
        console.print(f"master certificate  {result.thumbprint}")
        console.print(f"settings            {', '.join(result.settings)}")
        console.print(f"files               {', '.join(result.files) or '-'}")
        console.print(f"trusted certificates {result.trusted}")

    state.emit(result.to_dict(), show)


def _password(from_stdin: bool, *, confirm: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    text: str = click.prompt("Bundle password", hide_input=True, confirmation_prompt=confirm)
    return text


def _quoted(path: Path) -> str:
    text = str(path)
    return f"'{text}'" if " " in text else text
