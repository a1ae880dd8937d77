"""The schema as SQLAlchemy Core tables: the one description of pgqueue's DDL.

Alembic revisions in ``migrations/`` create exactly this; a test compares the
migrated database against these tables so the two never drift. Runtime SQL does
not use these objects (it lives in ``queries.py``); they are for migrations,
drift checks and users who want to query the tables with SQLAlchemy.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TIMESTAMP, UUID

from pgqueue.names import (
    CLAIMABLE_STATES,
    DEFAULT_SCHEMA,
    MAX_ATTEMPTS_RANGE,
    PRIORITY_RANGE,
    QUEUE_NAME_PATTERN,
    SCHEMA_NAME_PATTERN,
    STATES,
    events_channel,
    notify_channel,
    validate_schema_name,
)

__all__ = [
    "DEFAULT_SCHEMA",
    "MAX_ATTEMPTS_RANGE",
    "PRIORITY_RANGE",
    "QUEUE_NAME_PATTERN",
    "SCHEMA_NAME_PATTERN",
    "build_metadata",
    "events_channel",
    "notify_channel",
    "validate_schema_name",
]


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _timestamptz(name: str, *, nullable: bool = True, now_default: bool = False) -> Column[object]:
    return Column(
        name,
        TIMESTAMP(timezone=True),
        nullable=nullable,
        server_default=text("now()") if now_default else None,
    )


def build_metadata(schema: str = DEFAULT_SCHEMA) -> MetaData:
    """Tables of pgqueue in ``schema``: ``jobs``, ``queues`` and ``workers``."""
    validate_schema_name(schema)
    metadata = MetaData(schema=schema)
    jobs = Table(
        "jobs",
        metadata,
        Column("id", BigInteger, Identity(always=False), primary_key=True),
        Column("queue", Text, nullable=False, server_default=text("'default'")),
        Column("task", Text, nullable=False),
        Column("args", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("state", Text, nullable=False, server_default=text("'queued'")),
        Column("priority", SmallInteger, nullable=False, server_default=text("0")),
        _timestamptz("run_at", nullable=False, now_default=True),
        Column("attempt", Integer, nullable=False, server_default=text("0")),
        Column("max_attempts", Integer, nullable=False, server_default=text("5")),
        Column("crash_count", Integer, nullable=False, server_default=text("0")),
        Column("lease_token", UUID(as_uuid=True), nullable=True),
        Column("worker_id", Text, nullable=True),
        _timestamptz("heartbeat_at"),
        _timestamptz("lease_expires_at"),
        _timestamptz("cancel_requested_at"),
        Column("result", JSONB, nullable=True),
        Column("last_error", Text, nullable=True),
        Column("errors", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
        _timestamptz("created_at", nullable=False, now_default=True),
        _timestamptz("started_at"),
        _timestamptz("finished_at"),
        _timestamptz("expires_at"),
        CheckConstraint(_in("state", STATES), name="jobs_state_check"),
        CheckConstraint(f"queue ~ '{QUEUE_NAME_PATTERN}'", name="jobs_queue_check"),
        CheckConstraint("char_length(task) BETWEEN 1 AND 255", name="jobs_task_check"),
        CheckConstraint(
            f"priority BETWEEN {PRIORITY_RANGE[0]} AND {PRIORITY_RANGE[1]}",
            name="jobs_priority_check",
        ),
        CheckConstraint(
            f"max_attempts BETWEEN {MAX_ATTEMPTS_RANGE[0]} AND {MAX_ATTEMPTS_RANGE[1]}"
            " AND attempt >= 0 AND crash_count >= 0",
            name="jobs_attempts_check",
        ),
        CheckConstraint(
            "state <> 'running' OR lease_token IS NOT NULL", name="jobs_running_lease_check"
        ),
    )
    # Exactly the rows a worker may claim, in claim order: finished rows never
    # enter this index, so a million of them do not slow the claim.
    Index(
        "jobs_claimable_idx",
        jobs.c.queue,
        jobs.c.priority.desc(),
        jobs.c.run_at,
        jobs.c.id,
        postgresql_where=text(_in("state", CLAIMABLE_STATES)),
    )
    # Running rows for the rescuer. The lease columns are deliberately not
    # indexed so that heartbeats stay HOT updates.
    Index("jobs_running_idx", jobs.c.id, postgresql_where=text("state = 'running'"))
    # Finished rows by age, for retention.
    Index(
        "jobs_finished_idx",
        jobs.c.finished_at,
        postgresql_where=text(_in("state", ("succeeded", "dead", "cancelled"))),
    )
    Table(
        "queues",
        metadata,
        Column("name", Text, primary_key=True),
        _timestamptz("paused_at"),
        _timestamptz("created_at", nullable=False, now_default=True),
        CheckConstraint(f"name ~ '{QUEUE_NAME_PATTERN}'", name="queues_name_check"),
    )
    Table(
        "workers",
        metadata,
        Column("id", Text, primary_key=True),
        Column("hostname", Text, nullable=False),
        Column("pid", Integer, nullable=False),
        Column("queues", ARRAY(Text), nullable=False),
        Column("concurrency", Integer, nullable=False),
        _timestamptz("started_at", nullable=False, now_default=True),
        _timestamptz("heartbeat_at", nullable=False, now_default=True),
    )
    return metadata
