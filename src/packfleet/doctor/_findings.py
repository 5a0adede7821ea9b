"""What ``packfleet doctor`` reports: one finding per check, each with the command that fixes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["ok", "warning", "error"]

_RANK: dict[Severity, int] = {"ok": 0, "warning": 1, "error": 2}


@dataclass(frozen=True)
class Finding:
    """The verdict of one check.

    ``check`` is a stable dotted name (``master.binding``, ``worker.key-access``) that scripts can
    filter on; ``message`` says in plain words what is right or wrong, naming the file, key,
    thumbprint or host; ``fix`` is the exact command that mends it (None when nothing is wrong).
    """

    check: str
    severity: Severity
    message: str
    fix: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "severity": self.severity, "message": self.message, "fix": self.fix}


def ok(check: str, message: str) -> Finding:
    return Finding(check, "ok", message)


def warning(check: str, message: str, fix: str | None = None) -> Finding:
    return Finding(check, "warning", message, fix)


def error(check: str, message: str, fix: str | None = None) -> Finding:
    return Finding(check, "error", message, fix)


@dataclass
class Report:
    """Every finding of one ``doctor`` run over a home, master and worker checks in order."""

    roles: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def worst(self) -> Severity:
        return max((f.severity for f in self.findings), key=_RANK.__getitem__, default="ok")

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def exit_code(self, *, strict: bool = False) -> int:
        """0 without errors, 1 with any error; with ``strict``, warnings count as errors."""
        if self.errors or (strict and self.warnings):
            return 1
        return 0

    def by_check(self, check: str) -> list[Finding]:
        """The findings of one check (tests and scripts look findings up by name)."""
        return [f for f in self.findings if f.check == check]

    def to_dict(self) -> dict[str, Any]:
        return {"roles": list(self.roles), "findings": [f.to_dict() for f in self.findings]}
