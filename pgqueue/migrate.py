"""Create and upgrade pgqueue's schema with its Alembic revisions.

The revisions ship inside the package (``pgqueue/_migrations`` in a wheel,
``migrations/`` in a source checkout). Their version is recorded in
``<schema>.pgqueue_alembic_version``, apart from the application's own Alembic
history. Concurrent migrators queue on an advisory lock; the ones that find the
schema already at head change nothing.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from pgqueue import queries
from pgqueue.errors import ConfigurationError, SchemaNotMigratedError
from pgqueue.names import validate_schema_name

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic and SQLAlchemy are imported inside the functions that need them: a
# worker or producer only checks the revision, and importing them costs 0.4 s.

__all__ = [
    "HEAD_REVISION",
    "MigrationResult",
    "check_schema",
    "current_revision",
    "migrations_dir",
    "upgrade",
    "upgrade_sql",
]

logger = logging.getLogger("pgqueue")

# The revision this version of pgqueue needs. A test checks it is Alembic's head.
HEAD_REVISION = "0003"
VERSION_TABLE = "pgqueue_alembic_version"
# Revisions run by an application's own Alembic use the default schema.
DEFAULT_SCHEMA_FOR_BRANCH = "pgqueue"


def migrations_dir() -> Path:
    """Where the Alembic environment lives: inside the package, or the source checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise ConfigurationError(
        f"pgqueue's migrations are missing (looked in {package / '_migrations'} and"
        f" {package.parent / 'migrations'}); reinstall pgqueue"
    )


def alembic_config(schema: str, url: str = "postgresql+psycopg://") -> Config:
    """An Alembic Config for pgqueue's revisions in ``schema``."""
    from alembic.config import Config

    config = Config(stdout=io.StringIO())
    config.set_main_option("script_location", str(migrations_dir()))
    # configparser interpolation: a literal % in a URL must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["pgqueue_schema"] = validate_schema_name(schema)
    return config


def script_head(schema: str = "pgqueue") -> str:
    """The head revision of the shipped scripts."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(schema)).get_current_head()
    if head is None:
        raise ConfigurationError("pgqueue's migrations have no head revision; reinstall pgqueue")
    return head


def current_revision(connection: psycopg.Connection[Any], schema: str) -> str | None:
    """The revision recorded in the database, or None if pgqueue was never migrated."""
    try:
        with connection.transaction():
            row = connection.execute(queries.render(queries.SCHEMA_REVISION_GET, schema)).fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return None if row is None else str(row[0])


def _revision_number(revision: str | None) -> int | None:
    return int(revision) if revision is not None and revision.isdigit() else None


def check_schema(connection: psycopg.Connection[Any], schema: str) -> None:
    """Raise SchemaNotMigratedError unless the database is at ``HEAD_REVISION`` or newer.

    A newer revision is accepted (with a warning): pgqueue's migrations only add,
    so during a rolling deploy the workers still on the old version keep working
    after the new version migrated the database.
    """
    current = current_revision(connection, schema)
    current_number = _revision_number(current)
    head_number = _revision_number(HEAD_REVISION)
    if current == HEAD_REVISION:
        return
    if current_number is not None and head_number is not None and current_number > head_number:
        logger.warning(
            "database schema %s is at revision %s, newer than this pgqueue's %s; continuing"
            " (migrations are additive), but upgrade pgqueue on this host",
            schema, current, HEAD_REVISION,
        )
        return
    raise SchemaNotMigratedError(
        f"database schema is at revision {current or '<none>'},"
        f" this pgqueue requires {HEAD_REVISION}; run 'pgqueue migrate'",
        current=current,
        required=HEAD_REVISION,
    )


def keep_version_table(revision: str | None) -> None:
    """Record ``revision`` in pgqueue's version table when an application's Alembic ran it.

    Each of pgqueue's revisions calls this at the end of its upgrade (and
    downgrade). Under ``pgqueue migrate`` Alembic keeps the table itself and this
    does nothing; when the revisions run as a branch of an application's own
    Alembic history, the application's version table records them, so this keeps
    ``<schema>.pgqueue_alembic_version`` current too: workers check it.
    """
    from alembic import context, op

    if context.config.attributes.get("pgqueue_schema") is not None:
        return  # pgqueue's own environment: Alembic maintains the table
    schema = validate_schema_name(DEFAULT_SCHEMA_FOR_BRANCH)
    table = f'"{schema}".{VERSION_TABLE}'
    op.execute(
        f"CREATE TABLE IF NOT EXISTS {table} (version_num varchar(32) NOT NULL,"
        f" CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))"
    )
    op.execute(f"DELETE FROM {table}")
    if revision is not None:
        op.execute(f"INSERT INTO {table} (version_num) VALUES ('{int(revision):04d}')")


@dataclass(frozen=True)
class MigrationResult:
    """What ``upgrade`` did: the revision before and after, and whether it changed."""

    before: str | None
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def _sqlalchemy_url(dsn: str) -> str:
    scheme, sep, rest = dsn.partition("://")
    if not sep:  # key=value conninfo: hand it to psycopg through the query string
        return "postgresql+psycopg://"
    return f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else dsn


def upgrade(dsn: str, schema: str = "pgqueue", revision: str = "head") -> MigrationResult:
    """Bring ``schema`` up to ``revision``, serialised against concurrent migrators."""
    import sqlalchemy
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    validate_schema_name(schema)
    connect_args: dict[str, object] = {"application_name": "pgqueue-migrate"}
    if "://" not in dsn:
        connect_args["conninfo"] = dsn
    engine = sqlalchemy.create_engine(
        _sqlalchemy_url(dsn), poolclass=sqlalchemy.pool.NullPool, connect_args=connect_args
    )
    try:
        with engine.connect() as connection:
            # Session-level lock: held across Alembic's own transaction, released on close.
            connection.exec_driver_sql(
                queries.ADVISORY_LOCK_WAIT, {"key": f"pgqueue.migrate.{schema}"}
            )
            connection.commit()
            before = MigrationContext.configure(
                connection,
                opts={"version_table": VERSION_TABLE, "version_table_schema": schema},
            ).get_current_revision()
            connection.commit()
            target = script_head(schema) if revision == "head" else revision
            if before != target:
                config = alembic_config(schema)
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
                connection.commit()
            return MigrationResult(before=before, after=target)
    finally:
        engine.dispose()


def upgrade_sql(schema: str = "pgqueue", revision: str = "head") -> str:
    """The DDL ``upgrade`` would run on an empty database, for teams using other tools."""
    from alembic import command

    config = alembic_config(schema, url="postgresql://")
    output = io.StringIO()
    config.output_buffer = output
    command.upgrade(config, revision, sql=True)
    return output.getvalue()
