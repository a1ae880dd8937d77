"""Fixtures of the reliability suite: history tables, supervised real workers.

Workers run ``pgqueue work -A pgqueue.chaos.tasks:app`` (the harness in
``pgqueue/chaos``) against the test database, with time-compressed leases.
Every supervisor a test starts is stopped at teardown, even when it fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgqueue.chaos import Supervisor, reset_history

# Leases of seconds, not minutes: crash recovery is observable within a test.
FAST = ["--lease", "2", "--heartbeat", "0.5", "--rescue-interval", "0.5", "--poll-interval", "0.5"]

StartWorkers = Callable[..., Supervisor]


@pytest.fixture
def history(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """The test database's connection, with empty history tables."""
    reset_history(db)
    return db


@pytest.fixture
def start_workers(dsn: str, tmp_path: Path) -> Iterator[StartWorkers]:
    """``start_workers(count, *args, env={...}, restart=True)`` -> a started Supervisor."""
    started: list[Supervisor] = []

    def start(
        count: int,
        *args: str,
        env: dict[str, str] | None = None,
        restart: bool = True,
        target: str | None = None,
    ) -> Supervisor:
        log_dir = tmp_path / f"workers-{len(started)}"
        supervisor = Supervisor(
            target or dsn, count, list(args), log_dir, env=env or {}, restart=restart
        )
        supervisor.start()
        started.append(supervisor)
        return supervisor

    yield start
    # Whatever a test needed from a graceful stop it asked for itself; cleanup is quick.
    for supervisor in started:
        supervisor.kill_all()
