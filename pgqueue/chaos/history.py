"""The history tables and the checker that judges a run against invariants I1-I7.

Tables, in schema ``pgqueue_chaos`` beside pgqueue's own:

- ``ledger``: one row per execution, written by the task itself (see
  ``pgqueue.chaos.tasks``): job id, attempt, lease token, pid, DB-clock start
  and finish.
- ``effects``: side effects written by tasks, unique per effect key.
- ``acks``: one row per enqueue that *returned* to the producer: the set of
  jobs pgqueue promised not to lose.
- ``kills``: the worker processes the harness killed, and when (DB clock).
- ``orders``: the business table of the transactional-enqueue scenario.

``check_history`` reads them together with ``pgqueue.jobs`` and returns a
``HistoryReport``: the figures of the run and every invariant violation found,
each described in one line with the job id, so a failure can be looked up.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

__all__ = [
    "HISTORY_DDL",
    "HistoryReport",
    "KillRecord",
    "check_history",
    "install_history",
    "record_acks",
    "record_kills",
    "recorded_kills",
    "reset_history",
]

Connection = psycopg.Connection[Any]

HISTORY_DDL = """
CREATE SCHEMA IF NOT EXISTS pgqueue_chaos;
CREATE TABLE IF NOT EXISTS pgqueue_chaos.ledger (
    exec_id uuid PRIMARY KEY,
    job_id bigint NOT NULL,
    attempt int NOT NULL,
    lease_token uuid,
    pid int NOT NULL,
    worker_pid int NOT NULL,
    tag text NOT NULL DEFAULT '',
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz
);
CREATE INDEX IF NOT EXISTS ledger_job_idx ON pgqueue_chaos.ledger (job_id, started_at);
CREATE TABLE IF NOT EXISTS pgqueue_chaos.effects (
    effect_key text PRIMARY KEY,
    job_id bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS pgqueue_chaos.acks (
    job_id bigint PRIMARY KEY,
    acked_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS pgqueue_chaos.kills (
    pid int NOT NULL,
    killed_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS pgqueue_chaos.orders (
    id bigint PRIMARY KEY,
    job_id bigint,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""

# A job may be left in one of these states at the end of a run.
FINAL_STATES = frozenset({"succeeded", "dead", "cancelled"})
ALL_STATES = frozenset({"queued", "running", "succeeded", "failed", "dead", "cancelled"})
# Errors that dead-letter a job at once, whatever attempts are left.
NON_RETRYABLE_TYPES = frozenset({"ArgumentError", "SerializationError"})


def install_history(connection: Connection) -> None:
    """Create the history tables if they do not exist (idempotent)."""
    connection.execute(HISTORY_DDL)


def reset_history(connection: Connection) -> None:
    """Create the history tables and empty them."""
    install_history(connection)
    connection.execute(
        "TRUNCATE pgqueue_chaos.ledger, pgqueue_chaos.effects, pgqueue_chaos.acks,"
        " pgqueue_chaos.kills, pgqueue_chaos.orders"
    )


def record_acks(connection: Connection, job_ids: Iterable[int]) -> None:
    """Store the ids of acknowledged enqueues (after the fact: the producer keeps them
    in memory, because during a database outage it could not write them anyway)."""
    ids = list(job_ids)
    if ids:
        connection.execute(
            "INSERT INTO pgqueue_chaos.acks (job_id) SELECT unnest(%s::bigint[])"
            " ON CONFLICT DO NOTHING",
            (ids,),
        )


def record_kills(connection: Connection, kills: Iterable[KillRecord]) -> None:
    """Store the harness's kills beside the ledger, so a kept database can be re-checked."""
    rows = [(k.pid, k.at) for k in kills]
    if rows:
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO pgqueue_chaos.kills (pid, killed_at) VALUES (%s, %s)", rows
            )


def recorded_kills(connection: Connection) -> list[KillRecord]:
    """The kills stored by ``record_kills``."""
    return [
        KillRecord(pid, at)
        for pid, at in connection.execute(
            "SELECT pid, killed_at FROM pgqueue_chaos.kills ORDER BY killed_at"
        )
    ]


@dataclass(frozen=True)
class KillRecord:
    """A worker process the harness killed: its pid and the database clock just before."""

    pid: int
    at: datetime


@dataclass
class HistoryReport:
    """What a run did, and which invariants it broke.

    ``violations`` is empty when every checked invariant held. Figures follow the
    JSON summary of ``pgqueue chaos``.
    """

    jobs_enqueued_acked: int = 0
    jobs_completed: int = 0
    jobs_dead: int = 0
    jobs_cancelled: int = 0
    jobs_lost: int = 0
    executions: int = 0
    re_executions: int = 0
    re_executions_at_kill: int = 0
    max_orphan_recovery_s: float | None = None
    orphan_recoveries: list[float] = field(default_factory=list)
    max_backends: int | None = None
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> dict[str, Any]:
        """The figures as a JSON-ready dict (violations included, capped at 50 lines)."""
        return {
            "jobs_enqueued_acked": self.jobs_enqueued_acked,
            "jobs_completed": self.jobs_completed,
            "jobs_dead": self.jobs_dead,
            "jobs_cancelled": self.jobs_cancelled,
            "jobs_lost": self.jobs_lost,
            "executions": self.executions,
            "re_executions": self.re_executions,
            "re_executions_at_kill": self.re_executions_at_kill,
            "max_orphan_recovery_s": _round(self.max_orphan_recovery_s),
            "p99_orphan_recovery_s": _round(_percentile(self.orphan_recoveries, 0.99)),
            "max_backends": self.max_backends,
            "violations": self.violations[:50],
            "violation_count": len(self.violations),
        }

    def describe(self) -> str:
        """A multi-line account for assertion messages."""
        return json.dumps(self.summary(), indent=2, default=str)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class _Execution:
    exec_id: str
    job_id: int
    attempt: int
    lease_token: str | None
    pid: int
    worker_pid: int  # == pid on threads; the worker that forked it for a child process
    started_at: datetime
    finished_at: datetime | None


@dataclass
class _Job:
    id: int
    state: str
    attempt: int
    max_attempts: int
    crash_count: int
    last_error: str | None
    errors: list[dict[str, Any]]
    finished_at: datetime | None
    lease_expires_at: datetime | None


def _error_time(entry: dict[str, Any]) -> datetime | None:
    at = entry.get("at")
    if isinstance(at, str):
        try:
            return datetime.fromisoformat(at)
        except ValueError:
            return None
    return at if isinstance(at, datetime) else None


def check_history(
    connection: Connection,
    *,
    kills: Sequence[KillRecord] = (),
    allow_dead: bool = True,
    expected_dead: Iterable[int] = (),
    rerun_kinds: Iterable[str] = (),
    max_crash_recoveries: int | None = None,
    rescue_grace_s: float = 5.0,
    max_backends: int | None = None,
    observed_backends: int | None = None,
    clock_slack_s: float = 0.05,
) -> HistoryReport:
    """Judge the run recorded in the history tables; the system should be quiescent.

    Invariants (research/reliability.md §7.1):

    - I1 no loss: every acknowledged job ends ``succeeded`` (or ``dead`` with
      ``allow_dead``; ``expected_dead`` ids must end dead).
    - I2 nothing after completion: no execution starts after its job succeeded.
    - I3 no overlap without lease end: an execution that starts while an earlier
      one of the same job is still running is allowed only if the earlier
      lease ended first (rescued, released or failed: an ``errors`` entry dated
      between the two starts).
    - I4 one execution per lease: no lease token appears in two ledger rows, and
      attempts never go down; they stay equal only across a shutdown release
      (which hands the attempt back, see ``queries.JOB_RELEASE``).
    - I5 nothing stuck: no job is ``running`` with a lease that expired more than
      ``rescue_grace_s`` ago; states stay in the closed set.
    - I6 dead for a reason: every dead job has a ``last_error`` and either used its
      attempts, hit ``max_crash_recoveries``, or failed with a non-retryable error.
    - I7 bounded connections: ``observed_backends <= max_backends`` when both are given.

    Re-executions: a job that ran more than once must be explained, each earlier
    execution either by a kill of its process (``kills``, the pid matching and
    the kill at or after its start) or by an ``errors`` entry of one of
    ``rerun_kinds`` (e.g. ``error`` for handler failures, ``worker_lost`` where a
    database outage may legitimately expire leases) dated after its start.
    Orphan recovery time is measured from each kill to the next start of a job
    that the killed process was running.
    """
    report = HistoryReport()
    kinds = frozenset(rerun_kinds)
    expected = frozenset(expected_dead)

    # I1: every acknowledged enqueue reached a final state.
    acked = connection.execute(
        "SELECT a.job_id, j.state FROM pgqueue_chaos.acks a"
        " LEFT JOIN pgqueue.jobs j ON j.id = a.job_id"
    ).fetchall()
    report.jobs_enqueued_acked = len(acked)
    for job_id, state in acked:
        if state == "succeeded":
            report.jobs_completed += 1
            if job_id in expected:
                report.violations.append(f"I1 job {job_id}: expected dead, ended succeeded")
        elif state == "dead":
            report.jobs_dead += 1
            if not allow_dead and job_id not in expected:
                report.jobs_lost += 1
                report.violations.append(f"I1 job {job_id}: acknowledged, ended dead")
        elif state == "cancelled":
            report.jobs_cancelled += 1
            report.jobs_lost += 1
            report.violations.append(f"I1 job {job_id}: acknowledged, ended cancelled")
        else:
            report.jobs_lost += 1
            shown = "missing" if state is None else f"still {state}"
            report.violations.append(f"I1 job {job_id}: acknowledged, {shown}")

    # I2: nothing started after its job completed.
    late = connection.execute(
        "SELECT l.job_id, l.started_at, j.finished_at FROM pgqueue_chaos.ledger l"
        " JOIN pgqueue.jobs j ON j.id = l.job_id"
        " WHERE j.state = 'succeeded' AND l.started_at > j.finished_at"
        " ORDER BY l.job_id LIMIT 20"
    ).fetchall()
    for job_id, started, finished in late:
        report.violations.append(
            f"I2 job {job_id}: an execution started at {started} after it succeeded at {finished}"
        )

    # I5: the closed set of states, and nothing running on an expired lease.
    states = {row[0] for row in connection.execute("SELECT DISTINCT state FROM pgqueue.jobs")}
    if not states <= ALL_STATES:
        report.violations.append(f"I5 states outside the closed set: {sorted(states - ALL_STATES)}")
    stuck = connection.execute(
        "SELECT id, extract(epoch FROM now() - lease_expires_at)::float8 FROM pgqueue.jobs"
        " WHERE state = 'running'"
        " AND (lease_expires_at IS NULL"
        "      OR lease_expires_at < now() - make_interval(secs => %s))"
        " ORDER BY id LIMIT 20",
        (rescue_grace_s,),
    ).fetchall()
    for job_id, overdue in stuck:
        report.violations.append(
            f"I5 job {job_id}: running with a lease expired {overdue:.1f}s ago (not rescued)"
        )

    # I6: dead for a reason.
    for row in connection.execute(
        "SELECT id, attempt, max_attempts, crash_count, last_error, errors"
        " FROM pgqueue.jobs WHERE state = 'dead'"
    ).fetchall():
        job_id, attempt, max_attempts, crash_count, last_error, errors = row
        if not last_error:
            report.violations.append(f"I6 job {job_id}: dead without last_error")
            continue
        last_type = (errors or [{}])[-1].get("type") if errors else None
        exhausted = attempt - crash_count >= max_attempts or attempt >= max_attempts
        crashed_out = max_crash_recoveries is not None and crash_count >= max_crash_recoveries
        if max_crash_recoveries is None and crash_count > 0:
            crashed_out = True  # the limit was not given: trust the rescuer's own count
        if not (exhausted or crashed_out or last_type in NON_RETRYABLE_TYPES):
            report.violations.append(
                f"I6 job {job_id}: dead at attempt {attempt}/{max_attempts} with"
                f" {crash_count} crash(es) and a retryable error: {last_error}"
            )

    # I7: connections.
    report.max_backends = observed_backends
    if (
        max_backends is not None
        and observed_backends is not None
        and observed_backends > max_backends
    ):
        report.violations.append(
            f"I7 {observed_backends} pgqueue backends seen; at most {max_backends} expected"
        )

    _check_executions(connection, report, kills, kinds, clock_slack_s)
    return report


def _check_executions(
    connection: Connection,
    report: HistoryReport,
    kills: Sequence[KillRecord],
    kinds: frozenset[str],
    slack_s: float,
) -> None:
    rows = connection.execute(
        "SELECT exec_id::text, job_id, attempt, lease_token::text, pid, worker_pid, started_at,"
        " finished_at"
        " FROM pgqueue_chaos.ledger ORDER BY job_id, started_at, exec_id"
    ).fetchall()
    by_job: dict[int, list[_Execution]] = defaultdict(list)
    for row in rows:
        by_job[row[1]].append(_Execution(*row))
    report.executions = len(rows)
    report.re_executions = len(rows) - len(by_job)

    # I4a: a lease token names one execution.
    tokens: dict[str, _Execution] = {}
    for execution in (e for runs in by_job.values() for e in runs):
        if execution.lease_token is None:
            continue
        seen = tokens.get(execution.lease_token)
        if seen is not None:
            report.violations.append(
                f"I4 job {execution.job_id}: lease {execution.lease_token} ran twice"
                f" (pids {seen.pid} and {execution.pid})"
            )
        tokens[execution.lease_token] = execution

    rerun_jobs = [job_id for job_id, runs in by_job.items() if len(runs) > 1]
    jobs: dict[int, _Job] = {}
    if rerun_jobs:
        for row in connection.execute(
            "SELECT id, state, attempt, max_attempts, crash_count, last_error, errors,"
            " finished_at, lease_expires_at FROM pgqueue.jobs WHERE id = ANY(%s)",
            (rerun_jobs,),
        ).fetchall():
            job_id, state, attempt, max_attempts, crash_count, last_error = row[:6]
            jobs[job_id] = _Job(
                job_id,
                state,
                attempt,
                max_attempts,
                crash_count,
                last_error,
                list(row[6] or []),
                row[7],
                row[8],
            )

    kills_by_pid: dict[int, list[datetime]] = defaultdict(list)
    for kill in kills:
        kills_by_pid[kill.pid].append(kill.at)
    slack = timedelta(seconds=slack_s)
    recoveries: list[float] = []

    for job_id in rerun_jobs:
        runs = by_job[job_id]
        job = jobs.get(job_id)
        errors = job.errors if job is not None else []
        entries = [(e, _error_time(e)) for e in errors]
        for earlier, later in itertools.pairwise(runs):
            lease_ended = [
                (entry, at)
                for entry, at in entries
                if at is not None and earlier.started_at - slack <= at <= later.started_at + slack
            ]
            # I3: overlap only after the earlier lease ended.
            overlapping = earlier.finished_at is None or earlier.finished_at > later.started_at
            if overlapping and not lease_ended:
                report.violations.append(
                    f"I3 job {job_id}: attempt {later.attempt} (pid {later.pid}) started at"
                    f" {later.started_at} while attempt {earlier.attempt} (pid {earlier.pid})"
                    " still held its lease"
                )
            # I4b: attempts never go down, and repeat only across a release.
            released = any(entry.get("kind") == "released" for entry, _ in lease_ended)
            if later.attempt < earlier.attempt or (
                later.attempt == earlier.attempt and not released
            ):
                report.violations.append(
                    f"I4 job {job_id}: attempt {earlier.attempt} was followed by attempt"
                    f" {later.attempt} without a shutdown release in between"
                )
            # Why did it run again?
            kills_of_its_worker = kills_by_pid.get(earlier.worker_pid, ())
            killed_at = [at for at in kills_of_its_worker if at >= earlier.started_at - slack]
            if killed_at:
                report.re_executions_at_kill += 1
                recoveries.append((later.started_at - min(killed_at)).total_seconds())
                continue
            if any(entry.get("kind") in kinds for entry, _ in lease_ended):
                continue
            if released:
                continue  # a shutdown hands the job back: it must run again
            shown = ", ".join(
                f"{entry.get('kind')}:{entry.get('type', '')}" for entry, _ in lease_ended
            )
            report.violations.append(
                f"re-execution of job {job_id}: attempt {earlier.attempt} (pid {earlier.pid})"
                f" ran again as attempt {later.attempt} with no kill of its process and no"
                f" allowed reason (errors between: {shown or 'none'})"
            )
    report.orphan_recoveries = recoveries
    report.max_orphan_recovery_s = max(recoveries) if recoveries else None
