"""``packfleet master run`` and ``packfleet master install-service``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from packfleet.cli._master import master_group
from packfleet.cli._output import CliState
from packfleet.errors import UsageError


def _state() -> CliState:
    return click.get_current_context().ensure_object(CliState)


@master_group.command("run")
@click.option(
    "--host",
    default="0.0.0.0",  # noqa: S104 - HTTP.SYS's binding is for 0.0.0.0; the master listens there too
    show_default=True,
    help="Address to listen on (127.0.0.1 keeps the master to this machine).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Listen on this port instead of PortNumber (the binding for PortNumber still names the "
    "certificate); 0 picks a free port.",
)
def run_command(host: str, port: int | None) -> None:
    """Serve until SIGTERM or SIGINT; SIGHUP reloads settings, binding and certificates.

    Logs go to stderr, one line per start, stop, reload and refusal. Stopping is graceful: the master
    stops accepting, answers waiting long-polls, lets requests in flight finish and closes the catalog.
    """
    from packfleet.master import run_master

    run_master(_state().home(), host=host, port=port)


@master_group.command("install-service")
@click.option("--user", "user", metavar="USER", help="Run the service as this account (User= and Group=).")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("/etc/systemd/system/packfleet-master.service"),
    show_default=True,
    help="Where to write the unit; '-' prints it.",
)
def install_service_command(user: str | None, output: Path) -> None:
    """Write a systemd unit that runs `packfleet --home HOME master run` (reload = SIGHUP)."""
    from packfleet.master import enable_hint, systemd_unit

    unit = systemd_unit(_state().home(), user=user)
    if str(output) == "-":
        click.echo(unit, nl=False)
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(unit)
        os.chmod(output, 0o644)
    except OSError as exc:
        raise UsageError(
            f"cannot write {output}: {exc.strerror or exc}",
            fix="run as root (sudo packfleet master install-service), or pass --output FILE",
        ) from exc
    click.echo(enable_hint(output))
