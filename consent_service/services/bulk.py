"""Inserting many rows of one table at once, the fastest way each database takes them."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, cast

from sqlalchemy import ARRAY, ColumnElement, Row, Table, any_, bindparam, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.dml import ReturningInsert


def one_of(session: Session, column: InstrumentedAttribute[Any], values: Collection[Any]
           ) -> ColumnElement[bool]:
    """`column IN values` for a chunk of a bulk job's values. On PostgreSQL `= ANY(array)`: one
    parameter, where an IN list of 500 is a statement that psycopg parses anew every time (it
    caches statements of up to 50 parameters; 2.5 s of an import of 100,000 patrons)."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)


def insert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert `rows` (each with the columns of the first, as Python values) into `table`, in the
    session's transaction; no ids are given back. Each value goes through its column type's bind
    processing, as SQLAlchemy's own insert would send it (a UTC datetime, a JSON document...).

    PostgreSQL: COPY. An executemany there is sent as multi-row INSERTs, and the driver parses
    each statement's thousands of placeholders anew (measured: 11 s of a 20,000-patron import),
    or as one round trip per row. SQLite: the driver's executemany of one prepared INSERT, which
    runs in C; through SQLAlchemy the same executemany spent twice as long again in Python,
    processing each row's parameters (2.6 s of the 5.4 s that inserting 100,000 patrons took
    under cProfile)."""
    if not rows:
        return
    dialect = session.get_bind().dialect
    statement, values_of = _insert_for(table, tuple(rows[0]), dialect)
    _send(session, statement, map(values_of, rows))


def insert_tuples(session: Session, table: Table, columns: tuple[str, ...],
                  rows: Sequence[Sequence[Any]]) -> None:
    """Insert `rows` given as tuples of `columns`, each value already what the driver takes (an
    int, a str, None: no bind processing, no defaults filled in), as `insert_rows` does: for a
    bulk job's plain rows, with no dictionary built per row."""
    if rows:
        _send(session, _statement(table, columns, session.get_bind().dialect), rows)


def _send(session: Session, statement: str, values: Iterable[Sequence[Any]]) -> None:
    """Run `_statement`'s statement for each row of `values`, on the session's connection."""
    driver = cast(Any, session.connection().connection.driver_connection)  # psycopg's, sqlite3's
    if session.get_bind().dialect.name == "postgresql":
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in values:
                copy.write_row(row)
    else:
        driver.executemany(statement, values)


@functools.cache
def _statement(table: Table, columns: tuple[str, ...], dialect: Dialect) -> str:
    """COPY of these columns on PostgreSQL, else an INSERT with one `?` per column, in order."""
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(column) for column in columns)
    target = dialect.identifier_preparer.format_table(table)
    if dialect.name == "postgresql":
        return f"COPY {target} ({names}) FROM STDIN"
    return f"INSERT INTO {target} ({names}) VALUES ({', '.join('?' for _ in columns)})"  # noqa: S608


def insert_new_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]],
                    returning: tuple[str, ...]) -> Sequence[Row[Any]]:
    """PostgreSQL only: insert `rows` (each with the columns of the first, as Python values; no
    column left to a Python-side default) into `table`, in the session's transaction, skipping
    each row that a unique constraint refuses (`ON CONFLICT DO NOTHING`); the columns `returning`
    of the rows inserted, in no promised order. One statement of one array parameter per column
    (`unnest`), which psycopg prepares once: where a lookup of the rows that exist, an insert
    and a read-back are three round trips a chunk, and an INSERT of thousands of placeholders is
    parsed anew each time."""
    if not rows:
        return []
    given = tuple(rows[0])
    statement = _insert_new_for(table, given, returning)
    return session.execute(statement, {column: [row[column] for row in rows]
                                       for column in given}).all()


@functools.cache
def _insert_new_for(table: Table, given: tuple[str, ...], returning: tuple[str, ...]
                    ) -> ReturningInsert[Any]:
    # psycopg's dialect writes each array's type (`%(child_id)s::INTEGER[]`): an array of
    # nothing but NULLs is then still of its column's type
    arrays = [bindparam(column, type_=ARRAY(table.c[column].type)) for column in given]
    values = func.unnest(*arrays).table_valued(*given).render_derived()
    return (postgresql.insert(table)
            .from_select(list(given), select(*[values.c[column] for column in given]),
                         include_defaults=False)
            .on_conflict_do_nothing()
            .returning(*[table.c[column] for column in returning]))


@functools.cache
def _insert_for(table: Table, given: tuple[str, ...], dialect: Dialect
                ) -> tuple[str, Callable[[dict[str, Any]], list[Any]]]:
    """The statement that inserts rows of the `given` columns and of those the rows lack that
    have a Python-side default (COPY on PostgreSQL, a prepared INSERT elsewhere), and the
    function that gives a row's values in its order, defaults filled in and bind-processed."""
    defaults = {column.name: column.default for column in table.columns
                if column.name not in given and column.default is not None}
    columns = (*given, *defaults)
    statement = _statement(table, columns, dialect)
    get = operator.itemgetter(*given)
    made = [(at, cast(Any, defaults[column])) for at, column in enumerate(columns)
            if column not in given]
    processors = [(at, processor) for at, column in enumerate(columns)
                  if (processor := table.c[column].type.dialect_impl(dialect)
                      .bind_processor(dialect)) is not None]
    # The value each processor was last given, and what it gave: rows of one job mostly share
    # their times (one `now`), whose formatting for SQLite is done in Python.
    last: list[tuple[Any, Any]] = [(_NOTHING, None)] * len(processors)

    def values_of(row: dict[str, Any]) -> list[Any]:
        values = list(get(row)) if len(given) > 1 else [get(row)]
        for at, default in made:  # after the given columns, in column order
            values.insert(at, default.arg if default.is_scalar else default.arg(None))
        for number, (at, processor) in enumerate(processors):
            value = values[at]
            given_before, made_before = last[number]
            if value is given_before:
                values[at] = made_before
            else:
                values[at] = processed = processor(value)
                last[number] = (value, processed)
        return values

    return statement, values_of


_NOTHING = object()
