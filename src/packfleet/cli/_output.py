"""How every command speaks: a rich table or text for people, one JSON document with ``--json``."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from packfleet.config import resolve_home
from packfleet.manager import RemoteOptions
from packfleet.protocol import AdminAnswer

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
    remote: RemoteOptions = field(default_factory=RemoteOptions)

    @property
    def out(self) -> Console:
        if self.console is None:
            self.console = make_console()
        return self.console

    @property
    def err(self) -> Console:
        return make_console(stderr=True)

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


def no_color() -> bool:
    """Whether ``NO_COLOR`` (no-color.org: any non-empty value) asks for no styling at all."""
    return bool(os.environ.get("NO_COLOR"))


def make_console(*, stderr: bool = False) -> Console:
    """A console for people; with ``NO_COLOR`` it writes no escape sequence at all (no bold either)."""
    if no_color():
        return Console(stderr=stderr, highlight=False, soft_wrap=True, color_system=None, no_color=True)
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class Column:
    """One column of :func:`print_table`; ``key`` columns (ids, thumbprints) are never split."""

    header: str
    key: bool = False


def print_table(out: Console, columns: Sequence[Column | str], rows: Sequence[Sequence[str]]) -> None:
    """Print rows so that nothing is cut: every value can be copied whole.

    On a terminal: a rich table whose long cells wrap (key columns keep their full width when the
    terminal allows, else fold onto a second line; never an ellipsis). Elsewhere (a pipe, a file,
    ``watch``): plain columns aligned with spaces, as wide as the values, markup removed, so that
    ``grep`` and ``awk`` see whole values.
    """
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    if not out.is_terminal:
        plain = [[Text.from_markup(cell).plain for cell in row] for row in rows]
        headers = [c.header.upper() for c in cols]
        widths = [max([len(h), *(len(r[i]) for r in plain)]) for i, h in enumerate(headers)]
        for line in [headers, *plain]:
            text = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip()
            out.file.write(text + "\n")
        out.file.flush()
        return
    plain = [[Text.from_markup(cell).plain for cell in row] for row in rows]
    longest = [max([len(c.header), *(len(r[i]) for r in plain)]) for i, c in enumerate(cols)]
    # Whole on one line: every key column, and the first _SHORT characters of any other (a word
    # such as "certificate.add" must not break); only longer free text wraps, at spaces.
    needed = [n if c.key else min(n, _SHORT) for c, n in zip(cols, longest, strict=True)]
    if sum(needed) + _GAP * (len(cols) - 1) > out.width:
        _print_records(out, cols, rows)
        return
    table = Table(
        box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold", padding=(0, _GAP // 2)
    )
    for column, width in zip(cols, needed, strict=True):
        table.add_column(column.header, overflow="fold", no_wrap=column.key, min_width=width)
    for row in rows:
        table.add_row(*row)
    out.print(table)


#: Characters between two columns, and the width under which a value is never split.
_GAP = 2
_SHORT = 16


def _print_records(out: Console, cols: list[Column], rows: Sequence[Sequence[str]]) -> None:
    """A terminal too narrow for the table: one block per row, one whole value per line.

    Lines longer than the terminal are left to the terminal's own soft wrap, which inserts no
    newline, so a value copied from the screen is the value.
    """
    label = max(len(c.header) for c in cols[1:]) if len(cols) > 1 else 0
    for row in rows:
        heading = row[0] if cols[0].key else f"{cols[0].header} {row[0]}"
        out.print(f"[bold]{heading}[/]", soft_wrap=True)
        for column, cell in zip(cols[1:], row[1:], strict=True):
            out.print(f"  [dim]{column.header.ljust(label)}[/]  {cell}", soft_wrap=True)


def to_jsonable(value: Any) -> Any:
    """Encode the values packfleet's objects hold (datetimes, paths, enums) for ``json.dumps``."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, AdminAnswer):
        return value.wire()  # every field the master sent, as it sent it
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def short_time(value: Any) -> str:
    """An ISO time from the master as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC, whole, to the second), or "-"."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="seconds") + "Z"
