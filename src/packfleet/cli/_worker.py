"""``packfleet worker``: set up (``init``) and run a Scale Out Worker."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from packfleet.cli._main import cli
from packfleet.cli._output import CliState, json_option
from packfleet.pki import KEY_TYPES

if TYPE_CHECKING:
    from packfleet.provision import WorkerInit


def _state() -> CliState:
    return click.get_current_context().ensure_object(CliState)


@cli.group("worker")
def worker_group() -> None:
    """A Scale Out Worker: runs the packages the master hands it.

    \b
    packfleet worker init --master https://10.0.0.5:8391 --master-cert master.cer
    packfleet worker run                            # registers, waits to be enabled, runs tasks
    """


@worker_group.command("init")
@click.option(
    "--master",
    "master_urls",
    required=True,
    multiple=True,
    metavar="URL",
    help="https://MASTER:PORT. Repeat for masters sharing one PostgreSQL catalog: the worker uses the "
    "one it last reached and fails over to the others in order.",
)
@click.option(
    "--master-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The master's public certificate (master.cer from its home); installed into Root and pinned.",
)
@click.option(
    "--master-thumbprint",
    metavar="THUMBPRINT",
    help="Pin a master certificate that is already in this node's Root store.",
)
@click.option("--name", metavar="NAME", help="Display name and first CN. Default: the machine name.")
@click.option("--ip", metavar="IP", help="The worker's address, the second CN. Default: its first IP.")
@click.option("--key", "key_type", type=click.Choice(KEY_TYPES), default="ecdsa-p256", show_default=True)
@click.option("--days", default=365, show_default=True, type=click.IntRange(1, 3650))
@json_option
def worker_init(
    master_urls: tuple[str, ...],
    master_cert: Path | None,
    master_thumbprint: str | None,
    name: str | None,
    ip: str | None,
    key_type: str,
    days: int,
) -> None:
    """Set up this machine as a worker of the master at URL.

    Creates the worker certificate CN=<name>;CN=<ip> in My (MakeCert -r -ss My), also trusts it in
    this node's Root store (seed step 2), installs the master certificate into Root and pins it
    (MasterHttpsCertThumbprint), writes WorkerSettings.config and exports worker.cer. Give worker.cer
    to the master's administrator: packfleet manager worker add --cert worker.cer.

    \b
    packfleet --home /srv/w worker init --master https://127.0.0.1:8391 --master-cert /srv/m/master.cer
    packfleet worker init --master https://m1:8391 --master https://m2:8391 --master-cert master.cer
    """
    # Imported here: set-up pulls in the catalog layer, which `packfleet --help` need not load.
    from packfleet.provision import init_worker

    state = _state()
    result = init_worker(
        state.home(),
        master_url=",".join(master_urls),
        master_cert=master_cert,
        master_thumbprint=master_thumbprint,
        name=name,
        ip=ip,
        key_type=key_type,
        days=days,
    )
    for warning in result.warnings:
        state.note(f"[yellow]warning:[/] {warning}")
    state.emit(result.to_dict(), lambda out: _print_worker(out, result))


def _print_worker(out: Console, result: WorkerInit) -> None:
    out.print(f"worker certificate  {result.thumbprint}")
    out.print(f"agent id            {result.agent_id}")
    out.print(f"display name        {result.display_name}")
    out.print(f"master              {result.master_endpoint} (pinned {result.master_thumbprint or '-'})")
    out.print(f"public certificate  {result.worker_cer}   <- on the master: manager worker add --cert")
