"""A trust rule's verdict: what is found, why it matters, and the command that mends it.

Every rule in this layer returns a list of these. Three consumers read the same list: the start-up
loaders raise the first error as the error type the rule names, ``packfleet doctor`` lists them all,
and the TLS failure explainer quotes the one that matches the handshake's verdict. So the sentence
an operator reads and the command they are told to run never depend on where the problem was met.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from packfleet.errors import PackfleetError, SettingsError

Severity = Literal["ok", "warning", "error"]


@dataclass(frozen=True)
class Finding:
    """One verdict of one rule.

    ``check`` is the stable dotted name ``doctor`` shows (``master.binding``, ``worker.master-pin``);
    ``what`` states the fact, naming the file, key, thumbprint or host; ``why`` says what it breaks
    (empty for an ``ok``); ``fix`` is the exact command that mends it. ``error`` is the
    :class:`~packfleet.errors.PackfleetError` subclass a loader raises for it.
    """

    check: str
    severity: Severity
    what: str
    why: str = ""
    fix: str | None = None
    error: type[PackfleetError] = field(default=SettingsError, compare=False)

    @property
    def message(self) -> str:
        """``what`` and ``why`` as one sentence: the text every consumer shows."""
        return f"{self.what}; {self.why}" if self.why else self.what

    def exception(self) -> PackfleetError:
        """This finding as the error a loader raises."""
        return self.error(self.message, fix=self.fix)


def ok(check: str, what: str) -> Finding:
    return Finding(check, "ok", what)


def warning(check: str, what: str, why: str = "", fix: str | None = None) -> Finding:
    return Finding(check, "warning", what, why, fix)


def error(
    check: str,
    what: str,
    why: str = "",
    fix: str | None = None,
    *,
    raises: type[PackfleetError] = SettingsError,
) -> Finding:
    return Finding(check, "error", what, why, fix, raises)


def from_exception(check: str, exc: PackfleetError) -> Finding:
    """A finding for an error a lower layer raised (a settings file that does not parse...)."""
    return Finding(check, "error", exc.message, "", exc.fix, type(exc))


def raise_first(findings: Iterable[Finding]) -> None:
    """Raise the first error among ``findings`` (what a loader does); return when there is none."""
    for finding in findings:
        if finding.severity == "error":
            raise finding.exception()


def errors(findings: Iterable[Finding]) -> list[Finding]:
    return [finding for finding in findings if finding.severity == "error"]
