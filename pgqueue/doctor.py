"""``pgqueue doctor``: checks a queue's database for the problems that bite at 3 a.m.

Each check returns a ``Finding``: ok or not, what was seen, and the fix. The
CLI prints them and exits 1 if any is not ok.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg.rows import TupleRow

from pgqueue import queries
from pgqueue.app import App
from pgqueue.durations import format_duration
from pgqueue.migrate import HEAD_REVISION, current_revision

__all__ = ["Finding", "run_checks"]

DEAD_TUPLES_WARN = 100_000
CONNECTION_HEADROOM_WARN = 0.8
EXPIRED_LEASE_GRACE_SECONDS = 120.0


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str
    fix: str = ""


Check = Callable[[App, psycopg.Connection[TupleRow]], Finding]


def check_schema_revision(app: App, connection: psycopg.Connection[TupleRow]) -> Finding:
    current = current_revision(connection, app.schema)
    if current == HEAD_REVISION:
        return Finding("schema", True, f"schema {app.schema} at revision {current}")
    return Finding(
        "schema",
        False,
        f"schema {app.schema} is at revision {current or '<none>'}, this pgqueue needs"
        f" {HEAD_REVISION}",
        "run 'pgqueue migrate'",
    )


def check_notify_round_trip(app: App, connection: psycopg.Connection[TupleRow]) -> Finding:
    channel = f"{app.notify_channel}_doctor"
    payload = uuid.uuid4().hex
    with app.connect() as listener:
        listener.execute(f'LISTEN "{channel}"')
        started = time.monotonic()
        connection.execute("SELECT pg_notify(%s, %s)", (channel, payload))
        for notify in listener.notifies(timeout=2.0):
            if notify.payload == payload:
                elapsed = (time.monotonic() - started) * 1000
                return Finding("notify", True, f"LISTEN/NOTIFY round trip in {elapsed:.1f} ms")
    return Finding(
        "notify",
        False,
        "a NOTIFY sent to this database did not arrive within 2 s",
        "connect workers directly or through a session-mode pooler (PgBouncer transaction"
        " mode drops LISTEN); workers still poll, so jobs run, only later",
    )


def check_table_health(app: App, connection: psycopg.Connection[TupleRow]) -> Finding:
    row = connection.execute(queries.DOCTOR_TABLE_HEALTH, {"schema": app.schema}).fetchone()
    if row is None:
        return Finding(
            "vacuum", False, f"no statistics for {app.schema}.jobs", "run 'pgqueue migrate'"
        )
    live, dead, last_autovacuum, autovacuum, reloptions, table_autovacuum = row
    # Both switches must be on; name every one that is off, so that fixing the
    # first does not just reveal the second on the next run.
    off: list[str] = []
    fixes: list[str] = []
    if autovacuum != "on":
        off.append("for the server")
        fixes.append("set autovacuum = on")
    if table_autovacuum is False:
        setting = next(
            (o for o in reloptions or [] if o.startswith("autovacuum_enabled=")),
            "autovacuum_enabled=false",
        )
        off.append(f"for the table {app.schema}.jobs ({setting})")
        fixes.append(f"run ALTER TABLE {app.schema}.jobs RESET (autovacuum_enabled)")
    if off:
        return Finding(
            "vacuum",
            False,
            f"autovacuum is off {' and '.join(off)}",
            f"{', and '.join(fixes)}: a queue table bloats within hours without autovacuum",
        )
    if dead > DEAD_TUPLES_WARN and dead > live:
        return Finding(
            "vacuum",
            False,
            f"{app.schema}.jobs has {dead:,} dead row versions and {live:,} live ones"
            f" (last autovacuum: {last_autovacuum or 'never'})",
            f"look for long transactions (below) holding vacuum back; run VACUUM {app.schema}.jobs",
        )
    tuned = ", ".join(reloptions or []) or "server defaults"
    return Finding("vacuum", True, f"{live:,} live / {dead:,} dead rows; autovacuum: {tuned}")


def make_long_transaction_check(older_than_seconds: float) -> Check:
    def check_long_transactions(app: App, connection: psycopg.Connection[TupleRow]) -> Finding:
        rows = connection.execute(
            queries.DOCTOR_OLD_TRANSACTIONS, {"older_than_seconds": older_than_seconds}
        ).fetchall()
        if not rows:
            return Finding(
                "transactions",
                True,
                f"no transaction older than {format_duration(older_than_seconds)} holds back"
                " vacuum",
            )
        holders = "; ".join(
            f"pid {pid} ({application or 'no application_name'}, {state},"
            f" open {format_duration(age)})"
            for pid, application, state, age, _ in rows
        )
        return Finding(
            "transactions",
            False,
            f"{len(rows)} transaction(s) hold back vacuum of the jobs table: {holders}",
            "end them (commit, or SELECT pg_terminate_backend(pid)); set"
            " idle_in_transaction_session_timeout",
        )

    return check_long_transactions


def check_expired_leases(app: App, connection: psycopg.Connection[TupleRow]) -> Finding:
    row = connection.execute(
        queries.render(queries.DOCTOR_EXPIRED_LEASES, app.schema),
        {"grace_seconds": EXPIRED_LEASE_GRACE_SECONDS},
    ).fetchone()
    count, oldest = row or (0, None)
    if not count:
        return Finding("leases", True, "no running job is past its lease")
    return Finding(
        "leases",
        False,
        f"{count} running job(s) past their lease by up to {format_duration(oldest)}",
        "start a worker ('pgqueue work'): every worker runs the rescuer that requeues them",
    )


def check_connections(app: App, connection: psycopg.Connection[TupleRow]) -> Finding:
    row = connection.execute(queries.DOCTOR_CONNECTIONS).fetchone()
    assert row is not None
    used, limit, reserved = row
    available = limit - reserved
    detail = f"{used} of {available} connections in use (max_connections {limit})"
    if used >= CONNECTION_HEADROOM_WARN * available:
        return Finding(
            "connections",
            False,
            detail,
            "each worker uses 5 connections plus its tasks' own; add a pooler for web"
            " processes or raise max_connections",
        )
    return Finding("connections", True, detail)


def run_checks(app: App, *, transaction_age_seconds: float = 300.0) -> list[Finding]:
    """Run every check on ``app``'s database and return the findings in order."""
    checks: list[Check] = [
        check_schema_revision,
        check_notify_round_trip,
        check_table_health,
        make_long_transaction_check(transaction_age_seconds),
        check_expired_leases,
        check_connections,
    ]
    findings: list[Finding] = []
    with app.connect() as connection:
        for check in checks:
            finding = check(app, connection)
            findings.append(finding)
            if finding.check == "schema" and not finding.ok:
                break  # the rest read pgqueue's tables
    return findings
