from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.e2e.tasks_app import LEDGER_DDL


@pytest.fixture
def ledger(db: psycopg.Connection[object]) -> Iterator[psycopg.Connection[object]]:
    """The ledger and effects tables, empty, on the test database."""
    db.execute(LEDGER_DDL)
    db.execute("TRUNCATE ledger, effects RESTART IDENTITY")
    return db


@pytest.fixture(autouse=True)
def _tasks_app_on_test_database(dsn: str) -> Iterator[None]:
    """The e2e tasks' App (which reads PGQUEUE_DATABASE_URL in workers) points at the test DB."""
    from tests.e2e.tasks_app import app

    app.close()
    app.use_database(dsn)
    yield
    app.close()
