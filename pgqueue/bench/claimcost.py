"""Does a table full of finished jobs slow the claim? Empty table vs 1,000,000 finished rows.

The full table lives in a schema of its own (``<bench schema>_1m``), built once
per session with ``INSERT ... SELECT generate_series`` and dropped afterwards,
so neither the benchmark's other phases nor a user's jobs ever see its rows.
"""

from __future__ import annotations

import statistics
import time

from pgqueue import queries
from pgqueue.bench.common import BenchContext, PhaseResult, count_in_state, jobs_table
from pgqueue.bench.dbenv import connect, prepare_schema, truncate
from pgqueue.bench.stats import percentile
from pgqueue.schema import validate_schema_name

__all__ = ["build_finished_table", "drop_finished_table", "run_claim_cost"]

WARM_UP_CLAIMS = 20


def finished_schema(ctx: BenchContext) -> str:
    return validate_schema_name(f"{ctx.schema}_1m")


def build_finished_table(ctx: BenchContext) -> float:
    """Create ``<schema>_1m`` holding ``finished_rows`` succeeded jobs; return seconds taken."""
    schema = finished_schema(ctx)
    start = time.perf_counter()
    prepare_schema(ctx.dsn, schema)
    truncate(ctx.admin, schema)
    ctx.admin.execute(
        f"""INSERT INTO {jobs_table(schema)}
                (queue, task, args, state, attempt, worker_id, created_at, started_at,
                 finished_at, result)
            SELECT 'default', 'bench.noop', '{{}}', 'succeeded', 1, 'bench',
                   now() - make_interval(secs => n::float8 / 1000),
                   now() - make_interval(secs => n::float8 / 1000),
                   now() - make_interval(secs => n::float8 / 1000), 'null'
            FROM generate_series(%s::int, 1, -1) AS n""",
        (ctx.config.finished_rows,),
    )
    # What autovacuum does in production soon after: statistics and a visibility map.
    ctx.admin.execute(f"VACUUM (ANALYZE) {jobs_table(schema)}")
    return time.perf_counter() - start


def drop_finished_table(ctx: BenchContext) -> None:
    ctx.admin.execute(f'DROP SCHEMA IF EXISTS "{finished_schema(ctx)}" CASCADE')


def _claim_times_ms(ctx: BenchContext, schema: str, claims: int) -> list[float]:
    """Queue ``claims`` jobs in ``schema`` and time claiming them one at a time."""
    table = jobs_table(schema)
    ctx.admin.execute(f"DELETE FROM {table} WHERE state <> 'succeeded'")
    # Both tables start each measurement vacuumed, so neither carries the other's dead rows.
    ctx.admin.execute(f"VACUUM (ANALYZE) {table}")
    ctx.admin.execute(
        f"INSERT INTO {table} (queue, task) SELECT 'default', 'bench.noop'"
        " FROM generate_series(1, %s)", (claims + WARM_UP_CLAIMS,),
    )
    claim = queries.render(queries.JOB_CLAIM, schema)
    params = {"queue": "default", "limit": 1, "worker_id": "bench-claim", "lease_seconds": 30.0}
    times: list[float] = []
    with connect(ctx.dsn) as connection, connection.cursor() as cursor:
        for index in range(claims + WARM_UP_CLAIMS):
            start = time.perf_counter()
            cursor.execute(claim, params)
            cursor.fetchall()
            if index >= WARM_UP_CLAIMS:
                times.append((time.perf_counter() - start) * 1000)
    return times


def run_claim_cost(ctx: BenchContext, run: int) -> PhaseResult:
    """Median single-job claim time on the empty benchmark table and on the full one."""
    claims = ctx.config.claims
    truncate(ctx.admin, ctx.schema)
    empty = _claim_times_ms(ctx, ctx.schema, claims)
    full_schema = finished_schema(ctx)
    full = _claim_times_ms(ctx, full_schema, claims)
    claimed = (count_in_state(ctx.admin, ctx.schema, "running")
               + count_in_state(ctx.admin, full_schema, "running"))
    empty_median, full_median = statistics.median(empty), statistics.median(full)
    metrics = {
        "empty_median_ms": empty_median,
        "empty_p95_ms": percentile(empty, 95),
        "full_median_ms": full_median,
        "full_p95_ms": percentile(full, 95),
        "full_vs_empty": full_median / empty_median if empty_median else 0.0,
    }
    return PhaseResult("claim_cost", run, 2 * (claims + WARM_UP_CLAIMS), claimed, "running",
                       metrics, {"finished_rows": ctx.config.finished_rows, "claims": claims})
