"""What a package function receives.

Its own module so that ``_child`` and ``_sql`` share it without importing each other. Like ``_child``,
it imports the standard library only: the fork server loads it before every fork.
"""

from __future__ import annotations

import logging
from pathlib import Path

from packfleet.errors import PackageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not loaded at run time: the fork server stays lean
    from typing import Any


class PackageContext:
    """What a package function receives: ``def main(ctx): ctx.log.info("%d rows", n)``."""

    __slots__ = ("_request", "attempt", "execution_id", "log", "parameters", "task_id")

    def __init__(self, request: dict[str, Any], log: logging.Logger) -> None:
        self._request = request
        self.parameters: dict[str, Any] = dict(request["parameters"])
        self.log = log
        self.execution_id: int = request["execution_id"]
        self.task_id: int = request["task_id"]
        self.attempt: int = request["attempt"]

    # Paths are made when asked for: in a just-forked process each object pathlib touches is a
    # copy-on-write page fault, a cost a package that never looks at its folders need not pay.
    @property
    def task_dir(self) -> Path:
        """The task's own folder (also the working directory)."""
        return Path(self._request["task_dir"])

    @property
    def project_dir(self) -> Path:
        """The extracted project (read-only by convention: other tasks share it)."""
        return Path(self._request["project_dir"])

    def connection(self, name: str) -> str:
        """The connection URL held by parameter ``name`` (an SSIS connection manager's string)."""
        value = self.parameters.get(name)
        if not isinstance(value, str) or not value:
            raise PackageError(f"parameter {name!r} holds no connection URL (got {value!r})")
        return value

    def __repr__(self) -> str:
        return f"<PackageContext execution={self.execution_id} task={self.task_id} {self.task_dir}>"
