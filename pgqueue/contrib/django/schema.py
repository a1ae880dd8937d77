"""The operation behind pgqueue's Django migrations: run pgqueue's Alembic revisions.

Every Django migration of this app that changes pgqueue's schema is one
``RunPython(upgrade_schema, noop)``: ``manage.py migrate`` then brings the schema
to the revision this pgqueue needs, exactly as ``pgqueue migrate`` would.
"""

from __future__ import annotations

from typing import Any

__all__ = ["upgrade_schema"]


def upgrade_schema(apps: Any, schema_editor: Any) -> None:
    """Upgrade pgqueue's schema on the database this migration runs against.

    Runs only on ``PGQUEUE["DATABASE"]`` (``migrate --database other`` skips it).
    The DSN is the connection's own settings, so a test run migrates the test
    database. Idempotent, and serialised with other migrators by an advisory lock.
    """
    from pgqueue.migrate import upgrade

    from .conf import dsn_from_database_settings, pgqueue_settings

    conf = pgqueue_settings()
    connection = schema_editor.connection
    if connection.alias != conf.database:
        return
    upgrade(dsn_from_database_settings(connection.settings_dict, connection.alias), conf.schema)
