"""``pgqueue demo``: a Celery user's first day, end to end, in a few seconds.

Three queues (high, default, low) with a few jobs each, two workers sharing
them, a task that fails twice and then succeeds, one that always fails and ends
in the dead-letter state, and a result sent back to the caller. Then the SQL
to see it all.

The demo keeps to a schema of its own, ``pgqueue_demo``, on the embedded database
as on one you configured: it empties that schema's jobs table when it starts, so
it must never be the one your jobs are in, and workers of the ``pgqueue`` schema
never claim its jobs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from pgqueue import migrate
from pgqueue.app import App
from pgqueue.dsn import resolve_dsn
from pgqueue.errors import JobFailedError
from pgqueue.worker import Worker, WorkerConfig, parse_queues
from pgqueue.worker.execution import JobContext

__all__ = ["DEMO_SCHEMA", "run_demo"]

DEMO_SCHEMA = "pgqueue_demo"


def build_demo_app(dsn: str | None, schema: str) -> App:
    """The demo's tasks, registered on a fresh App."""
    app = App(dsn, schema=schema)

    @app.task(queue="high", priority=10)
    def send_welcome_email(user_id: int) -> dict[str, Any]:
        return {"user_id": user_id, "sent": True}

    @app.task(queue="default")
    def resize_image(image_id: int, width: int = 640) -> str:
        return f"image-{image_id}@{width}px"

    @app.task(queue="low")
    def build_report(day: str) -> dict[str, Any]:
        return {"day": day, "rows": 1234}

    @app.task(
        queue="default", max_attempts=5, retry_backoff=0.2, retry_jitter=False, pass_context=True
    )
    def charge_card(context: JobContext, order_id: int) -> str:
        # Fails on its first two attempts, like a payment API having a bad minute.
        if context.attempt < 3:
            raise ConnectionError(f"payment gateway timed out (attempt {context.attempt})")
        return f"order {order_id} charged on attempt {context.attempt}"

    @app.task(queue="low", max_attempts=3, retry_backoff=0.1, retry_jitter=False)
    def sync_legacy_crm(account: str) -> None:
        raise ValueError(f"CRM rejected account {account!r}: unknown field 'fax'")

    @app.task(queue="high")
    def add(x: int, y: int) -> int:
        return x + y

    return app


def run_demo(dsn: str | None, *, keep: bool = False, echo: Callable[[str], None] = print) -> None:
    """Run the demo, printing what happens; raises on any unexpected outcome."""
    started = time.monotonic()
    configured = resolve_dsn(dsn)
    schema = DEMO_SCHEMA
    app = build_demo_app(configured, schema)
    if app.is_embedded and app.embedded_description:
        echo(app.embedded_description)
    else:
        echo(f"using your database; the demo keeps to schema {schema}")
    result = migrate.upgrade(app.dsn, schema)
    echo(f"schema {schema} at revision {result.after}")
    with app.connect() as connection:
        connection.execute(f'TRUNCATE "{schema}".jobs RESTART IDENTITY')

    tasks = app.tasks
    echo("\nenqueueing: 3 emails on 'high', 3 image resizes on 'default', 2 reports on 'low',")
    echo("a card charge that fails twice before it succeeds, and a CRM sync that always fails")
    for user_id in (1, 2, 3):
        tasks["send_welcome_email"].enqueue(user_id)
    for image_id in (10, 11, 12):
        tasks["resize_image"].enqueue(image_id, width=320)
    for day in ("2026-11-23", "2026-11-24"):
        tasks["build_report"].enqueue(day)
    charge = tasks["charge_card"].enqueue(order_id=1001)
    crm = tasks["sync_legacy_crm"].enqueue("acme-corp")
    total = tasks["add"].enqueue(2, 3)

    echo("starting 2 workers on queues high,default,low (4 threads each)\n")
    config = WorkerConfig(
        queues=parse_queues("high,default,low"),
        concurrency=4,
        poll_interval=0.2,
        rescue_interval=60.0,
    )
    workers = [Worker(app, config) for _ in range(2)]
    threads = [
        threading.Thread(target=w.run, name=f"demo-worker-{i}", daemon=True)
        for i, w in enumerate(workers, 1)
    ]
    for thread in threads:
        thread.start()
    try:
        echo(f"add(2, 3) -> job {total.id}; job.wait() returned {total.wait(timeout=30)}")
        echo(f"charge_card -> {charge.wait(timeout=30)}")
        try:
            crm.wait(timeout=30)
        except JobFailedError as error:
            echo(f"sync_legacy_crm -> dead-lettered: {error}")
        _wait_all_finished(app, timeout=30)
    finally:
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(timeout=30)
        app.close()

    with app.connect() as connection:
        rows = connection.execute(
            f'SELECT queue, state, count(*), max(attempt) FROM "{schema}".jobs'
            " GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        echo("\nqueue     state      jobs  max attempt")
        for queue, state, count, attempts in rows:
            echo(f"{queue:<9} {state:<10} {count:>4}  {attempts:>11}")
        done_by = connection.execute(
            f'SELECT count(DISTINCT worker_id) FROM "{schema}".jobs'
        ).fetchone()
        workers_used = done_by[0] if done_by else 0
        echo(
            f"\n{workers_used} worker{'s' if workers_used != 1 else ''} shared the work."
            f" Finished in {time.monotonic() - started:.1f}s."
        )
        if not keep:
            connection.execute(f'TRUNCATE "{schema}".jobs RESTART IDENTITY')
    where = "" if configured else ' "$(pgqueue db url)"'
    echo("\nSee it yourself with SQL (run the demo with --keep first):")
    echo(
        f'  psql{where} -c "SELECT id, queue, task, state, attempt, last_error'
        f' FROM {schema}.jobs ORDER BY id"'
    )
    echo(
        f'  psql{where} -c "SELECT id, task, last_error FROM {schema}.jobs'
        " WHERE state = 'dead'\"      # the dead-letter queue"
    )
    echo(f'  psql{where} -c "SELECT queue, state, count(*) FROM {schema}.jobs GROUP BY 1, 2"')
    echo(f"With --keep, the CLI sees them too: pgqueue --schema {schema} jobs list --state dead")
    echo(f"and re-runs a dead job with: pgqueue --schema {schema} retry <id>")


def _wait_all_finished(app: App, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with app.connect() as connection:
        while time.monotonic() < deadline:
            row = connection.execute(
                f'SELECT count(*) FROM "{app.schema}".jobs'
                " WHERE state NOT IN ('succeeded', 'dead', 'cancelled')"
            ).fetchone()
            if row is not None and row[0] == 0:
                return
            time.sleep(0.05)
    raise TimeoutError(f"demo jobs still unfinished after {timeout}s")
