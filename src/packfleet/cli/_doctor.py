"""``packfleet doctor``: check this home's settings, certificates, keys and master, with fixes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from packfleet.cli._main import cli
from packfleet.cli._output import CliState, json_option

if TYPE_CHECKING:
    from packfleet.doctor import Report

_STYLE = {"ok": "[green]ok[/]", "warning": "[yellow]warning[/]", "error": "[red]error[/]"}


@cli.command("doctor")
@click.option(
    "--unit",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The service's systemd unit, whose User= must read the keys. Default: <home>/packfleet-*.service, "
    "or the one in /etc/systemd/system that names this home; else the current user.",
)
@click.option("--offline", is_flag=True, help="Skip the checks that connect to the master.")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too (certificates within 30 days...).")
@click.option("--all", "show_all", is_flag=True, help="Show the checks that passed too.")
@json_option
def doctor(unit: Path | None, offline: bool, strict: bool, show_all: bool) -> int:
    """Check a master home and/or a worker home; print what is wrong and the command that fixes it.

    Master: MasterSettings.config, the binding of 0.0.0.0:<PortNumber> against SSLCertThumbprint, the
    bound certificate and its key (present, matching, mode 0600, readable by the service account),
    expiry (warnings at 30 and 7 days), MasterAddress among the certificate's names, the catalog
    (reachable, migrated), the admin certificate.

    Worker: WorkerSettings.config, WorkerHttpsCertThumbprint in its store with its key (readable by
    the unit's User=), MasterHttpsCertThumbprint in Root, the endpoint host among the master
    certificate's names, expiry of both, then the master itself: which certificate it serves (the
    "thumbprint mismatch"), mutual TLS with this worker's identity, and clock skew.

    \b
    Exit status: 0 when nothing is an error (warnings allowed), 1 when any check is an error
    (with --strict: any warning too). --json prints the list of findings:
    [{"check": "worker.master-pin", "severity": "error", "message": "...", "fix": "..."}]
    """
    from packfleet.doctor import run_doctor

    state = click.get_current_context().ensure_object(CliState)
    report = run_doctor(state.home(), unit=unit, probe=not offline)
    state.emit([f.to_dict() for f in report.findings], lambda out: _print(out, report, show_all))
    return report.exit_code(strict=strict)


def _print(out: Console, report: Report, show_all: bool) -> None:
    shown = [f for f in report.findings if show_all or f.severity != "ok"]
    roles = " and ".join(report.roles) or "no"
    if shown:
        table = Table("", "check", "finding", "fix", show_lines=True)
        for finding in shown:
            table.add_row(_STYLE[finding.severity], finding.check, finding.message, finding.fix or "")
        out.print(table)
    passed = sum(1 for f in report.findings if f.severity == "ok")
    out.print(
        f"{roles} home: {len(report.errors)} error(s), {len(report.warnings)} warning(s), {passed} check(s) "
        "passed" + ("" if show_all or not passed else " (--all shows them)")
    )
