"""Small waits and queries shared by the reliability tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def scalar(connection: psycopg.Connection[Any], sql: str, params: Any = None) -> Any:
    row = connection.execute(sql, params).fetchone()
    return None if row is None else row[0]


def all_finished(connection: psycopg.Connection[Any]) -> bool:
    """True once no job is waiting, failed-for-retry or running."""
    return not scalar(
        connection,
        "SELECT count(*) FROM pgqueue.jobs WHERE state IN ('queued', 'failed', 'running')",
    )


def ledger_count(connection: psycopg.Connection[Any], job_id: int) -> int:
    return int(
        scalar(connection, "SELECT count(*) FROM pgqueue_chaos.ledger WHERE job_id = %s", (job_id,))
    )


def wait_registered(connection: psycopg.Connection[Any], count: int, timeout: float = 30) -> None:
    """Wait until ``count`` workers have written their registry row (they are running)."""
    wait_until(lambda: scalar(connection, "SELECT count(*) FROM pgqueue.workers") >= count, timeout)
