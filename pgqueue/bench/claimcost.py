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
from pgqueue.bench.dbenv import checkpoint, connect, prepare_schema, truncate
from pgqueue.bench.stats import percentile
from pgqueue.schema import validate_schema_name

__all__ = ["build_finished_table", "drop_finished_table", "run_claim_cost"]

WARM_UP_CLAIMS = 20
CLAIM_BLOCK = 10


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
    checkpoint(ctx.admin)
    return time.perf_counter() - start


def drop_finished_table(ctx: BenchContext) -> None:
    ctx.admin.execute(f'DROP SCHEMA IF EXISTS "{finished_schema(ctx)}" CASCADE')


def _queue_claimable(ctx: BenchContext, schema: str, count: int) -> None:
    """Leave ``schema`` with only its finished rows plus ``count`` queued jobs, analyzed."""
    table = jobs_table(schema)
    ctx.admin.execute(f"DELETE FROM {table} WHERE state <> 'succeeded'")
    ctx.admin.execute(
        f"INSERT INTO {table} (queue, task) SELECT 'default', 'bench.noop'"
        " FROM generate_series(1, %s)", (count,),
    )
    # Both tables start vacuumed and analyzed with their queued rows in, as
    # autovacuum leaves them in production, so neither carries a stale plan.
    ctx.admin.execute(f"VACUUM (ANALYZE) {table}")


class _Claimer:
    """Claims one job at a time from one schema on a connection of its own."""

    def __init__(self, ctx: BenchContext, schema: str) -> None:
        self.sql = queries.render(queries.JOB_CLAIM, schema)
        self.connection = connect(ctx.dsn)
        self.params = {"queue": "default", "limit": 1, "worker_id": "bench-claim",
                       "lease_seconds": 30.0}
        self.times_ms: list[float] = []

    def claim(self, record: bool = True) -> None:
        start = time.perf_counter()
        with self.connection.cursor() as cursor:
            cursor.execute(self.sql, self.params)
            cursor.fetchall()
        if record:
            self.times_ms.append((time.perf_counter() - start) * 1000)


def _interleaved_claims(ctx: BenchContext, schemas: tuple[str, str], claims: int) -> list[_Claimer]:
    """Time ``claims`` claims per schema, alternating in blocks.

    Each claim commits, so its time is mostly a WAL flush; alternating blocks
    lets a checkpoint or a neighbour's burst of writes hit both tables alike
    instead of whichever happened to be measured at the time.
    """
    claimers = [_Claimer(ctx, schema) for schema in schemas]
    try:
        for claimer in claimers:
            for _ in range(WARM_UP_CLAIMS):
                claimer.claim(record=False)
        for block_start in range(0, claims, CLAIM_BLOCK):
            for claimer in claimers:
                for _ in range(min(CLAIM_BLOCK, claims - block_start)):
                    claimer.claim()
    finally:
        for claimer in claimers:
            claimer.connection.close()
    return claimers


def run_claim_cost(ctx: BenchContext, run: int) -> PhaseResult:
    """Median single-job claim time on the empty benchmark table and on the full one."""
    claims = ctx.config.claims
    full_schema = finished_schema(ctx)
    truncate(ctx.admin, ctx.schema)
    for schema in (ctx.schema, full_schema):
        _queue_claimable(ctx, schema, claims + WARM_UP_CLAIMS)
    empty_claimer, full_claimer = _interleaved_claims(ctx, (ctx.schema, full_schema), claims)
    empty, full = empty_claimer.times_ms, full_claimer.times_ms
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
