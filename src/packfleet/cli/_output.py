"""How every command speaks: a rich table or text for people, one JSON document with ``--json``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from packfleet.config import resolve_home

F = TypeVar("F", bound=Callable[..., Any])


def json_option(func: F) -> F:
    """Add ``--json`` to a command; the command reads it from ``ctx.obj.json``."""

    def remember(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.ensure_object(CliState).json = True
        return value

    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=remember,
        is_eager=True,
        help="Print one JSON document instead of text (for scripts).",
    )(func)


@dataclass
class CliState:
    """What the root group parsed, handed to every command through ``click.Context.obj``."""

    home_option: Path | None = None
    location_option: str | None = None
    json: bool = False
    console: Console | None = None

    @property
    def out(self) -> Console:
        if self.console is None:
            self.console = Console(highlight=False, soft_wrap=True)
        return self.console

    @property
    def err(self) -> Console:
        return Console(stderr=True, highlight=False, soft_wrap=True)

    def home(self) -> Path:
        """The node home: ``--home`` > ``$PACKFLEET_HOME`` > the default of ``--location``."""
        return resolve_home(self.home_option, self.location_option)

    def emit(self, data: Any, human: Callable[[Console], None] | None = None) -> None:
        """Print ``data`` as JSON when ``--json`` was given, else call ``human`` (or print it plainly)."""
        if self.json:
            sys.stdout.write(json.dumps(data, indent=2, default=to_jsonable) + "\n")
        elif human is not None:
            human(self.out)
        else:
            self.out.print(data)

    def note(self, message: str) -> None:
        """A line for people only: progress and hints go to stderr so ``--json`` output stays clean."""
        self.err.print(message)


def to_jsonable(value: Any) -> Any:
    """Encode the values packfleet's objects hold (datetimes, paths, enums) for ``json.dumps``."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")
