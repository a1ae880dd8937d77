"""T14: a Hypothesis state machine over pgqueue's real statements on real PostgreSQL.

Rules drive ``pgqueue.queries`` statements directly (rendered for schema
``pgqueue``): enqueue, claim, heartbeat, complete, fail, backdate a lease,
rescue, cancel, retry and release, with fresh and *stale* lease tokens in
random interleavings. A plain-Python model predicts every outcome. After each
step the table must equal the model: same state, attempt and crash count per
job, a lease token exactly on running jobs, states within the closed set; and
every statement carrying a stale token must have changed 0 rows.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pgqueue import App, queries

SCHEMA = "pgqueue"
QUEUES = ("alpha", "beta")
MAX_CRASH_RECOVERIES = 2
STATES = {"queued", "running", "succeeded", "failed", "dead", "cancelled"}
EVENTS = "pgqueue_events_pgqueue"
NOTIFY = "pgqueue_pgqueue"


@dataclass
class ModelJob:
    queue: str
    priority: int
    state: str = "queued"
    attempt: int = 0
    crash_count: int = 0
    token: uuid.UUID | None = None
    issued: list[uuid.UUID] = field(default_factory=list)
    cancel_requested: bool = False
    due: bool = True
    expired: bool = False


def _run(connection: psycopg.Connection[Any], statement: str, params: dict[str, Any]) -> list[Any]:
    cursor = connection.execute(queries.render(statement, SCHEMA), params)
    return cursor.fetchall() if cursor.description else []


def make_machine(dsn: str, connection: psycopg.Connection[Any]) -> type[RuleBasedStateMachine]:
    app = App(dsn)

    class JobLifecycle(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            connection.execute("TRUNCATE pgqueue.jobs RESTART IDENTITY")
            self.jobs: dict[int, ModelJob] = {}

        # ------------------------------------------------------------ helpers

        def _pick(self, data: st.DataObject, *states: str) -> int | None:
            candidates = sorted(j for j, m in self.jobs.items() if not states or m.state in states)
            return data.draw(st.sampled_from(candidates)) if candidates else None

        def _token(self, data: st.DataObject, job: ModelJob, stale: bool) -> uuid.UUID:
            if not stale and job.token is not None:
                return job.token
            old = [t for t in job.issued if t != job.token]
            if old and data.draw(st.booleans()):
                return data.draw(st.sampled_from(old))
            return data.draw(st.uuids())

        def _holds(self, job: ModelJob, token: uuid.UUID) -> bool:
            return job.state == "running" and job.token == token

        # -------------------------------------------------------------- rules

        @rule(queue=st.sampled_from(QUEUES), priority=st.integers(-2, 2))
        def enqueue(self, queue: str, priority: int) -> None:
            job = app.enqueue(
                "t14_task",
                {"n": 1},
                check_task=False,
                queue=queue,
                priority=priority,
                max_attempts=100,
                connection=connection,
            )
            self.jobs[job.id] = ModelJob(queue, priority)

        @rule(queue=st.sampled_from(QUEUES), limit=st.integers(1, 3))
        def claim(self, queue: str, limit: int) -> None:
            claimable = {
                j: m
                for j, m in self.jobs.items()
                if m.queue == queue and m.state in ("queued", "failed") and m.due
            }
            rows = _run(
                connection,
                queries.JOB_CLAIM,
                {
                    "queue": queue,
                    "limit": limit,
                    "worker_id": "t14",
                    "lease_seconds": 600,
                },
            )
            claimed = {row[0]: row[8] for row in rows}
            assert set(claimed) <= set(claimable)
            assert len(claimed) == min(limit, len(claimable))
            left = [m.priority for j, m in claimable.items() if j not in claimed]
            if claimed and left:
                assert min(claimable[j].priority for j in claimed) >= max(left)
            for job_id, token in claimed.items():
                job = self.jobs[job_id]
                assert token not in job.issued
                job.state, job.attempt, job.token = "running", job.attempt + 1, token
                job.issued.append(token)
                job.cancel_requested = job.expired = False

        @precondition(lambda self: self.jobs)
        @rule(data=st.data(), stale=st.booleans())
        def heartbeat(self, data: st.DataObject, stale: bool) -> None:
            job_id = self._pick(data)
            assert job_id is not None
            job = self.jobs[job_id]
            token = self._token(data, job, stale)
            rows = _run(
                connection,
                queries.JOB_HEARTBEAT,
                {
                    "ids": [job_id],
                    "lease_tokens": [token],
                    "lease_seconds": 600,
                },
            )
            if self._holds(job, token):
                assert rows == [(job_id, job.cancel_requested)]
                job.expired = False
            else:
                assert rows == [], "a heartbeat with a stale lease token changed a row"

        @precondition(lambda self: self.jobs)
        @rule(data=st.data(), stale=st.booleans())
        def complete(self, data: st.DataObject, stale: bool) -> None:
            job_id = self._pick(data)
            assert job_id is not None
            job = self.jobs[job_id]
            token = self._token(data, job, stale)
            rows = _run(
                connection,
                queries.JOB_SUCCEED_MANY,
                {
                    "ids": [job_id],
                    "lease_tokens": [token],
                    "results": [json.dumps("ok")],
                    "events_channel": EVENTS,
                },
            )
            written = bool(rows and rows[0][0])
            assert written == self._holds(job, token), "stale completion changed a row"
            if written:
                job.state, job.token = "succeeded", None

        @precondition(lambda self: self.jobs)
        @rule(data=st.data(), stale=st.booleans(), dead=st.booleans())
        def fail(self, data: st.DataObject, stale: bool, dead: bool) -> None:
            job_id = self._pick(data)
            assert job_id is not None
            job = self.jobs[job_id]
            token = self._token(data, job, stale)
            rows = _run(
                connection,
                queries.JOB_FAIL,
                {
                    "id": job_id,
                    "lease_token": token,
                    "state": "dead" if dead else "failed",
                    "delay_seconds": 0.0,
                    "last_error": "E: boom",
                    "kind": "error",
                    "error_type": "E",
                    "message": "boom",
                    "traceback": None,
                    "crash_increment": 0,
                    "events_channel": EVENTS,
                },
            )
            assert bool(rows) == self._holds(job, token), "stale failure changed a row"
            if rows:
                job.state, job.token, job.due = ("dead" if dead else "failed"), None, True

        @precondition(lambda self: self.jobs)
        @rule(data=st.data(), stale=st.booleans())
        def release(self, data: st.DataObject, stale: bool) -> None:
            job_id = self._pick(data)
            assert job_id is not None
            job = self.jobs[job_id]
            token = self._token(data, job, stale)
            rows = _run(
                connection,
                queries.JOB_RELEASE,
                {
                    "ids": [job_id],
                    "lease_tokens": [token],
                    "notify_channel": NOTIFY,
                },
            )
            assert bool(rows) == self._holds(job, token), "stale release changed a row"
            if rows:
                job.state, job.token, job.due = "queued", None, True
                job.attempt = max(job.attempt - 1, 0)

        @precondition(lambda self: any(m.state == "running" for m in self.jobs.values()))
        @rule(data=st.data())
        def expire(self, data: st.DataObject) -> None:
            """The fault: a worker stopped heartbeating and its lease ran out."""
            job_id = self._pick(data, "running")
            assert job_id is not None
            connection.execute(
                "UPDATE pgqueue.jobs SET lease_expires_at = now() - interval '1 second'"
                " WHERE id = %s",
                (job_id,),
            )
            self.jobs[job_id].expired = True

        @rule()
        def rescue(self) -> None:
            expected = {j for j, m in self.jobs.items() if m.state == "running" and m.expired}
            rows = _run(
                connection,
                queries.JOB_RESCUE_EXPIRED,
                {
                    "limit": 100,
                    "max_crash_recoveries": MAX_CRASH_RECOVERIES,
                    "events_channel": EVENTS,
                    "notify_channel": NOTIFY,
                },
            )
            assert {row[0] for row in rows} == expected
            for job_id in expected:
                job = self.jobs[job_id]
                job.crash_count += 1
                job.state = "dead" if job.crash_count >= MAX_CRASH_RECOVERIES else "failed"
                job.token, job.expired, job.due = None, False, False  # crash backoff >= 1 s

        @rule()
        def time_passes(self) -> None:
            """Every backoff elapses: failed jobs become due."""
            connection.execute("UPDATE pgqueue.jobs SET run_at = now() WHERE state = 'failed'")
            for job in self.jobs.values():
                job.due = True

        @precondition(lambda self: self.jobs)
        @rule(data=st.data())
        def cancel(self, data: st.DataObject) -> None:
            job_id = self._pick(data)
            assert job_id is not None
            job = self.jobs[job_id]
            waiting = _run(connection, queries.JOB_CANCEL_WAITING, {"ids": [job_id]})
            assert bool(waiting) == (job.state in ("queued", "failed"))
            if waiting:
                job.state = "cancelled"
                return
            flagged = _run(
                connection,
                queries.JOB_CANCEL_REQUEST_RUNNING,
                {
                    "ids": [job_id],
                    "events_channel": EVENTS,
                },
            )
            assert bool(flagged) == (job.state == "running")
            if flagged:
                job.cancel_requested = True

        @precondition(lambda self: self.jobs)
        @rule(data=st.data())
        def retry(self, data: st.DataObject) -> None:
            job_id = self._pick(data)
            assert job_id is not None
            job = self.jobs[job_id]
            rows = _run(connection, queries.JOB_RETRY, {"ids": [job_id], "notify_channel": NOTIFY})
            retryable = job.state in ("dead", "cancelled", "failed", "succeeded")
            assert bool(rows) == retryable
            if rows:
                job.state, job.crash_count, job.due, job.cancel_requested = "queued", 0, True, False

        # ----------------------------------------------------------- invariant

        @invariant()
        def table_matches_model(self) -> None:
            rows = connection.execute(
                "SELECT id, state, attempt, crash_count, lease_token,"
                " cancel_requested_at IS NOT NULL FROM pgqueue.jobs"
            ).fetchall()
            assert {row[0] for row in rows} == set(self.jobs)
            counts: dict[str, int] = {}
            for job_id, state, attempt, crashes, token, cancel in rows:
                job = self.jobs[job_id]
                assert state in STATES
                assert (state, attempt, crashes) == (job.state, job.attempt, job.crash_count)
                assert (token is not None) == (state == "running")
                if state == "running":
                    assert token == job.token
                    assert cancel == job.cancel_requested
                counts[state] = counts.get(state, 0) + 1
            model_counts: dict[str, int] = {}
            for job in self.jobs.values():
                model_counts[job.state] = model_counts.get(job.state, 0) + 1
            assert counts == model_counts

        def teardown(self) -> None:
            connection.execute("TRUNCATE pgqueue.jobs RESTART IDENTITY")

    JobLifecycle.TestCase.settings = settings(
        max_examples=60,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    return JobLifecycle


def test_t14_job_lifecycle_state_machine(dsn: str, db: psycopg.Connection[Any]) -> None:
    from hypothesis.stateful import run_state_machine_as_test

    machine = make_machine(dsn, db)
    run_state_machine_as_test(machine, settings=machine.TestCase.settings)
