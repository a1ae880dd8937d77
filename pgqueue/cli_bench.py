"""``pgqueue bench``: measure pgqueue on this machine and database, in a schema of its own."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pgqueue.cli import Context, handle_errors
from pgqueue.errors import ConfigurationError
from pgqueue.worker.config import CONCURRENCY_DEFAULT

__all__ = ["bench_command"]


def _parse_workers(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigurationError(
            f"--workers takes comma-separated process counts such as 1,2; got {text!r}"
        ) from None
    if not counts or min(counts) < 1:
        raise ConfigurationError(f"--workers needs counts >= 1, got {text!r}")
    return counts


@click.command("bench")
@click.option("--dsn", metavar="URL",
              help="PostgreSQL URL (overrides pgqueue --dsn / PGQUEUE_DATABASE_URL;"
                   " default: the embedded database).")
@click.option("--jobs", type=click.IntRange(1), default=20_000, show_default=True,
              help="Jobs per throughput phase.")
@click.option("--workers", default="1,2", show_default=True,
              help="Worker-process counts to drain with, comma-separated.")
@click.option("-c", "--concurrency", type=click.IntRange(1, 1000), default=CONCURRENCY_DEFAULT,
              show_default=True, help="Each worker's concurrency; also the raw floor's batch.")
@click.option("--runs", type=click.IntRange(1), default=3, show_default=True,
              help="Repetitions; every figure is the median with min-max.")
@click.option("--skip-1m", is_flag=True,
              help="Skip the claim cost with 1,000,000 finished rows (it takes a while).")
@click.option("--finished-rows", type=click.IntRange(1), default=1_000_000, show_default=True,
              help="Finished rows for the claim-cost phase.")
@click.option("--latency-samples", type=click.IntRange(1), default=200, show_default=True,
              help="Jobs per idle-pickup phase (one every 20 ms).")
@click.option("--load-rate", type=click.FloatRange(min=1), default=1000.0, show_default=True,
              help="Steady offered load, jobs/s, enqueued one per transaction.")
@click.option("--load-seconds", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="How long the steady load lasts.")
@click.option("--bench-schema", default="pgqueue_bench", show_default=True,
              help="The benchmark's own schema (created, then truncated between phases).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write every figure, run and setting to this JSON file.")
@click.pass_obj
@handle_errors
def bench_command(
    obj: Context, dsn: str | None, jobs: int, workers: str, concurrency: int, runs: int,
    skip_1m: bool, finished_rows: int, latency_samples: int, load_rate: float,
    load_seconds: float, bench_schema: str, json_path: Path | None,
) -> None:
    """Measure enqueue, drain and latency against raw-SQL floors taken in the same run.

    Runs real worker processes on the configured (or embedded) database. Only
    the benchmark's own schemas are touched: your jobs are never read or written.
    Progress goes to stderr, the table to stdout.
    """
    from pgqueue.bench.common import BenchConfig
    from pgqueue.bench.report import format_report
    from pgqueue.bench.runner import run_bench

    try:
        config = BenchConfig(
            jobs=jobs, workers=_parse_workers(workers), concurrency=concurrency, runs=runs,
            skip_1m=skip_1m, finished_rows=finished_rows, latency_samples=latency_samples,
            load_rate=load_rate, load_seconds=load_seconds, claims=min(1000, jobs),
            schema=bench_schema,
        )
    except ValueError as error:
        raise ConfigurationError(str(error)) from None
    report = run_bench(dsn or obj.dsn, config, lambda line: click.echo(line, err=True))
    click.echo(format_report(report))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report.as_json(), indent=2) + "\n")
        click.echo(f"wrote {json_path}", err=True)
    if not report.accounted:
        raise click.exceptions.Exit(1)
