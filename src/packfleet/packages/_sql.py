"""``sql`` packages: a file of statements run in one transaction through SQLAlchemy.

This is SSIS's Execute SQL Task reduced to its core. SQLAlchemy is imported inside :func:`run_sql`,
in the package process only: the fork server must not carry it (it would make every fork slower) and
the runner never needs it. DBAPI drivers execute one statement per call (``sqlite3`` refuses more),
so :func:`split_statements` cuts the file at ``;`` outside quotes, comments and PostgreSQL
dollar-quoted bodies.
"""

from __future__ import annotations

import re

from packfleet.errors import PackageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from packfleet.packages._context import PackageContext

_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")
_SHOWN = 120


def split_statements(text: str) -> list[str]:
    """The statements of ``text``, without empty or comment-only ones.

    >>> split_statements("insert into t values ('a;b'); -- done;\\nselect 1")
    ["insert into t values ('a;b')", '-- done;\\nselect 1']
    """
    statements: list[str] = []
    start = 0
    i = 0
    meaningful = False
    n = len(text)
    while i < n:
        char = text[i]
        if char in "'\"":
            end = i + 1
            while end < n:
                if text[end] == char:
                    if end + 1 < n and text[end + 1] == char:  # '' and "" escape the quote
                        end += 2
                        continue
                    break
                end += 1
            i, meaningful = end + 1, True
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif char == "$" and (tag := _DOLLAR_TAG.match(text, i)):
            end = text.find(tag.group(), tag.end())
            i, meaningful = (n if end < 0 else end + len(tag.group())), True
        elif char == ";":
            if meaningful:
                statements.append(text[start:i].strip())
            start, i, meaningful = i + 1, i + 1, False
        else:
            meaningful = meaningful or not char.isspace()
            i += 1
    if meaningful:
        statements.append(text[start:].strip())
    return statements


def _shown(statement: str) -> str:
    lines = statement.splitlines()
    while len(lines) > 1 and lines[0].lstrip().startswith("--"):
        del lines[0]
    flat = " ".join(" ".join(lines).split())
    return flat if len(flat) <= _SHOWN else flat[: _SHOWN - 3] + "..."


def run_sql(context: PackageContext, file: str, connection: str) -> None:
    """Run ``file`` (relative to the project) against the URL in parameter ``connection``."""
    from sqlalchemy import create_engine

    path = context.project_dir / file
    try:
        statements = split_statements(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PackageError(f"{path}: cannot be read: {exc}") from exc
    url = context.connection(connection)
    engine = create_engine(url)
    context.log.info("running %d statement(s) from %s in one transaction", len(statements), file)
    try:
        with engine.begin() as conn:
            for number, statement in enumerate(statements, 1):
                result = conn.exec_driver_sql(statement)
                if result.returns_rows:
                    count = sum(1 for _ in result)
                    context.log.info("[%d] %s -> %d row(s) returned", number, _shown(statement), count)
                elif result.rowcount >= 0:
                    rows = result.rowcount
                    context.log.info("[%d] %s -> %d row(s) affected", number, _shown(statement), rows)
                else:  # DDL: the driver reports no count
                    context.log.info("[%d] %s -> done", number, _shown(statement))
    finally:
        engine.dispose()
    context.log.info("committed %d statement(s)", len(statements))
