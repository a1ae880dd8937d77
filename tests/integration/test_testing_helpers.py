"""pgqueue.testing: drain() on a real database, eager() with none at all."""

from __future__ import annotations

import pytest

from pgqueue import App, JobContext, JobFailedError, JobState, SerializationError
from pgqueue.testing import drain, eager

UNREACHABLE = "postgresql://nobody:secret@127.0.0.1:1/none"


def test_drain_runs_every_ready_job(app: App) -> None:
    """drain() runs enqueued jobs through PostgreSQL until none is ready."""

    @app.task(queue="emails")
    def send(to: str) -> str:
        return to

    jobs = [send.enqueue(f"{i}@x") for i in range(5)]
    stats = drain(app)
    assert stats.succeeded == 5
    assert [app.get_job(j.id).state for j in jobs] == [JobState.SUCCEEDED] * 5


def test_eager_runs_inline_without_a_database() -> None:
    """Inside eager(), enqueue runs the task at once; no connection is ever made."""
    app = App(UNREACHABLE)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with eager(app) as runner:
        job = add.enqueue(2, 3)
        assert job.state is JobState.SUCCEEDED
        assert job.result == 5
        assert add.delay(1, 1).get() == 2
        assert app.get_job(job.id).result == 5
        assert len(runner.jobs) == 2


def test_eager_still_validates_and_round_trips_json() -> None:
    """Bad arguments fail in eager mode exactly as at enqueue; values arrive as JSON."""
    from datetime import datetime

    app = App(UNREACHABLE)
    seen: list[object] = []

    @app.task
    def store(payload: dict[str, object]) -> None:
        seen.append(payload)

    with eager(app):
        with pytest.raises(SerializationError, match=r"at \$\.payload\.when"):
            store.enqueue({"when": datetime(2026, 1, 1)})
        store.enqueue({"numbers": (1, 2)})
    assert seen == [{"numbers": [1, 2]}]  # the tuple became a list, as on a worker


def test_eager_retries_then_propagates_dead_jobs() -> None:
    """A failing task is retried inline up to max_attempts, then raises at the call."""
    app = App(UNREACHABLE)
    attempts: list[int] = []

    @app.task(max_attempts=3, pass_context=True)
    def flaky(context: JobContext) -> str:
        attempts.append(context.attempt)
        if context.attempt < 3:
            raise ConnectionError("again")
        return "ok"

    @app.task(max_attempts=2)
    def broken() -> None:
        raise ValueError("always")

    with eager(app):
        assert flaky.enqueue().result == "ok"
        assert attempts == [1, 2, 3]
        with pytest.raises(JobFailedError, match="ValueError: always"):
            broken.enqueue()
    with eager(app, propagate=False):
        dead = broken.enqueue()
        assert dead.state is JobState.DEAD
        assert dead.attempt == 2
