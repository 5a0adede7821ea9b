"""``packfleet worker run`` and ``packfleet worker install-service``."""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import sys
from pathlib import Path

import click

from packfleet.cli._output import CliState
from packfleet.cli._worker import worker_group
from packfleet.errors import UsageError


def _state() -> CliState:
    return click.get_current_context().ensure_object(CliState)


@worker_group.command("run")
@click.option(
    "--burst",
    is_flag=True,
    help="Run the tasks there are, deliver every event and report, then exit (for scripts and tests).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug lines too.")
def worker_run(burst: bool, verbose: bool) -> None:
    """Run the Scale Out Worker of this home until SIGTERM or SIGINT.

    It registers with the master through its first heartbeat and waits, disabled, until an
    administrator enables it (packfleet manager worker enable AGENT_ID); then it leases tasks, runs
    their packages and sends every event message. SIGHUP re-reads WorkerSettings.config and the
    certificates; SIGTERM stops leasing, lets running tasks finish for 30 s, then cancels them.
    Log lines go to stderr.
    """
    from packfleet.worker import run_worker

    # Plain lines on stderr: journald adds its own timestamps, and people read them in a terminal.
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # As the systemd unit's UMask=0077: task folders, the log cache and whatever packages write in
    # them (packages inherit it) are private to the worker's account, also when started by hand.
    os.umask(0o077)
    asyncio.run(run_worker(_state().home(), burst=burst))


@worker_group.command("install-service")
@click.option(
    "--user", "user", metavar="USER", help="Account the service runs as. Default: the current user."
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the unit here (e.g. /etc/systemd/system/packfleet-worker.service) instead of printing it.",
)
def worker_install_service(user: str | None, output: Path | None) -> None:
    """Write a systemd unit that runs this worker as a service (SSIS: the SSISScaleOutWorker service).

    \b
    sudo packfleet worker install-service --user packfleet \\
         --output /etc/systemd/system/packfleet-worker.service
    sudo systemctl daemon-reload && sudo systemctl enable --now packfleet-worker
    """
    from packfleet.worker import install_hint, render_unit

    state = _state()
    text = render_unit(state.home(), user=user or getpass.getuser())
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(
            f"cannot write the unit to {output}: {exc.strerror or exc}",
            fix="run it with sudo, or pass --output in a folder you may write",
        ) from exc
    state.note(f"wrote {output}; now: {install_hint(output)}")
