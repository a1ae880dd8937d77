"""Fixtures: a real PostgreSQL, a template database migrated once, clean tables per test.

The server comes from tests/support/pg_provision.py: PGQUEUE_TEST_DSN, else a
server on 127.0.0.1:5432, else testcontainers (when a Docker daemon answers),
else a throwaway embedded cluster. The template is migrated with pgqueue's own
Alembic revisions, so the tests exercise the real migration path.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import pgqueue.shared
from pgqueue import App
from pgqueue.migrate import upgrade
from tests.support.pg_provision import TestServer, create_database, drop_database, provision

PGQUEUE_TABLES = "pgqueue.jobs, pgqueue.queues, pgqueue.workers"


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[TestServer]:
    server = provision()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def template_db(pg_server: TestServer) -> Iterator[str]:
    """A migrated database that others are cloned from; nobody connects to it."""
    name = _name("pgq_tpl")
    dsn = create_database(pg_server.admin_dsn, name)
    try:
        upgrade(dsn, "pgqueue")
        with psycopg.connect(pg_server.admin_dsn, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
    except BaseException:
        drop_database(pg_server.admin_dsn, name)
        raise
    yield name
    drop_database(pg_server.admin_dsn, name)


@pytest.fixture(scope="session")
def session_dsn(pg_server: TestServer, template_db: str) -> Iterator[str]:
    name = _name("pgq_db")
    dsn = create_database(pg_server.admin_dsn, name, template=template_db)
    yield dsn
    drop_database(pg_server.admin_dsn, name)


@pytest.fixture(scope="session")
def _janitor(session_dsn: str) -> Iterator[psycopg.Connection[object]]:
    connection = psycopg.connect(session_dsn, autocommit=True)
    # A test that leaks an open transaction fails loudly here instead of hanging.
    connection.execute("SET lock_timeout = '5s'")
    yield connection
    connection.close()


@pytest.fixture
def dsn(session_dsn: str, _janitor: psycopg.Connection[object]) -> Iterator[str]:
    """A migrated database with empty pgqueue tables (emptied again after the test)."""
    yield session_dsn
    _janitor.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND application_name LIKE 'pgqueue%'"
    )
    _janitor.execute(f"TRUNCATE {PGQUEUE_TABLES} RESTART IDENTITY")


@pytest.fixture
def fresh_dsn(pg_server: TestServer, template_db: str) -> Iterator[str]:
    """A migrated database of this test's own (for tests that alter the schema)."""
    name = _name("pgq_t")
    yield create_database(pg_server.admin_dsn, name, template=template_db)
    drop_database(pg_server.admin_dsn, name)


@pytest.fixture
def empty_dsn(pg_server: TestServer) -> Iterator[str]:
    """A database with no pgqueue schema at all (for migration tests)."""
    name = _name("pgq_e")
    yield create_database(pg_server.admin_dsn, name)
    drop_database(pg_server.admin_dsn, name)


@pytest.fixture
def app(dsn: str) -> Iterator[App]:
    application = App(dsn)
    yield application
    application.close()


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection[object]]:
    """An autocommit connection to the test database, for assertions in SQL."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


def count_jobs(connection: psycopg.Connection[object]) -> int:
    row = connection.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture(autouse=True)
def _shared_tasks_stay_in_their_test_project(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``@shared_task`` registers with every App of the process, as in Celery.

    The Django test project's tasks.py (imported while tests are collected) has one;
    outside tests/django it must not appear in the Apps other tests create.
    """
    if Path(request.node.path).is_relative_to(Path(__file__).parent / "django"):
        return
    kept = [entry for entry in pgqueue.shared._shared
            if not entry[0].__module__.startswith("tests.django.")]
    monkeypatch.setattr(pgqueue.shared, "_shared", kept)


@pytest.fixture(autouse=True)
def _no_real_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never fall back to a developer's PGQUEUE_DATABASE_URL by accident."""
    if "PGQUEUE_DATABASE_URL" in os.environ:
        monkeypatch.delenv("PGQUEUE_DATABASE_URL")
