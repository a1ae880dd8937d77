"""Alembic environment for pgqueue's own schema.

pgqueue records its revision in ``<schema>.pgqueue_alembic_version`` so it never
touches the application's ``alembic_version``. ``pgqueue migrate`` drives this
file; it passes an open connection (already holding the migration advisory
lock) and the schema name in ``config.attributes``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

VERSION_TABLE = "pgqueue_alembic_version"

config = context.config
schema = config.attributes.get("pgqueue_schema") or context.get_x_argument(as_dictionary=True).get(
    "schema", "pgqueue"
)
config.attributes["pgqueue_schema"] = schema


def _configure(**kwargs: object) -> None:
    context.configure(
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        transaction_per_migration=False,
        **kwargs,  # type: ignore[arg-type]
    )


def run_migrations_offline() -> None:
    # The "named" paramstyle: under psycopg's "pyformat" SQLAlchemy would print
    # every % as %%, and the RAISE format strings of the plpgsql functions in
    # the printed DDL would then fail with "too many parameters".
    _configure(
        url=config.get_main_option("sqlalchemy.url"),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        # The version table lives in the schema, so the schema must exist first.
        context.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        engine = create_engine(
            config.get_main_option("sqlalchemy.url") or "", poolclass=pool.NullPool
        )
        with engine.connect() as own_connection:
            _run_online(own_connection)
        return
    _run_online(connection)


def _run_online(connection: object) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
