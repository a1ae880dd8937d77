"""Run pgqueue's statements on whatever connection the caller has.

pgqueue takes a psycopg ``Connection``/``Cursor``/``AsyncConnection``, a SQLAlchemy
``Connection``/``Session``/``AsyncConnection``/``AsyncSession``, or Django's
connection, and runs the same SQL text on each. It never commits, rolls back or
closes a connection it was given: the job belongs to the caller's transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.pq import ExecStatus
from psycopg.rows import tuple_row

from pgqueue.dsn import error_summary
from pgqueue.errors import (
    ConfigurationError,
    PermissionDeniedError,
    PgqueueError,
    SchemaNotMigratedError,
)

__all__ = [
    "Row",
    "execute",
    "execute_async",
    "explain_error",
    "explained_errors",
    "is_async_connection",
]

Row = tuple[Any, ...]
Params = Mapping[str, Any]


def _as_tuples(rows: Sequence[Any]) -> list[Row]:
    # A caller's connection may use dict_row or namedtuple rows; normalise.
    return [tuple(row.values()) if isinstance(row, Mapping) else tuple(row) for row in rows]


JSONB_OID = 3802


def _decode_json_columns(row: Row, columns: list[int]) -> Row:
    values = list(row)
    for index in columns:
        if isinstance(values[index], str):
            values[index] = json.loads(values[index])
    return tuple(values)


def _returns_rows(cursor: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    # cursor.description builds a Column object per column on every call; the
    # result status answers the same question without allocating.
    result = cursor.pgresult
    return result is not None and result.status == ExecStatus.TUPLES_OK


def _driver_error(error: BaseException) -> BaseException:
    """The psycopg error under SQLAlchemy's (``.orig``) or Django's (``__cause__``) wrapper."""
    wrapped = getattr(error, "orig", None)
    if isinstance(wrapped, psycopg.Error):
        return wrapped
    if isinstance(error.__cause__, psycopg.Error):
        return error.__cause__
    return error


def explain_error(error: BaseException, schema: str) -> PgqueueError | None:
    """A pgqueue error saying what to do, for a database error with a known fix.

    A missing table or column means the schema was never migrated (or is behind
    this version); a refused privilege means the role lacks a grant. Other errors
    give None and propagate unchanged.
    """
    from pgqueue.migrate import HEAD_REVISION  # migrate's Alembic import is lazy

    driver = _driver_error(error)
    if not isinstance(driver, psycopg.Error):
        return None
    detail = error_summary(driver, type(driver).__name__)
    missing = (
        psycopg.errors.UndefinedTable,
        psycopg.errors.UndefinedColumn,
        psycopg.errors.InvalidSchemaName,
    )
    if isinstance(driver, missing):
        return SchemaNotMigratedError(
            f"pgqueue's tables in schema '{schema}' are missing or older than this version"
            f" ({detail}); run 'pgqueue migrate' (or apply the DDL of 'pgqueue migrate --sql')",
            current=None,
            required=HEAD_REVISION,
        )
    if isinstance(driver, psycopg.errors.InsufficientPrivilege):
        return PermissionDeniedError(
            f"the database role was refused ({detail}); grant it what docs/security.md lists"
            f" for its kind of process: a producer needs USAGE on schema {schema}, and INSERT"
            f" and SELECT (id, run_at, created_at, expires_at) on {schema}.jobs"
        )
    return None


@contextmanager
def explained_errors(schema: str) -> Iterator[None]:
    """Turn database errors with a known fix into pgqueue's errors (see explain_error)."""
    try:
        yield
    except Exception as error:
        explained = explain_error(error, schema)
        if explained is None:
            raise
        raise explained from error


def _kind(connection: object) -> str:
    module = type(connection).__module__
    name = type(connection).__name__
    if isinstance(connection, psycopg.Connection):
        return "psycopg"
    if isinstance(connection, psycopg.AsyncConnection):
        return "psycopg-async"
    if isinstance(connection, psycopg.Cursor):
        return "psycopg-cursor"
    if isinstance(connection, psycopg.AsyncCursor):
        return "psycopg-async-cursor"
    if module.startswith("sqlalchemy"):
        if name in ("AsyncConnection", "AsyncSession") or module.startswith(
            "sqlalchemy.ext.asyncio"
        ):
            return "sqlalchemy-async"
        return "sqlalchemy"
    if module.startswith("django.") or (
        hasattr(connection, "vendor") and hasattr(connection, "cursor")
    ):
        return "django"
    return "unknown"


def is_async_connection(connection: object) -> bool:
    """Whether ``connection`` must be used through the ``*_async`` methods."""
    return _kind(connection) in ("psycopg-async", "psycopg-async-cursor", "sqlalchemy-async")


def _unsupported(connection: object, wanted: str) -> ConfigurationError:
    return ConfigurationError(
        f"cannot use a {type(connection).__module__}.{type(connection).__name__} as a {wanted}"
        " connection: pass a psycopg Connection/Cursor, a SQLAlchemy Connection/Session,"
        " Django's connection, or their async twins to the *_async methods"
    )


def execute(connection: object, sql: str, params: Params) -> list[Row]:
    """Run one statement on a synchronous connection and return its rows (if any)."""
    kind = _kind(connection)
    if kind == "psycopg":
        assert isinstance(connection, psycopg.Connection)
        with connection.cursor(row_factory=tuple_row) as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if _returns_rows(cursor) else []
    if kind == "psycopg-cursor":
        assert isinstance(connection, psycopg.Cursor)
        connection.execute(sql, params)
        return _as_tuples(connection.fetchall()) if connection.description else []
    if kind == "sqlalchemy":
        sa_connection: Any = connection
        if hasattr(sa_connection, "exec_driver_sql") is False and hasattr(
            sa_connection, "connection"
        ):
            sa_connection = sa_connection.connection()  # a Session: its current Connection
        result = sa_connection.exec_driver_sql(sql, dict(params))
        return _as_tuples(result.fetchall()) if result.returns_rows else []
    if kind == "django":
        django_connection: Any = connection
        with django_connection.cursor() as cursor:
            cursor.execute(sql, dict(params))
            if not cursor.description:
                return []
            # Django's PostgreSQL backend hands jsonb back as text; decode it here
            # so args, results and errors look the same on every connection kind.
            json_columns = [
                index
                for index, column in enumerate(cursor.description)
                if column.type_code == JSONB_OID
            ]
            rows = _as_tuples(cursor.fetchall())
            if not json_columns:
                return rows
            return [_decode_json_columns(row, json_columns) for row in rows]
    if kind in ("psycopg-async", "psycopg-async-cursor", "sqlalchemy-async"):
        raise ConfigurationError(
            f"{type(connection).__name__} is asynchronous: use the *_async method"
            " (for example `await task.enqueue_async(..., connection=conn)`)"
        )
    raise _unsupported(connection, "synchronous")


async def execute_async(connection: object, sql: str, params: Params) -> list[Row]:
    """Run one statement on an asynchronous connection and return its rows (if any)."""
    kind = _kind(connection)
    if kind == "psycopg-async":
        assert isinstance(connection, psycopg.AsyncConnection)
        async with connection.cursor(row_factory=tuple_row) as cursor:
            await cursor.execute(sql, params)
            return await cursor.fetchall() if _returns_rows(cursor) else []
    if kind == "psycopg-async-cursor":
        assert isinstance(connection, psycopg.AsyncCursor)
        await connection.execute(sql, params)
        return _as_tuples(await connection.fetchall()) if connection.description else []
    if kind == "sqlalchemy-async":
        sa_connection: Any = connection
        if type(connection).__name__ == "AsyncSession":
            sa_connection = await sa_connection.connection()
        result = await sa_connection.exec_driver_sql(sql, dict(params))
        return _as_tuples(result.fetchall()) if result.returns_rows else []
    if kind in ("psycopg", "psycopg-cursor", "sqlalchemy", "django"):
        raise ConfigurationError(
            f"{type(connection).__name__} is synchronous: use the method without _async"
        )
    raise _unsupported(connection, "asynchronous")
