"""Operator commands: status, jobs, retry, cancel, purge, queues, doctor."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from datetime import datetime
from typing import Any

import click

from pgqueue import admin
from pgqueue.cli import EXIT_UNEXPECTED, Context, fail, handle_errors
from pgqueue.durations import format_duration, parse_duration
from pgqueue.errors import ConfigurationError, DatabaseUnavailableError, PgqueueError
from pgqueue.jobs import JobState
from pgqueue.payload import redact

__all__ = ["register"]


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, default=_json_default, indent=2))


def _duration(text: str | None) -> float:
    return 0.0 if text is None else parse_duration(text)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


# ------------------------------------------------------------------- status


def _status_text(app: Any) -> str:
    stats = admin.queue_stats(app)
    workers = admin.list_workers(app)
    queue_rows = [
        [
            s.queue,
            str(s.queued),
            str(s.scheduled),
            str(s.running),
            str(s.retrying),
            str(s.dead),
            format_duration(s.oldest_ready_seconds),
            f"{s.jobs_per_second_1m:.1f}",
            "paused" if s.paused else "",
        ]
        for s in stats
    ]
    text = (
        _table(
            [
                "QUEUE",
                "QUEUED",
                "SCHEDULED",
                "RUNNING",
                "RETRYING",
                "DEAD",
                "OLDEST READY",
                "JOBS/S 1M",
                "",
            ],
            queue_rows,
        )
        if stats
        else "no queues yet"
    )
    worker_rows = [
        [
            w.hostname,
            str(w.pid),
            ",".join(w.queues),
            str(w.concurrency),
            f"{format_duration(w.heartbeat_age_seconds)} ago",
        ]
        for w in workers
    ]
    text += "\n\n" + (
        _table(["HOST", "PID", "QUEUES", "CONCURRENCY", "HEARTBEAT"], worker_rows)
        if workers
        else "no workers running"
    )
    return text


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@click.option("--watch", is_flag=True, help="Refresh in place until Ctrl-C.")
@click.option(
    "--interval",
    type=float,
    default=2.0,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
@click.pass_obj
@handle_errors
def status_command(obj: Context, as_json: bool, watch: bool, interval: float) -> None:
    """Per queue: queued, scheduled, running, retrying, dead, oldest age, throughput;
    and the live workers."""
    app = obj.app()
    if as_json:
        _echo_json(
            {
                "queues": [asdict(s) for s in admin.queue_stats(app)],
                "workers": [asdict(w) for w in admin.list_workers(app)],
            }
        )
        return
    if not watch:
        click.echo(_status_text(app))
        return
    try:
        while True:
            text = _status_text(app)
            click.clear()
            click.echo(f"{datetime.now():%H:%M:%S}  (refreshing every {interval:g}s; Ctrl-C stops)")
            click.echo(text)
            time.sleep(interval)
    except KeyboardInterrupt:
        pass


# --------------------------------------------------------------------- jobs


@click.group("jobs")
def jobs_group() -> None:
    """List and inspect jobs."""


@jobs_group.command("list")
@click.option("--state", help="queued, running, succeeded, failed, dead or cancelled.")
@click.option("--queue", help="Only this queue.")
@click.option("--task", help="Only this task name.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def jobs_list(
    obj: Context, state: str | None, queue: str | None, task: str | None, limit: int, as_json: bool
) -> None:
    """Newest jobs first, filtered."""
    jobs = admin.list_jobs(obj.app(), state=state, queue=queue, task=task, limit=limit)
    if as_json:
        _echo_json([asdict(j) for j in jobs])
        return
    rows = [
        [
            str(j.id),
            j.queue,
            j.task,
            j.state,
            f"{j.attempt}/{j.max_attempts}",
            f"{j.created_at:%Y-%m-%d %H:%M:%S}",
            (j.last_error or "").splitlines()[0][:60] if j.last_error else "",
        ]
        for j in jobs
    ]
    click.echo(
        _table(["ID", "QUEUE", "TASK", "STATE", "ATTEMPT", "CREATED", "LAST ERROR"], rows)
        if rows
        else "no jobs match"
    )


@jobs_group.command("show")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handle_errors
def jobs_show(obj: Context, job_id: int, as_json: bool) -> None:
    """Everything about one job: args (secrets redacted), each attempt's error, result."""
    job = obj.app().get_job(job_id)
    data = {
        "id": job.id,
        "queue": job.queue,
        "task": job.task,
        "state": job.state.value,
        "priority": job.priority,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "args": redact(job.args),
        "result": job.result,
        "created_at": job.created_at,
        "run_at": job.run_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "worker_id": job.worker_id,
        "last_error": job.last_error,
        "errors": job.errors,
    }
    if as_json:
        _echo_json(data)
        return
    for key in ("id", "task", "queue", "state", "priority"):
        click.echo(f"{key:<12} {data[key]}")
    click.echo(f"{'attempt':<12} {job.attempt}/{job.max_attempts}")
    click.echo(f"{'args':<12} {json.dumps(data['args'])}")
    for key in ("created_at", "run_at", "started_at", "finished_at", "worker_id"):
        click.echo(f"{key:<12} {data[key] if data[key] is not None else '-'}")
    if job.result is not None:
        click.echo(f"{'result':<12} {json.dumps(job.result)}")
    for entry in job.errors:
        click.echo(
            f"\nattempt {entry.get('attempt')} at {entry.get('at')} [{entry.get('kind')}]"
            f" {entry.get('type') or ''}: {entry.get('message') or ''}"
        )
        if entry.get("traceback"):
            click.echo(str(entry["traceback"]).rstrip())


# ------------------------------------------------------- retry, cancel, purge


def _for_each_id(job_ids: tuple[int, ...], action: Any) -> None:
    """Run ``action`` on every id, report each, and exit 1 if any of them failed."""
    failed = False
    for job_id in job_ids:
        try:
            click.echo(f"job {job_id}: {action(job_id)}")
        except (ConfigurationError, DatabaseUnavailableError):
            raise
        except PgqueueError as error:
            click.echo(f"pgqueue: job {job_id}: {error}", err=True)
            failed = True
    if failed:
        raise click.exceptions.Exit(EXIT_UNEXPECTED)


def _no_ids_and_filters(job_ids: tuple[int, ...], **filters: Any) -> None:
    used = [f"--{k.replace('_', '-')}" for k, v in filters.items() if v is not None]
    if job_ids and used:
        raise ConfigurationError(f"pass job ids or filters ({', '.join(used)}), not both")
    if not job_ids and not used:
        raise ConfigurationError("pass job ids, or filters such as --state dead")


@click.command("retry")
@click.argument("job_ids", type=int, nargs=-1)
@click.option("--state", help="Redrive every job in this state: dead, cancelled or failed.")
@click.option("--queue", help="Only this queue.")
@click.option("--task", help="Only this task.")
@click.option("--older-than", help="Only jobs finished longer ago than this (30s, 15m, 2h, 7d).")
@click.pass_obj
@handle_errors
def retry_command(
    obj: Context,
    job_ids: tuple[int, ...],
    state: str | None,
    queue: str | None,
    task: str | None,
    older_than: str | None,
) -> None:
    """Queue jobs to run again now: by id, or by filter (the dead-letter redrive)."""
    _no_ids_and_filters(job_ids, state=state, queue=queue, task=task, older_than=older_than)
    app = obj.app()
    if job_ids:
        _for_each_id(job_ids, lambda job_id: f"queued again on {app.retry_job(job_id).queue}")
        return
    count = admin.retry_filtered(
        app, state=state or "dead", queue=queue, task=task, older_than_seconds=_duration(older_than)
    )
    click.echo(f"queued {count} job(s) again")


@click.command("cancel")
@click.argument("job_ids", type=int, nargs=-1)
@click.option("--queue", help="Cancel every waiting job of this queue.")
@click.option("--task", help="Cancel every waiting job of this task.")
@click.option("--older-than", help="Only jobs created longer ago than this (30s, 15m, 2h, 7d).")
@click.pass_obj
@handle_errors
def cancel_command(
    obj: Context,
    job_ids: tuple[int, ...],
    queue: str | None,
    task: str | None,
    older_than: str | None,
) -> None:
    """Cancel jobs: waiting ones at once, running ones by request (by id)."""
    _no_ids_and_filters(job_ids, queue=queue, task=task, older_than=older_than)
    app = obj.app()
    if job_ids:

        def cancel(job_id: int) -> str:
            before = app.get_job(job_id).state  # JobNotFoundError for a missing id
            state = app.cancel_job(job_id)
            if state is JobState.RUNNING:
                return "cancellation requested (it is running)"
            if state is JobState.CANCELLED and before is not JobState.CANCELLED:
                return "cancelled"
            return (
                f"already finished ({state.value}); nothing was changed"
                f" (to run it again: pgqueue retry {job_id})"
            )

        _for_each_id(job_ids, cancel)
        return
    count = admin.cancel_filtered(
        app, queue=queue, task=task, older_than_seconds=_duration(older_than)
    )
    click.echo(f"cancelled {count} waiting job(s)")


@click.command("purge")
@click.option(
    "--state",
    "states",
    multiple=True,
    required=True,
    help="succeeded, dead or cancelled (repeat for several). Never running.",
)
@click.option("--older-than", required=True, help="Age since finishing: 30s, 15m, 2h, 7d.")
@click.option("--queue", help="Only this queue.")
@click.option("--task", help="Only this task.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
@handle_errors
def purge_command(
    obj: Context,
    states: tuple[str, ...],
    older_than: str,
    queue: str | None,
    task: str | None,
    yes: bool,
) -> None:
    """Delete finished jobs older than a given age."""
    seconds = parse_duration(older_than)
    if "running" in states:
        raise ConfigurationError("purge never deletes running jobs; cancel them first")
    if not yes and sys.stdin.isatty():
        click.confirm(
            f"delete {'/'.join(states)} jobs finished more than {older_than} ago"
            f"{' in queue ' + queue if queue else ''}?",
            abort=True,
        )
    count = admin.purge(
        obj.app(), states=list(states), queue=queue, task=task, older_than_seconds=seconds
    )
    click.echo(f"deleted {count} job(s)")


# ------------------------------------------------------------------- queues


@click.group("queues")
def queues_group() -> None:
    """Pause, resume and list queues."""


@queues_group.command("pause")
@click.argument("queue")
@click.pass_obj
@handle_errors
def queues_pause(obj: Context, queue: str) -> None:
    """Stop all workers from claiming QUEUE (running jobs finish)."""
    admin.pause_queue(obj.app(), queue)
    click.echo(f"queue {queue} paused")


@queues_group.command("resume")
@click.argument("queue")
@click.pass_obj
@handle_errors
def queues_resume(obj: Context, queue: str) -> None:
    """Let workers claim QUEUE again."""
    if admin.resume_queue(obj.app(), queue):
        click.echo(f"queue {queue} resumed")
    else:
        click.echo(f"queue {queue} was not paused")


@queues_group.command("list")
@click.pass_obj
@handle_errors
def queues_list(obj: Context) -> None:
    """Every known queue and whether it is paused."""
    for stats in admin.queue_stats(obj.app()):
        click.echo(f"{stats.queue}{'  (paused)' if stats.paused else ''}")


# ------------------------------------------------------------------- doctor


@click.command("doctor")
@click.option(
    "--transaction-age",
    default="5m",
    show_default=True,
    help="Report transactions open longer than this (30s, 5m, 1h).",
)
@click.pass_obj
@handle_errors
def doctor_command(obj: Context, transaction_age: str) -> None:
    """Check the database for what breaks queues; exit 1 if something is wrong."""
    from pgqueue.doctor import run_checks

    findings = run_checks(obj.app(), transaction_age_seconds=parse_duration(transaction_age))
    for finding in findings:
        mark = "ok  " if finding.ok else "FAIL"
        click.echo(f"[{mark}] {finding.check}: {finding.detail}")
        if not finding.ok and finding.fix:
            click.echo(f"       fix: {finding.fix}")
    if not all(f.ok for f in findings):
        raise fail("doctor found problems (see above)", EXIT_UNEXPECTED)


def register(main: click.Group) -> None:
    for command in (
        status_command,
        jobs_group,
        retry_command,
        cancel_command,
        purge_command,
        queues_group,
        doctor_command,
    ):
        main.add_command(command)
