"""What both roles' checks share: the service account a unit runs as, and the trust rules' findings.

The certificate, key, access and expiry rules live in :mod:`packfleet.trust`, where the start-up
loaders and the TLS failure explainer read them too; ``doctor`` lists every finding they return.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from packfleet import trust
from packfleet.config import SettingsKind, settings_path
from packfleet.doctor._findings import Finding, error, ok
from packfleet.errors import PackfleetError
from packfleet.trust import Account

S = TypeVar("S")


def unit_user(unit: Path) -> str | None:
    """The ``User=`` of a systemd unit's ``[Service]`` section, or None when it names none."""
    section = ""
    user = None
    for raw in unit.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line
        elif section == "[Service]" and line.startswith("User="):
            user = line.partition("=")[2].strip() or None
    return user


def unit_home(unit: Path) -> Path | None:
    """The ``--home`` that a packfleet unit's ``ExecStart=`` passes, or None."""
    for raw in unit.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line.startswith("ExecStart="):
            continue
        try:
            words = shlex.split(line.partition("=")[2])
        except ValueError:
            return None
        if "--home" in words[:-1]:
            return Path(words[words.index("--home") + 1])
    return None


def find_unit(home: Path, unit_name: str, explicit: Path | None) -> Path | None:
    """The service unit of this home: ``explicit``, else ``<home>/<unit>`` or systemd's folder.

    A unit in ``/etc/systemd/system`` counts only when its ``--home`` is this home, so a doctor run
    on a second home of the same machine does not judge it by another node's service account.
    """
    if explicit is not None:
        return explicit
    local = home / unit_name
    if local.is_file():
        return local
    system = Path("/etc/systemd/system") / unit_name
    try:
        if system.is_file() and unit_home(system) == home:
            return system
    except OSError:
        return None
    return None


def service_account(
    check: str, home: Path, unit_name: str, explicit: Path | None
) -> tuple[Account | None, Finding | None]:
    """Who runs the service: the unit's ``User=`` (or root when a unit names none), else this user."""
    unit = find_unit(home, unit_name, explicit)
    if unit is None:
        return Account.current(), None
    try:
        user = unit_user(unit)
    except OSError as exc:
        return None, error(check, f"cannot read the service unit {unit}: {exc.strerror or exc}")
    name = user or "root"
    account = Account.named(name, f"User= of {unit}" if user else f"{unit} (no User=: root)")
    if account is None:
        return None, error(
            check,
            f"the service unit {unit} runs as {name!r}, which is no account on this machine",
            fix=f"useradd --system {name}   (or change User= in {unit})",
        )
    return account, None


def from_rules(findings: list[trust.Finding]) -> list[Finding]:
    """The trust rules' findings as ``doctor`` lists them: the same words and the same fix."""
    return [Finding(f.check, f.severity, f.message, f.fix) for f in findings]


def read_settings(home: Path, kind: SettingsKind, load: Callable[[Path], S]) -> tuple[S | None, Finding]:
    """A role's settings, and doctor's finding on them: the file parses, or why not (None then)."""
    check = f"{kind}.settings"
    try:
        settings = load(home)
    except PackfleetError as exc:
        return None, error(check, exc.message, exc.fix)
    return settings, ok(check, f"{settings_path(home, kind)} parses")
