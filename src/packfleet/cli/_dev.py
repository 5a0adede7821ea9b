"""``packfleet dev``: a whole cluster on this machine for trying packfleet, in one command."""

from __future__ import annotations

from pathlib import Path

import click

from packfleet.cli._main import cli
from packfleet.localcluster import DevOptions, run_dev


@cli.command("dev")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 16), help="How many workers.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address the master serves on.")
@click.option("--port", type=click.IntRange(1, 65535), help="The master's port. Default: a free one.")
@click.option(
    "--home",
    "dev_home",
    type=click.Path(file_okay=False, path_type=Path),
    help="An empty directory for the cluster's homes and logs. Default: a new temporary one.",
)
def dev(workers: int, host: str, port: int | None, dev_home: Path | None) -> int:
    """Run a master and N workers on loopback with short intervals and the sample project deployed.

    Like `nomad agent -dev`: it prints the commands to try next (with the --home they need) and
    keeps the cluster up until Ctrl+C or SIGTERM, which stop every process it started. Meant for
    trying things and for development only: every node runs as you, in one directory.

    \b
    packfleet dev --workers 3
    """
    return run_dev(
        DevOptions(workers=workers, host=host, port=port, home=dev_home),
        lambda line: click.echo(line),
    )
