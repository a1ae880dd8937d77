"""Small waits and queries shared by the reliability tests."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.support.waiting import scalar as scalar
from tests.support.waiting import wait_until as wait_until


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
