"""Run the checks that fit a home: master checks where MasterSettings.config is, worker checks where
WorkerSettings.config is (a home can be both, as a one-machine cluster is)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from packfleet.config import settings_path
from packfleet.doctor._checks_master import check_master
from packfleet.doctor._checks_worker import check_worker
from packfleet.doctor._findings import Report, error


def run_doctor(
    home: Path,
    *,
    now: datetime | None = None,
    unit: Path | None = None,
    probe: bool = True,
) -> Report:
    """Check ``home`` and return every finding.

    ``unit`` is the systemd unit whose ``User=`` must be able to read the private keys (default:
    ``<home>/packfleet-*.service`` or the one in ``/etc/systemd/system`` that names this home; the
    current user when there is none). ``probe=False`` skips every check that opens a connection.

    >>> report = run_doctor(Path("/srv/w"))          # doctest: +SKIP
    >>> [(f.check, f.severity) for f in report.errors]  # doctest: +SKIP
    [('worker.master-pin', 'error')]
    """
    moment = now if now is not None else datetime.now(UTC)
    report = Report()
    if settings_path(home, "master").exists():
        report.roles.append("master")
        report.findings += check_master(home, now=moment, unit=unit, probe=probe)
    if settings_path(home, "worker").exists():
        report.roles.append("worker")
        report.findings += check_worker(home, now=moment, unit=unit, probe=probe)
    if not report.roles:
        report.findings.append(
            error(
                "home",
                f"{home} holds neither MasterSettings.config nor WorkerSettings.config: it is not a "
                "packfleet home (or --home / PACKFLEET_HOME points elsewhere)",
                fix="packfleet --home HOME doctor, or set this home up: packfleet master init / "
                "packfleet worker init",
            )
        )
    return report
