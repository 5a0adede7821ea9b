"""Certificate rotation and revocation commands, without downtime.

``packfleet manager rotate master-cert`` runs the seed's "change the master certificate" (steps 1-5)
through the master's admin API: announce, wait for every worker, switch, retire (the library's
:class:`packfleet.manager.MasterCertRotator`; this module only prints it). ``packfleet worker
rotate-cert`` runs "change the worker certificate" (steps 1-6) on a worker (the library's
:class:`packfleet.worker.WorkerCertRotator`). ``packfleet manager
worker revoke-cert`` refuses a certificate for good and cuts its open connections.
"""

from __future__ import annotations

import asyncio

import click
from rich.console import Console

from packfleet.cli._client import call, state
from packfleet.cli._manager import manager_group, worker_admin
from packfleet.cli._output import json_option, print_table
from packfleet.cli._worker import worker_group
from packfleet.manager import MasterCertRotator, RotationResult, worker_label
from packfleet.protocol import RotationStatus


@manager_group.group("rotate")
def rotate_group() -> None:
    """Rotate certificates without stopping anything."""


def _print_rotation(out: Console, result: RotationResult | RotationStatus) -> None:
    if isinstance(result, RotationStatus):  # an abort
        out.print(f"rotation to {result.aborted} aborted; the master keeps serving {result.serving}")
        return
    finished = result.finished
    out.print(f"the master serves {finished.new}; {finished.old} is retired")
    rows: list[list[str]] = []
    for row in result.workers:
        done = "[green]rotated[/]" if row.promoted else "[yellow]needs the manual steps[/]"
        rows.append(
            [
                worker_label(row),
                "yes" if row.online else "no",
                "yes" if row.enabled else "no",
                ", ".join(row.accepts) or "-",
                done,
            ]
        )
    print_table(out, ["worker", "online", "enabled", "accepts", "status"], rows)
    if result.behind:
        out.print(f"{len(result.behind)} worker(s) did not take part; on each of them (seed steps 5.1-5.3):")
        for step in finished.manual_steps:
            out.print(f"  {step}")


@rotate_group.command("master-cert")
@click.option(
    "--cn",
    "cns",
    multiple=True,
    metavar="NAME",
    help="Names of the new certificate. Default: those of the current one.",
)
@click.option("--days", type=click.IntRange(1, 3650), help="Validity. Default: the current certificate's.")
@click.option(
    "--timeout",
    default=120.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds to wait for the workers at each step.",
)
@click.option(
    "--force", is_flag=True, help="Switch even if online workers have not accepted the new certificate."
)
@click.option("--abort", is_flag=True, help="Give up a rotation that has not switched yet.")
@json_option
def rotate_master_cert(
    cns: tuple[str, ...], days: int | None, timeout: float, force: bool, abort: bool
) -> None:
    """Replace the master certificate without stopping the master or any worker.

    The master makes the new certificate and announces it to every worker through their heartbeat;
    each worker trusts it beside the current one. When all online workers have said so, the master
    switches its binding and SSLCertThumbprint and serves the new certificate (no restart); the
    workers pin it and drop the old one, then the master retires the old one from its Root store.
    Workers that were offline are listed with the steps they still need. Run it again to resume a
    rotation (even after a master restart); --abort gives up one that has not switched.

    \b
    packfleet manager rotate master-cert
    packfleet manager rotate master-cert --cn master.example.com --cn 10.0.0.5 --days 730
    """
    st = state()

    async def run() -> RotationResult | RotationStatus:
        async with MasterCertRotator(st.home(), note=st.note, timeout=timeout) as rotation:
            if abort:
                return await rotation.abort()
            return await rotation.run(cns=list(cns), days=days, force=force)

    result = asyncio.run(run())
    st.emit(result, lambda out: _print_rotation(out, result))


@worker_admin.command("revoke-cert")
@click.argument("thumbprint")
@json_option
def worker_revoke_cert(thumbprint: str) -> None:
    """Revoke a worker certificate for good: refused from the next request, open connections closed.

    \b
    packfleet manager worker revoke-cert 3F2A...
    """
    record = call(lambda c: c.revoke_certificate(thumbprint))
    state().emit(
        record,
        lambda out: out.print(
            f"certificate {record.thumbprint} revoked (worker {record.agent_id or '-'}); "
            "its open connections are closed"
        ),
    )


@worker_group.command("rotate-cert")
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds to wait for the running agent to switch.",
)
@json_option
def worker_rotate_cert(timeout: float) -> None:
    """Replace this worker's certificate without stopping it.

    Makes a new certificate with the same names, registers it with the master over the current one
    (the master trusts it and binds it to this AgentId), sets WorkerHttpsCertThumbprint, tells the
    running `worker run` (SIGHUP, by <home>/worker.pid) to switch, and retires the old certificate
    on both sides. An expired certificate cannot be rotated: the worker must be admitted again.

    \b
    packfleet worker rotate-cert
    """
    from packfleet.worker import WorkerCertRotator

    st = state()
    rotation = WorkerCertRotator(st.home(), note=st.note, timeout=timeout)
    result = asyncio.run(rotation.run())

    def human(out: Console) -> None:
        out.print(f"worker certificate {result.new} in use (worker.cer exported)")
        if result.retired:
            out.print(f"old certificate {result.old} retired on the master and deleted here")
        else:
            out.print(
                f"old certificate {result.old} not retired yet: the worker retires it at its next "
                "heartbeat (or run this command again)"
            )

    st.emit(result, human)
