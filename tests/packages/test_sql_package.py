"""sql packages: statement splitting, and the sample's summary run on SQLite for real."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from packfleet.packages import PackageRunner, Project
from packfleet.packages._sql import split_statements

from .conftest import launch


@pytest.mark.parametrize(
    ("text", "statements"),
    [
        ("select 1; select 2;", ["select 1", "select 2"]),
        ("insert into t values ('a;b', 'it''s');", ["insert into t values ('a;b', 'it''s')"]),
        ('select "odd;name" from t', ['select "odd;name" from t']),
        ("-- note; not a split\nselect 1;\n-- trailing; comment\n", ["-- note; not a split\nselect 1"]),
        ("/* a; b */ select 1; /* only a comment; */", ["/* a; b */ select 1"]),
        (
            "create function f() as $body$ begin; return 1; end $body$ language plpgsql; select 1",
            ["create function f() as $body$ begin; return 1; end $body$ language plpgsql", "select 1"],
        ),
        (" ; ;\n", []),
    ],
)
def test_split_statements(text: str, statements: list[str]) -> None:
    assert split_statements(text) == statements


async def test_load_then_summary_aggregates_on_sqlite(
    runner: PackageRunner, etl_dir: Path, etl: Project, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    load = await launch(runner, etl_dir, etl, "load", tmp_path, {"target_db": url})
    assert (await load.wait()).outcome == "succeeded"

    summary = await launch(runner, etl_dir, etl, "summary", tmp_path, {"target_db": url})
    result = await summary.wait()

    assert (result.outcome, result.exit_code) == ("succeeded", 0)
    logs = summary.messages("log")
    assert logs[0] == "running 4 statement(s) from sql/summary.sql in one transaction"
    assert logs[1] == "[1] DROP TABLE IF EXISTS region_summary -> done"
    assert logs[3].endswith("-> 4 row(s) affected")
    assert logs[4].endswith("-> 4 row(s) returned")
    assert logs[-1] == "committed 4 statement(s)"
    with sqlite3.connect(tmp_path / "shared.db") as db:
        rows = db.execute("select sum(orders), round(sum(revenue), 2) from region_summary").fetchone()
    assert rows == (38, 2590.27)


async def test_a_failing_statement_rolls_back_the_whole_file(
    runner: PackageRunner, probe_dir: Path, probe: Project, tmp_path: Path
) -> None:
    database = tmp_path / "probe.db"
    with sqlite3.connect(database) as db:
        db.execute("create table t (x integer)")
    run = await launch(runner, probe_dir, probe, "broken_sql", tmp_path, {"dsn": f"sqlite:///{database}"})

    result = await run.wait()

    assert (result.outcome, result.exit_code) == ("failed", 1)
    assert "no such table: no_such_table" in result.message
    with sqlite3.connect(database) as db:
        assert db.execute("select count(*) from t").fetchone() == (0,)
