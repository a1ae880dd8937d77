"""``manage.py migrate`` applies pgqueue's schema; it is idempotent and survives unapplying."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command

from pgqueue.migrate import HEAD_REVISION, upgrade


@pytest.mark.django_db(transaction=True)
def test_migrate_created_pgqueues_schema_and_is_idempotent(pg: Any, django_dsn: str) -> None:
    # The test database was created by Django's migrate, which ran pgqueue's revisions.
    revision = pg.execute("SELECT version_num FROM pgqueue.pgqueue_alembic_version").fetchone()
    assert revision[0] == HEAD_REVISION
    assert upgrade(django_dsn).changed is False  # `pgqueue migrate` finds nothing to do

    pg.execute("INSERT INTO pgqueue.jobs (task) VALUES ('kept')")
    call_command("migrate", "pgqueue", "zero", verbosity=0)
    call_command("migrate", "pgqueue", verbosity=0)
    # Unapplying left the schema (and its jobs) alone; applying again changed nothing.
    assert pg.execute("SELECT task FROM pgqueue.jobs").fetchall() == [("kept",)]
    applied = pg.execute("SELECT name FROM django_migrations WHERE app = 'pgqueue'").fetchall()
    assert applied == [("0001_initial",)]


@pytest.mark.django_db
def test_makemigrations_finds_nothing_to_do() -> None:
    call_command("makemigrations", "pgqueue", "--check", "--dry-run", verbosity=0)


def test_a_django_migration_exists_for_the_current_schema_revision() -> None:
    """Projects that already applied 0001 get a new revision only through a new migration."""
    import importlib
    from pathlib import Path

    import pgqueue.contrib.django.migrations as package

    names = sorted(p.stem for p in Path(package.__file__).parent.glob("[0-9][0-9][0-9][0-9]_*.py"))
    newest = importlib.import_module(f"{package.__name__}.{names[-1]}")
    assert getattr(newest, "PGQUEUE_REVISION", None) == HEAD_REVISION, (
        f"pgqueue's schema is now at revision {HEAD_REVISION}, but the newest Django migration"
        f" ({names[-1]}) was written for {getattr(newest, 'PGQUEUE_REVISION', None)}: add"
        " pgqueue/contrib/django/migrations/NNNN_pgqueue_<revision>.py with"
        " operations = [RunPython(upgrade_schema, RunPython.noop)] and PGQUEUE_REVISION set"
    )
