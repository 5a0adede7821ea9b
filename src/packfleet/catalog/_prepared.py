"""The master's hottest catalog statements, compiled once and run on the driver's own cursor.

make bench / cProfile of a catalog-only loop (lease ten tasks, report them with twenty event
messages): half of the catalog thread's time went to SQLAlchemy's work around each execution (the
execution context, ``construct_params``, type processors called one value at a time through layers,
``Row`` building, event dispatch), not to the database. A :class:`Prepared` statement does that work
once. It is compiled by SQLAlchemy from the same Core statement for the engine's dialect and keeps the
processors of each parameter's and each result column's own type; an execution only puts the values
in the order the SQL wants and calls the DBAPI cursor of the caller's connection, inside the caller's
transaction.

What stays SQLAlchemy's: the SQL (locks, casts, paramstyle), the type conversions (each type's own
bind and result processors) and the errors: what the driver raises goes through the connection's own
handling, as in ``Connection.execute``, so it arrives wrapped (``IntegrityError``, ``OperationalError``)
and a lost connection invalidates the pool the same way. What is skipped on purpose: the engine's
per-statement events (``before_cursor_execute`` and the like), which the catalog does not listen to.

An ``expanding`` IN parameter (``bindparam(..., expanding=True)``) is rendered by SQLAlchemy once per
list length (``construct_expanded_state``), in a small bounded cache. Statements that need a value in
their SQL text (``literal_execute``), a value computed per execution (``callable_``) or escaped
parameter names are refused when prepared.
"""

from __future__ import annotations

import functools
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, Dialect, Select, exc
from sqlalchemy.sql.dml import UpdateBase

Params = Mapping[str, Any]
_Process = Callable[[Any], Any] | None


class _Slot(NamedTuple):
    """Where the value of one parameter of the SQL comes from."""

    key: str | None  # the caller's parameter; None for a value fixed in the statement
    element: int  # the element of an expanding list, -1 for a plain value
    process: _Process  # the parameter type's bind processor, if it has one
    constant: Any = None  # the processed value when key is None


class _Variant(NamedTuple):
    """The SQL for one combination of expanding list lengths, and where each parameter comes from."""

    sql: str
    names: tuple[str, ...] | None  # the parameter names for a named paramstyle; None when positional
    slots: tuple[_Slot, ...]
    processed: tuple[tuple[int, Callable[[Any], Any]], ...]  # (position, processor) of caller's values


class Prepared:
    """A Core ``SELECT``, or ``INSERT``/``UPDATE`` with or without ``RETURNING``, compiled for ``dialect``.

    :meth:`rows` returns named tuples (``row.id``) of the result columns, processed by their types as
    SQLAlchemy would; :meth:`run` and :meth:`run_many` (``executemany``) return the driver's row count.
    ``column_keys``: the columns an ``INSERT`` without values sets, as for ``Connection.execute``.
    """

    def __init__(
        self,
        statement: Select[Any] | UpdateBase,
        dialect: Dialect,
        *,
        column_keys: Sequence[str] | None = None,
        variants: int = 64,
    ) -> None:
        keys = list(column_keys) if column_keys else None
        compiled = statement.compile(dialect=dialect, column_keys=keys)
        binds = compiled.bind_names
        if compiled.escaped_bind_names or any(
            b.literal_execute or b.callable or (b.expanding and not b.required) for b in binds
        ):
            raise ValueError(f"cannot prepare {compiled.string!r}: its parameters need SQLAlchemy to run")
        self._compiled = compiled
        self._dialect = dialect
        self._expanding = tuple(name for bind, name in binds.items() if bind.expanding)
        self._expanding_keys = tuple(bind.key for bind in binds if bind.expanding)
        columns = statement.exported_columns
        # Fields named as SQLAlchemy's Row names them; a name no tuple field can have becomes _0, _1...
        self._row: Any = namedtuple("Row", [str(k) for k in columns.keys()], rename=True)  # type: ignore[misc]
        # No driver type code (coltype): the types the catalog reads do not consult it.
        processors = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns]
        self._processors = processors if any(processors) else None
        self._variant = functools.lru_cache(maxsize=variants)(self._build_variant)
        self._fixed = None if self._expanding else self._build_variant(())

    def rows(self, conn: Connection, params: Params) -> list[Any]:
        """Execute with ``params`` and return every result row."""
        cursor = self._execute(conn, params)
        try:
            fetched = cursor.fetchall()
        except BaseException as error:
            conn._handle_dbapi_exception(error, None, None, cursor, None)
        cursor.close()
        make = self._row._make
        processors = self._processors
        if processors is None:
            return list(map(make, fetched))
        return [make([p(v) if p else v for p, v in zip(processors, row, strict=True)]) for row in fetched]

    def first(self, conn: Connection, params: Params) -> Any:
        """The first result row, or None without rows."""
        found = self.rows(conn, params)
        return found[0] if found else None

    def scalar(self, conn: Connection, params: Params) -> Any:
        """The first column of the first row, or None without rows."""
        row = self.first(conn, params)
        return None if row is None else row[0]

    def run(self, conn: Connection, params: Params) -> int:
        """Execute with ``params``; return the driver's row count."""
        cursor = self._execute(conn, params)
        count = int(cursor.rowcount)
        cursor.close()
        return count

    def run_many(self, conn: Connection, params: Sequence[Params]) -> int:
        """Execute once per parameter set (the driver's ``executemany``); return the total row count."""
        if self._fixed is None:
            raise ValueError("executemany needs a statement without expanding parameters")
        variant = self._fixed
        arguments = [self._arguments(variant, p) for p in params]
        cursor = self._cursor(conn)
        try:
            cursor.executemany(variant.sql, arguments)
        except BaseException as error:
            conn._handle_dbapi_exception(error, variant.sql, arguments, cursor, None)
        count = int(cursor.rowcount)
        cursor.close()
        return count

    def _execute(self, conn: Connection, params: Params) -> Any:
        variant = self._fixed or self._variant(tuple(len(params[key]) for key in self._expanding_keys))
        arguments = self._arguments(variant, params)
        cursor = self._cursor(conn)
        try:
            cursor.execute(variant.sql, arguments)
        except BaseException as error:  # as Connection.execute: whatever the driver raised
            conn._handle_dbapi_exception(error, variant.sql, arguments, cursor, None)
        return cursor

    @staticmethod
    def _cursor(conn: Connection) -> Any:
        # Outside a transaction SQLAlchemy would begin one (autobegin) and SQLite's driver, which the
        # catalog leaves in autocommit mode, would commit each statement alone: refuse instead.
        if not conn.in_transaction():
            raise exc.InvalidRequestError("a prepared catalog statement runs inside a transaction")
        return conn.connection.cursor()

    @staticmethod
    def _arguments(variant: _Variant, params: Params) -> Any:
        values = [
            constant if key is None else params[key] if element < 0 else params[key][element]
            for key, element, _, constant in variant.slots
        ]
        for position, process in variant.processed:
            values[position] = process(values[position])
        return values if variant.names is None else dict(zip(variant.names, values, strict=True))

    def _build_variant(self, lengths: tuple[int, ...]) -> _Variant:
        compiled = self._compiled
        sample: dict[str, Any] = {name: None for name in compiled.bind_names.values()}
        sample.update((name, [None] * n) for name, n in zip(self._expanding, lengths, strict=True))
        state = compiled.construct_expanded_state(sample)
        element_of = {
            expanded: (name, index)
            for name, names in state.parameter_expansion.items()
            for index, expanded in enumerate(names)
        }
        order = state.positiontup if state.positiontup is not None else list(state.parameters)
        slots = [self._slot(element_of.get(name, (name, -1))) for name in order]
        names = None if state.positiontup is not None else tuple(order)
        processed = tuple(
            (position, slot.process)
            for position, slot in enumerate(slots)
            if slot.key is not None and slot.process is not None
        )
        return _Variant(state.statement, names, tuple(slots), processed)

    def _slot(self, where: tuple[str, int]) -> _Slot:
        name, element = where
        bind = self._compiled.binds[name]
        process = bind.type.dialect_impl(self._dialect).bind_processor(self._dialect)
        if bind.expanding or bind.required:
            return _Slot(bind.key, element, process)
        value = bind.effective_value
        return _Slot(None, -1, None, value if process is None else process(value))
