"""Chaos scenarios: steady load on real workers while one fault repeats, then a verdict.

Every scenario follows the same plan:

1. empty pgqueue's tables and the history tables;
2. start the workers under a ``Supervisor`` and wait until each has registered;
3. offer load with a ``Producer`` while the scenario's fault repeats for
   ``duration`` seconds (SIGKILL a worker, terminate backends, restart
   PostgreSQL, or nothing);
4. stop the fault and the producer, let every acknowledged job finish;
5. stop the workers gracefully and run ``check_history`` (invariants I1-I7 plus
   the scenario's own rules, e.g. "no job failed for infrastructure reasons").

The result's ``summary`` is the JSON that ``pgqueue chaos`` prints. The short
forms in ``tests/reliability`` call the same functions with small numbers.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from pgqueue.chaos.history import (
    HistoryReport,
    check_history,
    record_acks,
    record_kills,
    reset_history,
)
from pgqueue.chaos.load import Monitor, Producer, sleep_jobs
from pgqueue.chaos.supervisor import HARNESS_APPLICATION, BackendKiller, Supervisor, db_now

if TYPE_CHECKING:
    from pgqueue.embedded import LocalCluster, StopMode

__all__ = ["SCENARIOS", "ChaosConfig", "ChaosResult", "require_durable_commits", "run_scenario"]

logger = logging.getLogger("pgqueue.chaos")

# Per worker: claimer, completer, heartbeat, maintenance, listener (worker/runtime.py),
# plus the App's own pool (pool_size 4) that JobContext.complete and metrics may use.
BACKENDS_PER_WORKER = 5 + 4
# The producer's App pool (pool_size=2).
PRODUCER_BACKENDS = 2
# What worker/connections.py Backoff logs when a component is connected again.
_RESTORED = re.compile(r"database connection restored after ([0-9.]+)s")


@dataclass
class ChaosConfig:
    """Settings of one run; the defaults are the time-compressed long forms.

    Times are seconds. ``lease``/``heartbeat``/``rescue_interval`` are passed to
    every worker (``--lease``, ``--heartbeat``, ``--rescue-interval``).
    """

    duration: float = 60.0
    workers: int = 4
    concurrency: int = 8
    rate: float = 50.0
    lease: float = 3.0
    heartbeat: float = 0.5
    rescue_interval: float = 0.5
    poll_interval: float = 0.5
    kill_every: float = 2.0
    storm_every: float = 1.0
    restarts: int = 5
    restart_every: float = 8.0
    job_ms: tuple[int, int] = (50, 500)
    long_fraction: float = 0.01
    long_ms: int = 5000
    max_crash_recoveries: int = 10
    drain_timeout: float = 180.0
    seed: int = 0
    log_dir: Path | None = None
    extra_worker_args: tuple[str, ...] = ()

    def worker_args(self) -> list[str]:
        return [
            "-c",
            str(self.concurrency),
            "--lease",
            f"{self.lease:g}",
            "--heartbeat",
            f"{self.heartbeat:g}",
            "--rescue-interval",
            f"{self.rescue_interval:g}",
            "--poll-interval",
            f"{self.poll_interval:g}",
            "--max-crash-recoveries",
            str(self.max_crash_recoveries),
            "--shutdown-timeout",
            "10",
            "--loglevel",
            "warning",
            *self.extra_worker_args,
        ]

    def recovery_bound(self, crash_numbers: list[int] | None = None) -> float:
        """Longest acceptable kill-to-rerun time of an orphaned job.

        ``lease + scan + 2 s`` for a job's first crash (research/reliability.md
        §7.2 T02): the lease runs out at most ``lease`` after the kill, a rescuer
        notices within ``scan``, and the 2 s cover the rescuer's deliberate 1 s
        crash backoff plus a poll. ``crash_numbers`` lists the job's crash count at
        each rescue between the kill and the rerun: a later crash waits
        ``2 ** (n - 1)`` s (capped at 60, queries.JOB_RESCUE_EXPIRED), and a claim
        that died before its task started costs another lease and scan.
        """
        numbers = crash_numbers or [1]
        return sum(self.lease + self.rescue_interval + _crash_backoff(n) for n in numbers) + 1.0


def _crash_backoff(crash_number: int) -> float:
    """The rescuer's delay before the ``crash_number``-th rerun (queries.JOB_RESCUE_EXPIRED)."""
    return min(2.0 ** (crash_number - 1), 60.0)


@dataclass
class ChaosResult:
    """What a scenario run measured and found."""

    scenario: str
    summary: dict[str, Any]
    report: HistoryReport
    violations: list[str]
    log_dir: Path
    worker_log: str = ""

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclass
class _Run:
    """State shared by the phases of one run."""

    dsn: str
    config: ChaosConfig
    log_dir: Path
    supervisor: Supervisor
    monitor: Monitor
    producer: Producer
    violations: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    reconnects: list[float] = field(default_factory=list)
    fault_seconds: float = 0.0


def _connect(dsn: str, timeout: int = 5) -> psycopg.Connection[Any]:
    return psycopg.connect(
        dsn, autocommit=True, application_name=HARNESS_APPLICATION, connect_timeout=timeout
    )


def _connect_retrying(dsn: str, deadline_s: float = 60.0) -> psycopg.Connection[Any]:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return _connect(dsn, timeout=2)
        except psycopg.OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def reset_database(connection: psycopg.Connection[Any]) -> None:
    """Empty pgqueue's tables and the history tables of this database."""
    connection.execute("TRUNCATE pgqueue.jobs, pgqueue.queues, pgqueue.workers RESTART IDENTITY")
    reset_history(connection)


def _wait_registered(dsn: str, count: int, timeout: float = 60.0) -> None:
    with _connect(dsn) as connection:
        deadline = time.monotonic() + timeout
        while True:
            row = connection.execute("SELECT count(*) FROM pgqueue.workers").fetchone()
            if row is not None and int(row[0]) >= count:
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(f"only {row[0] if row else 0} of {count} workers registered")
            time.sleep(0.05)


def _wait_drained(dsn: str, acked: list[int], timeout: float) -> int:
    """Wait until every acknowledged job is finished; return how many are not."""
    deadline = time.monotonic() + timeout
    pending = len(acked)
    while True:
        try:
            with _connect(dsn) as connection:
                row = connection.execute(
                    "SELECT count(*) FROM unnest(%s::bigint[]) AS a(id)"
                    " LEFT JOIN pgqueue.jobs j ON j.id = a.id"
                    " WHERE j.state IS NULL OR j.state NOT IN ('succeeded', 'dead', 'cancelled')",
                    (acked,),
                ).fetchone()
                pending = int(row[0]) if row else pending
        except psycopg.OperationalError:
            pass
        if pending == 0 or time.monotonic() >= deadline:
            return pending
        time.sleep(0.25)


def _error_kinds(connection: psycopg.Connection[Any], kinds: set[str]) -> list[str]:
    """Jobs whose error history has an entry of one of ``kinds``: one line each."""
    rows = connection.execute(
        "SELECT j.id, e->>'kind', e->>'type', left(e->>'message', 160)"
        " FROM pgqueue.jobs j, jsonb_array_elements(j.errors) e"
        " WHERE e->>'kind' = ANY(%s) ORDER BY j.id LIMIT 20",
        (sorted(kinds),),
    ).fetchall()
    return [
        f"job {job_id} has a '{kind}' attempt ({error_type}: {message})"
        for job_id, kind, error_type, message in rows
    ]


def _run_load(
    scenario: str,
    dsn: str,
    config: ChaosConfig,
    fault: Callable[[_Run], None],
    *,
    rerun_kinds: tuple[str, ...] = (),
    forbidden_error_kinds: tuple[str, ...] = (),
) -> ChaosResult:
    log_dir = config.log_dir or Path(tempfile.mkdtemp(prefix=f"pgqueue-chaos-{scenario}-"))
    with _connect(dsn) as connection:
        reset_database(connection)
    supervisor = Supervisor(dsn, config.workers, config.worker_args(), log_dir)
    monitor = Monitor(dsn)
    producer = Producer(
        dsn,
        config.rate,
        sleep_jobs(
            config.job_ms[0], config.job_ms[1], config.long_fraction, config.long_ms, config.seed
        ),
    )
    run = _Run(dsn, config, log_dir, supervisor, monitor, producer)
    started = time.monotonic()
    supervisor.start()
    try:
        _wait_registered(dsn, config.workers)
        monitor.start()
        producer.start()
        fault_started = time.monotonic()
        fault(run)
        run.fault_seconds = time.monotonic() - fault_started
        producer.stop()
        pending = _wait_drained(dsn, producer.acked, config.drain_timeout)
        if pending:
            run.violations.append(
                f"{pending} acknowledged job(s) unfinished {config.drain_timeout:g}s after the load"
            )
    finally:
        producer.stop()
        codes = supervisor.stop()
        monitor.stop()
    elapsed = time.monotonic() - started
    with _connect_retrying(dsn) as connection:
        record_acks(connection, producer.acked)
        record_kills(connection, supervisor.kills)
        bound = config.workers * BACKENDS_PER_WORKER + PRODUCER_BACKENDS
        report = check_history(
            connection,
            kills=supervisor.kills,
            rerun_kinds=rerun_kinds,
            max_crash_recoveries=config.max_crash_recoveries,
            # A worker killed mid-run leaves backends for a moment while its
            # replacement connects: allow one extra worker's worth.
            max_backends=bound + (BACKENDS_PER_WORKER if supervisor.kills else 0),
            observed_backends=monitor.max_backends,
        )
        violations = run.violations + report.violations
        if forbidden_error_kinds:
            violations += [
                f"infrastructure failure: {line}"
                for line in _error_kinds(connection, set(forbidden_error_kinds))
            ]
        recoveries = _check_recovery_bounds(config, supervisor, connection, violations)
    if producer.other_errors:
        violations.append(
            "enqueue raised something other than ConnectionLost/DatabaseUnavailableError: "
            + "; ".join(f"{n}x {text}" for text, n in producer.other_errors.most_common(5))
        )
    unexpected = supervisor.unexpected_exits
    if unexpected:
        violations.append(
            f"{len(unexpected)} worker(s) exited on their own: "
            + ", ".join(f"pid {e.pid} code {e.returncode}" for e in unexpected[:5])
        )
    # -SIGTERM: a replacement started a moment before the stop, before its handlers.
    bad_codes = [code for code in codes if code not in (0, -signal.SIGTERM)]
    if bad_codes:
        violations.append(f"workers stopped with exit codes {bad_codes} (expected 0)")
    worker_log = supervisor.log_text()
    outages = [float(m) for m in _RESTORED.findall(worker_log)]
    logged_outage = max(outages) if outages else None
    # pg-restart: from the server accepting connections to every worker's next
    # heartbeat. Otherwise: the longest outage a worker component logged
    # ("database connection restored after Xs").
    reconnect_max = max(run.reconnects) if run.reconnects else logged_outage
    summary: dict[str, Any] = {
        "scenario": scenario,
        "ok": not violations,
        "jobs_enqueued_acked": report.jobs_enqueued_acked,
        "jobs_completed": report.jobs_completed,
        "jobs_dead": report.jobs_dead,
        "jobs_lost": report.jobs_lost,
        "re_executions": report.re_executions,
        "max_orphan_recovery_s": _round(report.max_orphan_recovery_s),
        "reconnect_max_s": _round(reconnect_max),
        "kills": len(supervisor.kills),
        "fault_seconds": round(run.fault_seconds, 1),
        "elapsed_seconds": round(elapsed, 1),
        "offered_rate": config.rate,
        "acked_per_second": round(report.jobs_enqueued_acked / max(run.fault_seconds, 1e-9), 1),
        "enqueue_unknown_outcome": producer.unknown,
        "enqueue_refused": producer.refused,
        "enqueue_other_errors": dict(producer.other_errors),
        "re_executions_at_kill": report.re_executions_at_kill,
        "p99_orphan_recovery_s": report.summary()["p99_orphan_recovery_s"],
        "orphan_recovery_bound_s": round(config.recovery_bound(), 2),
        "max_first_orphan_recovery_s": _round(max(recoveries.first, default=None)),
        "max_rescue_latency_s": _round(max(recoveries.rescue_latency, default=None)),
        "max_queue_wait_s": _round(max(recoveries.queue_wait, default=None)),
        "max_crashes_of_one_job": recoveries.max_crashes,
        "max_backends": monitor.max_backends,
        "max_heartbeat_staleness_s": _round(monitor.max_heartbeat_staleness),
        "max_logged_outage_s": _round(logged_outage),
        "reconnects_logged": len(outages),
        "worker_starts": supervisor.starts,
        "unexpected_worker_exits": len(unexpected),
        **run.extra,
        "violations": violations[:50],
        "violation_count": len(violations),
        "config": _config_dict(config),
        "log_dir": str(log_dir),
    }
    return ChaosResult(scenario, summary, report, violations, log_dir, worker_log)


@dataclass
class _Recoveries:
    """Kill-to-rerun times of orphaned jobs, split into their parts (seconds)."""

    total: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    rescue_latency: list[float] = field(default_factory=list)
    queue_wait: list[float] = field(default_factory=list)
    max_crashes: int = 0


def _check_recovery_bounds(
    config: ChaosConfig,
    supervisor: Supervisor,
    connection: psycopg.Connection[Any],
    violations: list[str],
) -> _Recoveries:
    """Each orphan must be running again within ``config.recovery_bound(...)`` of its kill.

    A recovery is split in three: kill -> rescue (the lease expires and a
    rescuer notices: at most lease + scan), rescue -> due (the rescuer's crash
    backoff, by design) and due -> start (waiting for a free slot behind the
    jobs ahead of it in claim order). ``k`` counts the job's rescues so far from
    its error history, so crashes that left no ledger row (killed between claim
    and start) are counted too.
    """
    found = _Recoveries()
    if not supervisor.kills:
        return found
    rows = connection.execute(
        "SELECT l.job_id, l.worker_pid, l.started_at, j.errors FROM pgqueue_chaos.ledger l"
        " JOIN pgqueue.jobs j ON j.id = l.job_id"
        " WHERE l.job_id IN (SELECT job_id FROM pgqueue_chaos.ledger GROUP BY 1"
        "                    HAVING count(*) > 1)"
        " ORDER BY l.job_id, l.started_at"
    ).fetchall()
    kills = sorted(supervisor.kills, key=lambda k: k.at)
    by_job: dict[int, list[tuple[int, datetime, list[dict[str, Any]]]]] = {}
    for job_id, pid, started, errors in rows:
        by_job.setdefault(job_id, []).append((pid, started, errors or []))
    for job_id, runs in by_job.items():
        rescues = sorted(
            datetime.fromisoformat(e["at"]) for e in runs[0][2] if e.get("kind") == "worker_lost"
        )
        for (pid, started, _), (_, next_started, _) in itertools.pairwise(runs):
            killed = [k.at for k in kills if k.pid == pid and k.at >= started]
            if not killed:
                continue
            kill_at = killed[0]
            # The rescues between the kill and the rerun, with the job's crash count at
            # each. More than one means a claim in between died before the task started.
            between = [
                (number, at)
                for number, at in enumerate(rescues, start=1)
                if kill_at <= at <= next_started
            ]
            recovery = (next_started - kill_at).total_seconds()
            found.total.append(recovery)
            if not between:
                continue
            found.max_crashes = max(found.max_crashes, between[-1][0])
            if [n for n, _ in between] == [1]:
                found.first.append(recovery)
            found.rescue_latency.append((between[0][1] - kill_at).total_seconds())
            due = (between[-1][1] - kill_at).total_seconds() + _crash_backoff(between[-1][0])
            found.queue_wait.append(max(0.0, recovery - due))
            bound = config.recovery_bound([n for n, _ in between])
            if recovery > bound:
                violations.append(
                    f"job {job_id}: rerun {recovery:.2f}s after the kill of pid {pid}"
                    f" (rescued {len(between)} time(s) in between, crash"
                    f" {between[-1][0]}); the bound is {bound:.2f}s"
                )
    return found


def _round(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 2)


def _config_dict(config: ChaosConfig) -> dict[str, Any]:
    data = asdict(config)
    data["log_dir"] = str(config.log_dir) if config.log_dir else None
    return data


# ----------------------------------------------------------------- the faults


def _no_fault(run: _Run) -> None:
    time.sleep(run.config.duration)


def _sigkill(run: _Run) -> None:
    deadline = time.monotonic() + run.config.duration
    with _connect(run.dsn) as connection:
        while True:
            next_kill = time.monotonic() + run.config.kill_every
            if next_kill > deadline:
                break
            time.sleep(max(0.0, next_kill - time.monotonic()))
            record = run.supervisor.kill(connection)
            if record is not None:
                run.monitor.forget_pid(record.pid)
        time.sleep(max(0.0, deadline - time.monotonic()))


def _backend_kill(run: _Run) -> None:
    killer = BackendKiller(run.dsn, run.config.storm_every)
    killer.start()
    time.sleep(run.config.duration)
    killer.stop()
    run.extra["backend_kill_rounds"] = killer.rounds
    run.extra["backends_terminated"] = killer.terminated


def run_no_faults(dsn: str, config: ChaosConfig) -> ChaosResult:
    """T01: steady load, no faults: zero re-executions, nothing lost."""
    return _run_load(
        "no-faults",
        dsn,
        config,
        _no_fault,
        forbidden_error_kinds=("error", "worker_lost", "crash", "released"),
    )


def run_sigkill(dsn: str, config: ChaosConfig) -> ChaosResult:
    """T02: SIGKILL a random worker every ``kill_every`` s; the supervisor restarts it."""
    return _run_load(
        "sigkill",
        dsn,
        config,
        _sigkill,
        forbidden_error_kinds=("error", "crash"),
    )


def run_backend_kill(dsn: str, config: ChaosConfig) -> ChaosResult:
    """T05: terminate every pgqueue backend each ``storm_every`` s; nothing may notice."""
    return _run_load(
        "backend-kill",
        dsn,
        config,
        _backend_kill,
        forbidden_error_kinds=("error", "worker_lost", "crash", "released"),
    )


def run_pg_restart(dsn: str, config: ChaosConfig, cluster: LocalCluster) -> ChaosResult:
    """T06: restart the PostgreSQL server ``restarts`` times (immediate and fast) under load.

    ``dsn`` must point into ``cluster``, a server this run owns. Each restart
    measures how long after the server accepted connections again every live
    worker had written a heartbeat (``reconnect_max_s``). Leases may expire
    while the server is down, so a rescue (``worker_lost``) may explain a rerun;
    a job failing with an error (infrastructure leaking into the task) may not.
    """

    with _connect(dsn) as connection:
        require_durable_commits(connection)

    def restarts(run: _Run) -> None:
        modes: tuple[StopMode, ...] = ("immediate", "fast")
        downtime: list[float] = []
        first_wait = min(run.config.restart_every, run.config.duration)
        time.sleep(first_wait)
        for number in range(run.config.restarts):
            mode = modes[number % len(modes)]
            down = time.monotonic()
            cluster.restart(mode)
            with _connect_retrying(run.dsn) as connection:
                downtime.append(time.monotonic() - down)
                up = db_now(connection)
                live = _live_worker_ids(connection, run.supervisor.pids())
                reconnect = _wait_heartbeats(connection, live, up)
            if math.isnan(reconnect):
                run.violations.append(
                    f"restart {number + 1} ({mode}): a worker wrote no heartbeat within 60s"
                    " of the server accepting connections again"
                )
            else:
                run.reconnects.append(reconnect)
            if number + 1 < run.config.restarts:
                time.sleep(run.config.restart_every)
        time.sleep(min(run.config.restart_every, 5.0))
        run.extra["pg_restarts"] = run.config.restarts
        run.extra["pg_restart_modes"] = [modes[n % 2] for n in range(run.config.restarts)]
        run.extra["max_server_downtime_s"] = round(max(downtime, default=0.0), 2)

    return _run_load(
        "pg-restart",
        dsn,
        config,
        restarts,
        rerun_kinds=("worker_lost",),
        forbidden_error_kinds=("error", "crash"),
    )


def require_durable_commits(connection: psycopg.Connection[Any]) -> None:
    """Make every later session of this database wait for its commit's WAL write.

    Test clusters run with ``synchronous_commit=off`` for speed; an immediate
    shutdown then loses the last commits, acknowledged or not (even a migration
    run a moment before). What is tested is pgqueue on a durable server, so
    commits must reach the WAL before they return; ``fsync`` may stay off,
    because the operating system survives a server crash. The CHECKPOINT makes
    this setting, and everything committed so far, survive the first restart.
    """
    connection.execute(
        sql.SQL("ALTER DATABASE {} SET synchronous_commit = on").format(
            sql.Identifier(connection.info.dbname)
        )
    )
    connection.execute("CHECKPOINT")


def _live_worker_ids(connection: psycopg.Connection[Any], pids: list[int]) -> list[str]:
    rows = connection.execute("SELECT id, pid FROM pgqueue.workers").fetchall()
    alive = set(pids)
    return [worker_id for worker_id, pid in rows if pid in alive]


def _wait_heartbeats(
    connection: psycopg.Connection[Any], worker_ids: list[str], since: datetime
) -> float:
    """Seconds from ``since`` until every worker in ``worker_ids`` wrote a heartbeat."""
    deadline = time.monotonic() + 60.0
    while True:
        rows = connection.execute(
            "SELECT id, heartbeat_at FROM pgqueue.workers WHERE id = ANY(%s)", (worker_ids,)
        ).fetchall()
        beats = {worker_id: at for worker_id, at in rows}
        if all(beats.get(w) is not None and beats[w] > since for w in worker_ids):
            latest = max((beats[w] for w in worker_ids), default=since)
            return (latest - since).total_seconds()
        if time.monotonic() >= deadline:
            return float("nan")
        time.sleep(0.05)


SCENARIOS = ("no-faults", "sigkill", "backend-kill", "pg-restart")


def run_scenario(
    name: str, dsn: str, config: ChaosConfig, cluster: LocalCluster | None = None
) -> ChaosResult:
    """Run scenario ``name`` (one of ``SCENARIOS``) against ``dsn``."""
    if name == "no-faults":
        return run_no_faults(dsn, config)
    if name == "sigkill":
        return run_sigkill(dsn, config)
    if name == "backend-kill":
        return run_backend_kill(dsn, config)
    if name == "pg-restart":
        if cluster is None:
            raise ValueError("the pg-restart scenario needs a cluster it owns (cluster=...)")
        return run_pg_restart(dsn, config, cluster)
    raise ValueError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
