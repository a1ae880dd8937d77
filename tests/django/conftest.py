"""Django on the suite's PostgreSQL: pytest-django creates ``test_...`` there and migrates it.

The server is the one the rest of the suite uses (``pg_server``: PGQUEUE_TEST_DSN,
127.0.0.1:5432, Docker or the embedded server). Django's own test-database
creation runs every migration, including pgqueue's (which applies pgqueue's
Alembic revisions), so the schema the tests use is the one ``manage.py
migrate`` makes. Worker processes get the test database through
``PGQUEUE_DJANGO_TEST_DSN``, which the project's settings read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    import django
    import pytest_django  # noqa: F401  (its fixtures are used below)
except ImportError:  # the Django extras are not installed: nothing here can run
    collect_ignore_glob = ["*"]
else:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.django.project.settings"
    django.setup()

REPO_ROOT = Path(__file__).resolve().parents[2]
MANAGE = Path(__file__).resolve().parent / "manage.py"
PGQUEUE_TABLES = "pgqueue.jobs, pgqueue.queues, pgqueue.workers"


@pytest.fixture(scope="session")
def django_db_modify_db_settings(pg_server: Any) -> None:
    """Point DATABASES at the suite's server before pytest-django creates the test database.

    The entry is updated in place: Django's connection objects share that dict.
    """
    from django.conf import settings

    from pgqueue.contrib.django.conf import database_from_url

    entry = settings.DATABASES["default"]
    entry.update(database_from_url(pg_server.admin_dsn))
    entry.setdefault("TEST", {})["NAME"] = f"pgq_dj_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, pg_server: Any) -> Iterator[None]:
    """pytest-django's setup, then: pgqueue's app follows the test database; clean up after."""
    import psycopg
    from django.db import connections

    from pgqueue.contrib.django.app import forget_database

    forget_database()
    name = connections["default"].settings_dict["NAME"]
    yield
    forget_database()
    # Worker processes and pools may still hold connections; DROP DATABASE would fail.
    with psycopg.connect(pg_server.admin_dsn, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )


@pytest.fixture(scope="session")
def django_dsn(django_db_setup: None) -> str:
    """URL of the Django test database (with pgqueue's schema in it)."""
    from django.db import connections

    from pgqueue.contrib.django.conf import dsn_from_database_settings

    return dsn_from_database_settings(connections["default"].settings_dict)


@pytest.fixture
def pg(django_dsn: str) -> Iterator[Any]:
    """An autocommit psycopg connection to the test database, outside Django's transaction."""
    import psycopg

    with psycopg.connect(django_dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture(autouse=True)
def _empty_pgqueue_tables(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a transactional test, empty pgqueue's tables (Django flushes only its own)."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not marker.kwargs.get("transaction"):
        yield  # a rolled-back test leaves nothing behind
        return
    import psycopg

    dsn = request.getfixturevalue("django_dsn")
    yield
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f"TRUNCATE {PGQUEUE_TABLES} RESTART IDENTITY")


def worker_env(dsn: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PGQUEUE_DJANGO_TEST_DSN": dsn,
        "PYTHONPATH": str(REPO_ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.django.project.settings",
    }
    env.pop("PGQUEUE_DATABASE_URL", None)
    env.pop("PGQUEUE_QUEUES", None)
    env.update(extra)
    return env


@pytest.fixture
def manage(django_dsn: str) -> Any:
    """Run ``manage.py <args>`` of the test project on the test database; return the result."""

    def run(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(MANAGE), *args],
            env=worker_env(django_dsn),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


@pytest.fixture
def start_manage(django_dsn: str) -> Iterator[Any]:
    """Start ``manage.py <args>`` in the background (killed at the end if still running)."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, str(MANAGE), *args],
            env=worker_env(django_dsn),
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)
