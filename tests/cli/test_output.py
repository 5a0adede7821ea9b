"""How tables and consoles print: nothing cut at 80 columns, no escape sequence under NO_COLOR."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from packfleet.cli._output import Column, make_console, print_table

AGENT = "4ea11231-4b60-42ff-ac4b-eb3f515f73d7"
THUMB = "847FECACB97067A7504A818008B4FEAC30F7E0D0"
DETAILS = "display_name=worker1, sha256=D7CD242AE8D7D8F116E8826B8B5AE615566F2933FCD356E9FD634E4929EE68CB"


def _console(*, terminal: bool, width: int = 80) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=terminal, width=width, color_system=None), buffer


def test_a_pipe_gets_plain_columns_as_wide_as_the_values() -> None:
    console, buffer = _console(terminal=False)
    print_table(
        console, [Column("agent id", key=True), "details"], [[AGENT, DETAILS], ["x", "[yellow]no[/]"]]
    )
    lines = buffer.getvalue().splitlines()
    assert lines[0].split() == ["AGENT", "ID", "DETAILS"]
    assert lines[1] == f"{AGENT}  {DETAILS}"  # wider than 80, and whole
    assert lines[2].split() == ["x", "no"]  # markup removed
    assert lines[1].index(DETAILS) == lines[2].index("no")  # aligned


def test_a_terminal_table_that_fits_keeps_keys_on_one_line() -> None:
    console, buffer = _console(terminal=True)
    print_table(console, [Column("agent id", key=True), "name", "state"], [[AGENT, "worker1", "online"]])
    text = buffer.getvalue()
    assert AGENT in text and "…" not in text


def test_a_terminal_too_narrow_gets_one_block_per_row_with_whole_values() -> None:
    console, buffer = _console(terminal=True)
    columns: list[Column | str] = [Column("time", key=True), "action", Column("target", key=True), "details"]
    print_table(console, columns, [["2026-12-06T01:10:04Z", "certificate.add", THUMB, DETAILS]])
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "2026-12-06T01:10:04Z"
    assert any(line.split() == ["target", THUMB] for line in lines)
    assert any(line.strip() == f"details  {DETAILS}" for line in lines)  # not folded
    assert "…" not in buffer.getvalue()


def test_no_color_means_no_escape_sequence_even_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    console = make_console()
    buffer = io.StringIO()
    console.file = buffer
    console.print("[bold red]refused[/] [green]online[/]")
    assert "\x1b" not in buffer.getvalue()
    assert buffer.getvalue().strip() == "refused online"
