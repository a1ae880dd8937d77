"""T13: retries, backoff, dead letters and redrive.

Properties of ``pgqueue.retry.backoff_delay`` (Hypothesis), then the whole
path in real processes: the gaps between attempts as the task itself saw them
(its ledger), the dead letter, and a redrive with ``pgqueue retry``.
"""

from __future__ import annotations

import itertools
import math
import random
import subprocess
import sys
from typing import Any

import psycopg
from hypothesis import given
from hypothesis import strategies as st

from pgqueue import App
from pgqueue.chaos import check_history, record_acks
from pgqueue.retry import backoff_delay
from tests.reliability.conftest import FAST, StartWorkers
from tests.reliability.helpers import all_finished, wait_until

attempts = st.integers(min_value=1, max_value=10**6)
bases = st.floats(min_value=0.0, max_value=3600.0, allow_nan=False)
caps = st.floats(min_value=0.0, max_value=86400.0, allow_nan=False)


@given(attempts, bases, caps, st.booleans(), st.integers(0, 2**32 - 1))
def test_backoff_is_never_negative_and_never_above_the_cap(
    n: int, base: float, cap: float, jitter: bool, seed: int
) -> None:
    delay = backoff_delay(n, base=base, max_delay=cap, jitter=jitter, rng=random.Random(seed))
    assert 0.0 <= delay <= cap


@given(attempts, bases, caps)
def test_backoff_without_jitter_never_decreases(n: int, base: float, cap: float) -> None:
    now = backoff_delay(n, base=base, max_delay=cap, jitter=False)
    after = backoff_delay(n + 1, base=base, max_delay=cap, jitter=False)
    assert after >= now
    assert now == min(base * 2.0 ** min(n - 1, 62), cap)


@given(attempts, bases, caps, st.integers(0, 2**32 - 1))
def test_jitter_stays_within_zero_and_the_unjittered_delay(
    n: int, base: float, cap: float, seed: int
) -> None:
    ceiling = backoff_delay(n, base=base, max_delay=cap, jitter=False)
    jittered = backoff_delay(n, base=base, max_delay=cap, jitter=True, rng=random.Random(seed))
    assert 0.0 <= jittered <= ceiling


@given(bases, caps, st.booleans())
def test_no_overflow_at_a_million_attempts(base: float, cap: float, jitter: bool) -> None:
    delay = backoff_delay(10**6, base=base, max_delay=cap, jitter=jitter)
    assert math.isfinite(delay)
    assert 0.0 <= delay <= cap
    if not jitter:
        assert delay == min(base * 2.0**62, cap)


def test_failing_task_retries_with_backoff_then_dead_then_redrive(
    dsn: str, history: psycopg.Connection[Any], start_workers: StartWorkers
) -> None:
    """4 attempts 0.4, 0.8, 1.6 s apart (no jitter), dead with the error; `pgqueue retry`
    queues it once more and it runs exactly once more."""
    app = App(dsn)
    job = app.enqueue(
        "chaos_fail", {"message": "upstream said no"}, check_task=False, max_attempts=4
    )
    record_acks(history, [job.id])
    start_workers(1, *FAST)
    wait_until(lambda: all_finished(history), timeout=30)
    row = history.execute(
        "SELECT state, attempt, last_error, errors FROM pgqueue.jobs WHERE id = %s", (job.id,)
    ).fetchone()
    assert row is not None
    state, attempt, last_error, errors = row
    assert (state, attempt, last_error) == ("dead", 4, "ValueError: upstream said no")
    assert [(e["attempt"], e["type"], e["message"]) for e in errors] == [
        (n, "ValueError", "upstream said no") for n in (1, 2, 3, 4)
    ]
    starts = [
        r[0]
        for r in history.execute(
            "SELECT started_at FROM pgqueue_chaos.ledger WHERE job_id = %s ORDER BY started_at",
            (job.id,),
        )
    ]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    # Each gap: the backoff, plus at most one poll interval (0.5 s) and some slack.
    for gap, backoff in zip(gaps, (0.4, 0.8, 1.6), strict=True):
        assert backoff <= gap <= backoff + 0.5 + 0.4, gaps

    redrive = subprocess.run(
        [sys.executable, "-m", "pgqueue", "--dsn", dsn, "retry", str(job.id)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert redrive.returncode == 0, redrive.stderr
    assert f"job {job.id}: queued again on default" in redrive.stdout
    wait_until(lambda: all_finished(history), timeout=30)
    row = history.execute(
        "SELECT state, attempt, max_attempts FROM pgqueue.jobs WHERE id = %s", (job.id,)
    ).fetchone()
    assert row == ("dead", 5, 5)
    report = check_history(history, rerun_kinds=("error",))
    assert report.ok, report.describe()
    assert report.executions == 5
    app.close()
