"""``packfleet worker run`` and ``packfleet worker install-service``."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import click

from packfleet.cli._output import CliState
from packfleet.cli._worker import worker_group
from packfleet.config import load_worker_settings, settings_path
from packfleet.errors import PackfleetError, UsageError


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
@click.option("--user", "user", metavar="USER", help="Run the service as this account (User= and Group=).")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("/etc/systemd/system/packfleet-worker.service"),
    show_default=True,
    help="Where to write the unit; '-' prints it.",
)
def worker_install_service(user: str | None, output: Path) -> None:
    """Write a systemd unit that runs `packfleet --home HOME worker run` (reload = SIGHUP).

    The same flags, output and sandbox as `packfleet master install-service` (SSIS: the
    SSISScaleOutWorker service).

    \b
    sudo packfleet worker install-service --user packfleet
    sudo systemctl daemon-reload && sudo systemctl enable --now packfleet-worker
    """
    from packfleet.worker import enable_hint, render_unit

    home = _state().home()
    unit = render_unit(home, user=user, writable=_folders_outside(home))
    if str(output) == "-":
        click.echo(unit, nl=False)
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(unit, encoding="utf-8")
        os.chmod(output, 0o644)
    except OSError as exc:
        raise UsageError(
            f"cannot write {output}: {exc.strerror or exc}",
            fix="run as root (sudo packfleet worker install-service), or pass --output FILE",
        ) from exc
    click.echo(enable_hint(output))


def _folders_outside(home: Path) -> list[Path]:
    """TasksRootFolder and ExecutionLogCacheFolder: the sandbox must let the worker write there."""
    path = settings_path(home, "worker")
    if not path.exists():
        return []
    try:
        settings = load_worker_settings(home)
    except PackfleetError:
        return []  # `worker run` will say what is wrong with the file; the unit still works for the home
    return [settings.tasks_root(home), settings.log_cache(home)]
