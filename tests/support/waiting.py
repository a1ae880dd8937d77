"""Polling helpers shared by the end-to-end and reliability tests."""

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
    """The first column of the first row, or None."""
    row = connection.execute(sql, params).fetchone()
    return None if row is None else row[0]
