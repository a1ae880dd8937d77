"""``pgqueue chaos``: run a long-form reliability scenario and print its JSON summary."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from pgqueue.cli import Context, handle_errors

__all__ = ["chaos_command"]


def _seconds(text: str) -> float:
    from pgqueue.durations import parse_duration

    text = text.strip()
    return float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text)


@click.command("chaos")
@click.option(
    "--scenario",
    required=True,
    type=click.Choice(["no-faults", "sigkill", "backend-kill", "pg-restart"]),
    help="no-faults (T01), sigkill (T02), backend-kill (T05) or pg-restart (T06).",
)
@click.option(
    "--duration",
    default="60s",
    show_default=True,
    help="How long the load and the fault last (30s, 3m...).",
)
@click.option(
    "--workers", type=click.IntRange(1, 64), default=4, show_default=True, help="Worker processes."
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(1, 1000),
    default=8,
    show_default=True,
    help="Each worker's concurrency.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0.1),
    default=50.0,
    show_default=True,
    help="Offered load: enqueues per second, one per transaction.",
)
@click.option(
    "--job-ms",
    default="50-500",
    show_default=True,
    help="Each job sleeps a uniform random time in this range (milliseconds).",
)
@click.option(
    "--long-fraction",
    type=click.FloatRange(0, 1),
    default=0.01,
    show_default=True,
    help="Fraction of jobs that run --long-ms instead.",
)
@click.option("--long-ms", type=click.IntRange(0), default=5000, show_default=True)
@click.option(
    "--kill-every",
    default="2s",
    show_default=True,
    help="sigkill: SIGKILL a random worker this often.",
)
@click.option(
    "--storm-every",
    default="1s",
    show_default=True,
    help="backend-kill: terminate every pgqueue backend this often.",
)
@click.option(
    "--restarts",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    help="pg-restart: server restarts (alternately immediate and fast).",
)
@click.option(
    "--restart-every", default="8s", show_default=True, help="pg-restart: time between restarts."
)
@click.option("--lease", type=float, default=3.0, show_default=True, help="Worker --lease.")
@click.option("--heartbeat", type=float, default=0.5, show_default=True, help="Worker --heartbeat.")
@click.option(
    "--rescue-interval",
    type=float,
    default=0.5,
    show_default=True,
    help="Worker --rescue-interval.",
)
@click.option(
    "--poll-interval", type=float, default=0.5, show_default=True, help="Worker --poll-interval."
)
@click.option(
    "--max-crash-recoveries",
    type=click.IntRange(1, 100),
    default=10,
    show_default=True,
    help="Worker --max-crash-recoveries.",
)
@click.option(
    "--drain-timeout",
    default="180s",
    show_default=True,
    help="After the fault stops, how long every acknowledged job may take to finish.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Workload random seed.")
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the workers' logs here (default: a temporary directory).",
)
@click.option("--keep", is_flag=True, help="Leave the scratch database (or cluster) behind.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the summary to this file.",
)
@click.pass_obj
@handle_errors
def chaos_command(
    obj: Context,
    scenario: str,
    duration: str,
    workers: int,
    concurrency: int,
    rate: float,
    job_ms: str,
    long_fraction: float,
    long_ms: int,
    kill_every: str,
    storm_every: str,
    restarts: int,
    restart_every: str,
    lease: float,
    heartbeat: float,
    rescue_interval: float,
    poll_interval: float,
    max_crash_recoveries: int,
    drain_timeout: str,
    seed: int,
    log_dir: Path | None,
    keep: bool,
    json_path: Path | None,
) -> None:
    """Run a chaos scenario against real workers and print a JSON summary.

    The run never touches your data: with --dsn (or PGQUEUE_DATABASE_URL) it
    creates and drops a scratch database on that server (CREATEDB needed);
    otherwise, and always for pg-restart, it starts a private PostgreSQL
    cluster. Exit code 0 when every invariant held, 1 otherwise.
    """
    from pgqueue.chaos.database import scratch_database
    from pgqueue.chaos.scenarios import ChaosConfig, run_scenario
    from pgqueue.errors import ConfigurationError

    # The producer's pool reports every connection a fault broke; the summary counts them.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    low, _, high = job_ms.partition("-")
    try:
        job_range = (int(low), int(high or low))
    except ValueError:
        raise ConfigurationError(f"--job-ms takes LOW-HIGH milliseconds, got {job_ms!r}") from None
    config = ChaosConfig(
        duration=_seconds(duration),
        workers=workers,
        concurrency=concurrency,
        rate=rate,
        lease=lease,
        heartbeat=heartbeat,
        rescue_interval=rescue_interval,
        poll_interval=poll_interval,
        kill_every=_seconds(kill_every),
        storm_every=_seconds(storm_every),
        restarts=restarts,
        restart_every=_seconds(restart_every),
        job_ms=job_range,
        long_fraction=long_fraction,
        long_ms=long_ms,
        max_crash_recoveries=max_crash_recoveries,
        drain_timeout=_seconds(drain_timeout),
        seed=seed,
        log_dir=log_dir,
    )
    server = None if scenario == "pg-restart" else obj.dsn
    with scratch_database(server, own_server=scenario == "pg-restart", keep=keep) as database:
        click.echo(f"pgqueue chaos: {scenario} on {database.description}", err=True)
        result = run_scenario(scenario, database.dsn, config, database.cluster)
    text = json.dumps(result.summary, indent=2, default=str)
    click.echo(text)
    if json_path is not None:
        json_path.write_text(text + "\n")
    if not result.ok:
        click.echo(
            f"pgqueue chaos: {len(result.violations)} invariant violation(s); worker logs in"
            f" {result.log_dir}",
            err=True,
        )
        raise click.exceptions.Exit(1)
