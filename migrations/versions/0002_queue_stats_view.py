"""Add the queue_stats view: per-queue counts, oldest ready job, recent throughput.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import context, op

from pgqueue.migrate import keep_version_table

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _schema() -> str:
    return str(context.config.attributes.get("pgqueue_schema", "pgqueue"))


def upgrade() -> None:
    s = _schema()
    # A view, not a table: always exact, and cheap while retention keeps the
    # jobs table small. Queues that only exist in the queues table (paused,
    # empty) are listed too.
    op.execute(f"""
CREATE VIEW "{s}".queue_stats AS
WITH counts AS (
    SELECT queue,
        count(*) FILTER (WHERE state = 'queued' AND run_at <= now()) AS queued,
        count(*) FILTER (WHERE state = 'queued' AND run_at > now()) AS scheduled,
        count(*) FILTER (WHERE state = 'running') AS running,
        count(*) FILTER (WHERE state = 'failed') AS retrying,
        count(*) FILTER (WHERE state = 'dead') AS dead,
        count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
        count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
        min(run_at) FILTER (WHERE state IN ('queued', 'failed') AND run_at <= now())
            AS oldest_ready_at,
        count(*) FILTER (WHERE state IN ('succeeded', 'dead', 'cancelled')
                         AND finished_at > now() - interval '1 minute') AS finished_last_minute
    FROM "{s}".jobs
    GROUP BY queue
)
SELECT coalesce(c.queue, q.name) AS queue,
       coalesce(c.queued, 0) AS queued,
       coalesce(c.scheduled, 0) AS scheduled,
       coalesce(c.running, 0) AS running,
       coalesce(c.retrying, 0) AS retrying,
       coalesce(c.dead, 0) AS dead,
       coalesce(c.succeeded, 0) AS succeeded,
       coalesce(c.cancelled, 0) AS cancelled,
       extract(epoch FROM now() - c.oldest_ready_at)::float8 AS oldest_ready_seconds,
       coalesce(c.finished_last_minute, 0) / 60.0 AS jobs_per_second_1m,
       q.paused_at IS NOT NULL AS paused
FROM counts AS c
FULL JOIN "{s}".queues AS q ON q.name = c.queue""")
    keep_version_table("0002")


def downgrade() -> None:
    op.execute(f'DROP VIEW IF EXISTS "{_schema()}".queue_stats')
    keep_version_table('0001')
