"""``pgqueue work`` and ``pgqueue demo``."""

from __future__ import annotations

import click

from pgqueue.cli import Context, handle_errors
from pgqueue.errors import ConfigurationError
from pgqueue.logsetup import LEVELS, configure_logging
from pgqueue.worker.config import (
    CONCURRENCY_DEFAULT,
    HEARTBEAT_SECONDS_DEFAULT,
    LEASE_SECONDS_DEFAULT,
    MAX_CRASH_RECOVERIES_DEFAULT,
    POLL_INTERVAL_DEFAULT,
    RESCUE_INTERVAL_DEFAULT,
    SHUTDOWN_TIMEOUT_DEFAULT,
    QueueSpec,
    WorkerConfig,
    parse_queues,
)

__all__ = ["demo_command", "work_command"]


@click.command("work")
@click.option(
    "-A",
    "--app",
    "app_path",
    envvar="PGQUEUE_APP",
    default=None,
    metavar="MODULE:APP",
    help="Import path of your pgqueue.App, e.g. myproject.tasks:app [env PGQUEUE_APP].",
)
@click.option(
    "--django",
    "django_settings",
    metavar="SETTINGS_MODULE",
    default=None,
    help="Run a Django project's tasks (pgqueue.contrib.django) with these settings;"
    " replaces -A.",
)
@click.option(
    "-Q",
    "--queues",
    envvar="PGQUEUE_QUEUES",
    default="default",
    show_default=True,
    help="Comma-separated queues in preference order; 'name=N' caps a queue at N"
    " concurrent jobs [env PGQUEUE_QUEUES].",
)
@click.option(
    "-c",
    "--concurrency",
    envvar="PGQUEUE_CONCURRENCY",
    type=click.IntRange(1, 1000),
    default=CONCURRENCY_DEFAULT,
    show_default=True,
    help="Jobs run at once [env PGQUEUE_CONCURRENCY].",
)
@click.option(
    "--pool",
    type=click.Choice(["thread", "process"]),
    default="thread",
    show_default=True,
    help="thread: sync tasks on threads, async tasks on one loop;"
    " process: a killable child process per job.",
)
@click.option("--burst", is_flag=True, help="Exit 0 once no job is ready and none is running.")
@click.option(
    "-l",
    "--loglevel",
    type=click.Choice(LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
)
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--shutdown-timeout",
    type=float,
    default=SHUTDOWN_TIMEOUT_DEFAULT,
    show_default=True,
    help="Seconds to let running jobs finish on SIGTERM.",
)
@click.option(
    "--poll-interval",
    type=float,
    default=POLL_INTERVAL_DEFAULT,
    show_default=True,
    help="Seconds between claims when no NOTIFY arrives.",
)
@click.option(
    "--lease",
    "lease_seconds",
    type=float,
    default=LEASE_SECONDS_DEFAULT,
    show_default=True,
    help="Seconds a claim stays valid without a heartbeat.",
)
@click.option(
    "--heartbeat",
    "heartbeat_seconds",
    type=float,
    default=HEARTBEAT_SECONDS_DEFAULT,
    show_default=True,
    help="Seconds between lease renewals.",
)
@click.option(
    "--rescue-interval",
    type=float,
    default=RESCUE_INTERVAL_DEFAULT,
    show_default=True,
    help="Seconds between rescues of jobs with expired leases.",
)
@click.option(
    "--max-crash-recoveries",
    type=click.IntRange(1, 100),
    default=MAX_CRASH_RECOVERIES_DEFAULT,
    show_default=True,
    help="Rescues before a job is declared dead.",
)
@click.option("--no-listen", is_flag=True, help="Do not LISTEN; poll only.")
@click.option("--retention", default="1d", show_default=True,
              help="Delete succeeded and cancelled jobs this long after they finish"
                   " (30s, 15m, 2h, 7d; 'forever' keeps them).")
@click.option("--dead-retention", default="30d", show_default=True,
              help="Delete dead jobs this long after they die ('forever' keeps them).")
@click.option("--synchronous-commit", is_flag=True,
              help="Wait for the WAL flush on completions and heartbeats too (claims always"
                   " wait). Off by default: a server crash can then only make a job run"
                   " again, never lose it.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              envvar="PGQUEUE_METRICS_PORT",
              help="Serve Prometheus metrics on this port [env PGQUEUE_METRICS_PORT].")
@click.pass_obj
@handle_errors
def work_command(
    obj: Context,
    app_path: str | None,
    django_settings: str | None,
    queues: str,
    concurrency: int,
    pool: str,
    burst: bool,
    loglevel: str,
    log_format: str,
    shutdown_timeout: float,
    poll_interval: float,
    lease_seconds: float,
    heartbeat_seconds: float,
    rescue_interval: float,
    max_crash_recoveries: int,
    no_listen: bool,
    retention: str,
    dead_retention: str,
    synchronous_commit: bool,
    metrics_port: int | None,
) -> None:
    """Run a worker: claim jobs from the queues and run them until stopped.

    SIGTERM or Ctrl-C stops claiming and lets running jobs finish (up to
    --shutdown-timeout), then gives unfinished ones back to the queue; a second
    signal gives them back at once.
    """
    from pgqueue.loader import load_app
    from pgqueue.worker import Worker

    configure_logging(loglevel, log_format)
    if django_settings:
        if app_path:
            raise ConfigurationError("pass -A/--app or --django, not both")
        from pgqueue.contrib.django.bootstrap import setup

        app_path = setup(django_settings)
        typed_queues = click.get_current_context().get_parameter_source("queues")
        if typed_queues is click.core.ParameterSource.DEFAULT:
            from pgqueue.contrib.django import get_app

            queues = ",".join(get_app().queues)
    elif not app_path:
        raise ConfigurationError(
            "no app: pass -A myproject.tasks:app (or set PGQUEUE_APP), or --django"
            " myproject.settings for a Django project"
        )
    config = WorkerConfig(
        queues=_queues_option(queues),
        concurrency=concurrency,
        pool=pool,
        burst=burst,
        shutdown_timeout=shutdown_timeout,
        poll_interval=poll_interval,
        lease_seconds=lease_seconds,
        heartbeat_seconds=heartbeat_seconds,
        rescue_interval=rescue_interval,
        max_crash_recoveries=max_crash_recoveries,
        listen=not no_listen,
        retention_seconds=_retention(retention),
        dead_retention_seconds=_retention(dead_retention),
        metrics_port=metrics_port,
        synchronous_commit=synchronous_commit,
        app_path=app_path,
    )
    app = load_app(app_path)
    # The App in your module chose its database and schema (possibly from the
    # environment); only --dsn/--schema typed on this command line override them.
    app.use_database(
        obj.dsn if obj.dsn_on_command_line else None,
        schema=obj.schema if obj.schema_on_command_line else None,
    )
    if app.is_embedded and app.embedded_description:
        click.echo(app.embedded_description, err=True)
    worker = Worker(app, config)
    code = worker.run()
    _exit_even_with_stuck_threads(code, worker.stuck_tasks)


def _queues_option(text: str) -> tuple[QueueSpec, ...]:
    """Parse -Q; when the value came from $PGQUEUE_QUEUES, the error says so."""
    try:
        return parse_queues(text)
    except ConfigurationError as error:
        source = click.get_current_context().get_parameter_source("queues")
        if source is click.core.ParameterSource.ENVIRONMENT:
            raise ConfigurationError(
                f"{error} (from PGQUEUE_QUEUES={text!r}: fix or unset it, or pass -Q)"
            ) from None
        raise


def _retention(text: str) -> float | None:
    from pgqueue.durations import parse_duration

    return None if text.strip().lower() == "forever" else parse_duration(text)


def _exit_even_with_stuck_threads(code: int, stuck_tasks: int) -> None:
    """Exit now, even if a task thread is still stuck in user code.

    Its job was already released (or failed by its timeout), so nothing is lost;
    waiting for the thread could keep a stopping worker alive indefinitely.
    """
    if not stuck_tasks:
        raise click.exceptions.Exit(code)
    import logging
    import os
    import sys

    logging.getLogger("pgqueue.worker").warning(
        "exiting with %d task thread(s) still running user code (their jobs were"
        " released or failed by their timeout)", stuck_tasks,
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@click.command("demo")
@click.option("--keep", is_flag=True, help="Leave the demo's jobs in the database afterwards.")
@click.pass_obj
@handle_errors
def demo_command(obj: Context, keep: bool) -> None:
    """Run a Celery user's first day end to end: queues, workers, retries, a dead letter,
    a result sent back, and the SQL to look at it all."""
    from pgqueue.demo import run_demo

    # Retries and dead letters show up as the workers' own warnings, inline.
    configure_logging("warning")
    run_demo(obj.dsn, keep=keep, echo=click.echo)
