"""The worker's few hot statements, run on the pooled driver connection.

SQLAlchemy writes every statement in core, these included: each is built once
as an expression (``claims.ClaimStatements``, ``commit.CommitStatements``). But
executing a compiled statement through a ``Connection`` - parameter dicts
checked and processed, a cursor wrapped, a ``Row`` made per row - costs several
times what SQLite takes to run it: measured, about 70% of a claim's and a
commit's time with a no-op callback (issue 14). A ``HotStatement`` keeps what
SQLAlchemy compiled and runs that SQL on the same transaction's driver
connection with a plain tuple of parameters, once per statement and dialect
compiled, converting only where SQLAlchemy's types would (a JSON column).

Only drivers that take the parameters as a plain tuple in the compiled order
take this path: SQLite's pysqlite (``?``) and SQLAlchemy's asyncpg adapter
(``$1``, with the casts SQLAlchemy renders into the SQL). Anything else - another driver, a compilation it cannot
reproduce exactly, an engine with cursor-execute listeners (tracing, the
reliability suite's crash points) - runs through ``Connection.execute`` as
before: the fast path is an optimisation, never a second meaning of a statement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError


class HotRow(dict[str, Any]):
    """A returned row: by column name, as an attribute or through ``_mapping`` (what ``rows.job`` reads)."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def _mapping(self) -> Mapping[str, Any]:
        return self


class _Compiled:
    """One statement as compiled for one dialect: its SQL, and how to fill and read it."""

    __slots__ = ("binds", "columns", "cursor", "defaults", "order", "results", "sql", "types")

    def __init__(self, statement: Any, conn: Connection) -> None:
        compiled = statement.compile(dialect=conn.dialect)
        self.sql = str(compiled)
        if "POSTCOMPILE" in self.sql or any(bp.expanding or bp.literal_execute for bp in compiled.binds.values()):
            raise TypeError("rendered at execution time")  # an expanding IN list: SQLAlchemy's path
        if compiled.insert_prefetch or compiled.update_prefetch:
            raise TypeError("column defaults filled at execution time")  # SQLAlchemy's path
        self.order: tuple[str, ...] = tuple(compiled.positiontup or ())
        # literal values SQLAlchemy bound itself (``state = 'leased'``, ``LIMIT 1``)
        self.defaults = {name: bp.effective_value for name, bp in compiled.binds.items()
                         if not bp.required and name in self.order}
        self.binds: dict[str, Callable[[Any], Any]] = {
            name: proc for name, proc in compiled._bind_processors.items() if proc is not None}
        if conn.dialect.paramstyle == "numeric_dollar" and len(set(self.order)) != len(self.order):
            raise TypeError("a parameter repeated in $n style")  # not seen; SQLAlchemy's path if it is
        self.columns: tuple[str, ...] = tuple(col[0] for col in compiled._result_columns)
        self.types = tuple(col[3] for col in compiled._result_columns)
        #: per column, what SQLAlchemy converts a value with; known once the driver describes a result
        self.results: tuple[Callable[[Any], Any] | None, ...] | None = None
        #: pysqlite runs statements on its connection; asyncpg's adapter on a cursor
        self.cursor = conn.dialect.driver != "pysqlite"

    def parameters(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        defaults, binds = self.defaults, self.binds
        values = []
        for name in self.order:
            value = params[name] if name in params else defaults[name]
            proc = binds.get(name)
            values.append(value if proc is None or value is None else proc(value))
        return tuple(values)


def _takes_plain_tuples(conn: Connection) -> bool:
    dialect = conn.dialect
    return (dialect.name, dialect.driver, dialect.paramstyle) in {
        ("sqlite", "pysqlite", "qmark"), ("postgresql", "asyncpg", "numeric_dollar")}


class HotStatement:
    """A prebuilt statement, run on the driver connection where the driver allows (see the module)."""

    def __init__(self, statement: Any) -> None:
        self.statement = statement
        self._compiled: dict[Any, _Compiled | None] = {}

    def _for(self, conn: Connection) -> _Compiled | None:
        dispatch = conn.dispatch
        if dispatch.before_cursor_execute or dispatch.after_cursor_execute:
            return None  # someone listens to every statement: let SQLAlchemy tell them
        dialect = conn.dialect
        try:
            return self._compiled[dialect]
        except KeyError:
            pass
        compiled: _Compiled | None = None
        if _takes_plain_tuples(conn):
            try:
                compiled = _Compiled(self.statement, conn)
            except (AttributeError, KeyError, TypeError, IndexError):  # a SQLAlchemy whose internals moved
                compiled = None
        self._compiled[dialect] = compiled
        return compiled

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        """Every returned row (``HotRow``, or SQLAlchemy's ``Row`` off the fast path)."""
        compiled = self._for(conn)
        if compiled is None:
            return list(conn.execute(self.statement, dict(params)).all())
        found = _run(conn, compiled, compiled.parameters(params), fetch=True)
        columns, results = compiled.columns, compiled.results or ()
        if any(results):
            found = [tuple(v if p is None else p(v) for p, v in zip(results, row, strict=True)) for row in found]
        return [HotRow(zip(columns, row, strict=True)) for row in found]

    def first(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """The first returned row, or None."""
        found = self.rows(conn, params)
        return found[0] if found else None

    def scalar(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """The first column of the first returned row, or None."""
        compiled = self._for(conn)
        if compiled is None:
            return conn.execute(self.statement, dict(params)).scalar()
        found = _run(conn, compiled, compiled.parameters(params), fetch=True)
        if not found:
            return None
        value = found[0][0]
        proc = compiled.results[0] if compiled.results else None
        return value if proc is None else proc(value)

    def tuples(self, conn: Connection, params: Mapping[str, Any]) -> Sequence[tuple[Any, ...]]:
        """Every returned row as a plain tuple (no result conversion: for columns that need none)."""
        compiled = self._for(conn)
        if compiled is None:
            return [tuple(r) for r in conn.execute(self.statement, dict(params))]
        return _run(conn, compiled, compiled.parameters(params), fetch=True)

    def run(self, conn: Connection, params: Mapping[str, Any]) -> None:
        """Execute, for a statement that returns nothing."""
        compiled = self._for(conn)
        if compiled is None:
            conn.execute(self.statement, dict(params))
            return
        _run(conn, compiled, compiled.parameters(params), fetch=False)


def _run(conn: Connection, compiled: _Compiled, params: tuple[Any, ...], *, fetch: bool) -> list[Any]:
    driver: Any = conn.connection.dbapi_connection
    dialect = conn.dialect
    base = dialect.loaded_dbapi.Error
    try:
        cursor = driver.cursor() if compiled.cursor else driver
        cursor = cursor.execute(compiled.sql, params) or cursor
        try:
            described = cursor.description if compiled.results is None and compiled.columns else None
            if described:
                compiled.results = tuple(
                    type_._cached_result_processor(dialect, d[1] if d else None)
                    for type_, d in zip(compiled.types, (*described, *[None] * len(compiled.types)), strict=False))
            return list(cursor.fetchall()) if fetch else []
        finally:
            if compiled.cursor:
                cursor.close()
    except base as exc:  # as SQLAlchemy would raise it: retried, or reported as the database's fault
        raise DBAPIError.instance(compiled.sql, params, exc, base, dialect=dialect) from exc
