"""Every SQL statement pgqueue runs, named, in one place.

Rules:
- One statement per operation, named NOUN_VERB, in alphabetical order.
- Values are always bound parameters (``%(name)s``); the only thing formatted in
  is the schema name, validated against ``SCHEMA_NAME_PATTERN`` and quoted.
- Every state change is guarded in its WHERE clause: a finishing update matches
  only ``state = 'running'`` with the caller's lease token, so a worker that
  lost its lease changes nothing.
- Times come from the database clock (``now()``), never from a worker's clock.
- No literal percent signs: the same text runs on psycopg and through
  SQLAlchemy's ``exec_driver_sql``, which both use the pyformat style.
"""

from __future__ import annotations

import functools

from pgqueue.names import validate_schema_name

# What an insert returns: the rest of the new Job is what the producer sent,
# and parsing the stored args back would cost more than the insert's round trip.
INSERTED_COLUMNS = "id, run_at, created_at, expires_at"

# Columns that make a pgqueue.jobs.Job, in the order db.row_to_job reads them.
JOB_COLUMNS = (
    "id, queue, task, args, state, priority, attempt, max_attempts, run_at, created_at,"
    " started_at, finished_at, result, last_error, errors, worker_id, expires_at"
)


# Serialise migrators: a session-level lock held across Alembic's transaction.
ADVISORY_LOCK_WAIT = "SELECT pg_advisory_lock(hashtextextended(%(key)s, 0))"


# Let one worker at a time do a maintenance round; the others skip it.
ADVISORY_XACT_LOCK_TRY = "SELECT pg_try_advisory_xact_lock(hashtextextended(%(key)s, 0))"


# Doctor: connections in use against the server's limit.
DOCTOR_CONNECTIONS = """
SELECT (SELECT count(*) FROM pg_stat_activity)::int,
       current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int
"""


# Doctor: running jobs whose lease expired long ago (is any rescuer running?).
DOCTOR_EXPIRED_LEASES = """
SELECT count(*)::int, extract(epoch FROM now() - min(lease_expires_at))::float8
FROM {schema}.jobs
WHERE state = 'running' AND lease_expires_at < now() - make_interval(secs => %(grace_seconds)s)
"""


# Doctor: backends whose snapshot holds back vacuum (pins xmin) for too long.
DOCTOR_OLD_TRANSACTIONS = """
SELECT pid, coalesce(application_name, ''), state,
       extract(epoch FROM now() - xact_start)::float8 AS age_seconds, left(query, 80)
FROM pg_stat_activity
WHERE (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL) AND xact_start IS NOT NULL
  AND pid <> pg_backend_pid()
  AND now() - xact_start > make_interval(secs => %(older_than_seconds)s)
ORDER BY xact_start
"""


# Doctor: dead tuples and vacuum history of the jobs table.
# The last column is the table's own autovacuum_enabled storage parameter,
# parsed as a boolean by PostgreSQL (off, false, 0 ...), or NULL when unset.
DOCTOR_TABLE_HEALTH = """
SELECT s.n_live_tup, s.n_dead_tup, s.last_autovacuum, current_setting('autovacuum'),
       c.reloptions,
       (SELECT o.option_value::boolean FROM pg_options_to_table(c.reloptions) AS o
        WHERE o.option_name = 'autovacuum_enabled')
FROM pg_stat_user_tables AS s JOIN pg_class AS c ON c.oid = s.relid
WHERE s.schemaname = %(schema)s AND s.relname = 'jobs'
"""


# Ask running jobs to stop: the worker sees the flag through NOTIFY or its
# next heartbeat, and the task through job.is_cancelled().
JOB_CANCEL_REQUEST_RUNNING = """
WITH flagged AS (
    UPDATE {schema}.jobs
    SET cancel_requested_at = coalesce(cancel_requested_at, now())
    WHERE id = ANY(%(ids)s) AND state = 'running'
    RETURNING id
)
SELECT id, pg_notify(%(events_channel)s, 'cancel ' || id) FROM flagged
"""


# Cancel jobs that have not started; they finish at once.
JOB_CANCEL_WAITING = """
UPDATE {schema}.jobs
SET state = 'cancelled', finished_at = now()
WHERE id = ANY(%(ids)s) AND state IN ('queued', 'failed')
RETURNING id
"""


# Cancel waiting jobs matching the operator's filters, a batch at a time.
JOB_CANCEL_WAITING_FILTERED = """
UPDATE {schema}.jobs
SET state = 'cancelled', finished_at = now()
WHERE id IN (
    SELECT id FROM {schema}.jobs
    WHERE state IN ('queued', 'failed')
      AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
      AND (%(task)s::text IS NULL OR task = %(task)s::text)
      AND created_at < now() - make_interval(secs => %(older_than_seconds)s)
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id
"""


# Lock up to %(limit)s due jobs of one queue, best priority first, skipping rows
# other workers hold, and mark them running with a fresh lease, in one
# statement. The CTE is the optimisation fence that keeps the planner from
# re-running the LIMIT subquery; jobs_claimable_idx serves it in claim order.
JOB_CLAIM = """
WITH locked AS (
    SELECT id
    FROM {schema}.jobs
    WHERE state IN ('queued', 'failed') AND queue = %(queue)s AND run_at <= now()
      AND (expires_at IS NULL OR expires_at > now())
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.jobs AS j
SET state = 'running',
    attempt = j.attempt + 1,
    lease_token = gen_random_uuid(),
    worker_id = %(worker_id)s,
    started_at = now(),
    heartbeat_at = now(),
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
    cancel_requested_at = NULL
FROM locked
WHERE j.id = locked.id
RETURNING j.id, j.queue, j.task, j.args, j.priority, j.attempt, j.max_attempts,
          j.crash_count, j.lease_token, j.created_at, j.run_at
"""


# Delete finished jobs matching the operator's filters; never running ones.
JOB_DELETE_FILTERED = """
DELETE FROM {schema}.jobs
WHERE id IN (
    SELECT id FROM {schema}.jobs
    WHERE state = ANY(%(states)s::text[]) AND state <> 'running'
      AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
      AND (%(task)s::text IS NULL OR task = %(task)s::text)
      AND coalesce(finished_at, created_at)
          < now() - make_interval(secs => %(older_than_seconds)s)
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id
"""


# Pruning: delete finished rows older than the retention period, a batch at a
# time so the table is never locked for long.
JOB_DELETE_FINISHED_BEFORE = """
DELETE FROM {schema}.jobs
WHERE id IN (
    SELECT id FROM {schema}.jobs
    WHERE state = ANY(%(states)s)
      AND finished_at < now() - make_interval(secs => %(older_than_seconds)s)
    ORDER BY finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id
"""


# Cancel waiting jobs whose expiry passed before any worker started them.
JOB_EXPIRE = """
WITH expired AS (
    UPDATE {schema}.jobs
    SET state = 'cancelled', finished_at = now(),
        last_error = 'Expired: not started before ' || expires_at
    WHERE id IN (
        SELECT id FROM {schema}.jobs
        WHERE state IN ('queued', 'failed') AND expires_at <= now()
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id
)
SELECT id, pg_notify(%(events_channel)s, 'done ' || id) FROM expired
"""


# Record a failed attempt: 'failed' with the next run_at, or 'dead'/'cancelled'.
# Fenced. A crash of a child process counts as a crash recovery, not a failure.
JOB_FAIL = """
WITH finished AS (
    UPDATE {schema}.jobs
    SET state = %(state)s::text,
        crash_count = crash_count + %(crash_increment)s,
        run_at = CASE WHEN %(state)s::text = 'failed'
                      THEN now() + make_interval(secs => %(delay_seconds)s)
                      ELSE run_at END,
        finished_at = CASE WHEN %(state)s::text = 'failed' THEN NULL ELSE now() END,
        last_error = %(last_error)s::text,
        errors = errors || jsonb_build_array(jsonb_build_object(
            'attempt', attempt, 'at', now(), 'kind', %(kind)s::text,
            'type', %(error_type)s::text, 'message', %(message)s::text,
            'traceback', %(traceback)s::text, 'worker_id', worker_id)),
        lease_token = NULL,
        lease_expires_at = NULL
    WHERE id = %(id)s AND lease_token = %(lease_token)s AND state = 'running'
    RETURNING id, state
)
SELECT id, state,
       CASE WHEN state <> 'failed' THEN pg_notify(%(events_channel)s, 'done ' || id) END
FROM finished
"""


JOB_GET = "SELECT " + JOB_COLUMNS + " FROM {schema}.jobs WHERE id = %(id)s"


# Renew the leases of every job this worker runs, in one statement. Rows that
# come back are still ours; a job missing from the result was rescued or
# finished elsewhere. Only un-indexed columns change, so these are HOT updates.
JOB_HEARTBEAT = """
UPDATE {schema}.jobs AS j
SET heartbeat_at = now(), lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
FROM unnest(%(ids)s::bigint[], %(lease_tokens)s::uuid[]) AS held(id, lease_token)
WHERE j.id = held.id AND j.lease_token = held.lease_token AND j.state = 'running'
RETURNING j.id, j.cancel_requested_at IS NOT NULL
"""


JOB_INSERT = (
    """
INSERT INTO {schema}.jobs (queue, task, args, priority, run_at, max_attempts, expires_at)
VALUES (%(queue)s, %(task)s, %(args)s::jsonb, %(priority)s,
        coalesce(%(run_at)s::timestamptz, now() + make_interval(secs => %(delay_seconds)s)),
        %(max_attempts)s,
        coalesce(%(expires_at)s::timestamptz, now() + make_interval(secs => %(expires_in)s)))
RETURNING """
    + INSERTED_COLUMNS
)


# Many jobs in one round trip: one JSON array of rows. Cheaper than parallel
# arrays, whose elements psycopg would encode one by one in Python.
JOB_INSERT_MANY = (
    """
INSERT INTO {schema}.jobs (queue, task, args, priority, run_at, max_attempts, expires_at)
SELECT q, t, a, p, coalesce(r, now() + make_interval(secs => d)), m,
       coalesce(e, now() + make_interval(secs => ei))
FROM jsonb_to_recordset(%(batch)s::jsonb)
     AS batch(q text, t text, a jsonb, p smallint, r timestamptz, d float8, m int,
              e timestamptz, ei float8)
RETURNING """
    + INSERTED_COLUMNS
)


# Newest first, every filter optional; for `pgqueue jobs list`.
JOB_LIST_FILTERED = """
SELECT id, queue, task, state, priority, attempt, max_attempts, run_at, created_at,
       finished_at, last_error
FROM {schema}.jobs
WHERE (%(state)s::text IS NULL OR state = %(state)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
ORDER BY id DESC
LIMIT %(limit)s
"""


# Give unfinished jobs back to the queue on shutdown. The attempt is handed
# back too: a run cut short by a deploy is not a failure of the task.
JOB_RELEASE = """
WITH released AS (
    UPDATE {schema}.jobs AS j
    SET state = 'queued', attempt = greatest(j.attempt - 1, 0), run_at = now(),
        lease_token = NULL, lease_expires_at = NULL,
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.attempt, 'at', now(), 'kind', 'released',
            'message', 'released on worker shutdown', 'worker_id', j.worker_id))
    FROM unnest(%(ids)s::bigint[], %(lease_tokens)s::uuid[]) AS held(id, lease_token)
    WHERE j.id = held.id AND j.lease_token = held.lease_token AND j.state = 'running'
    RETURNING j.id, j.queue
)
SELECT id, pg_notify(%(notify_channel)s, queue) FROM released
"""


# Return jobs whose lease expired (their worker died or hung) to the queue with
# a short backoff, or to 'dead' after max_crash_recoveries. Paged and SKIP
# LOCKED so that every worker may run it; it never discards a job for having a
# task this worker does not know.
JOB_RESCUE_EXPIRED = """
WITH expired AS (
    SELECT id FROM {schema}.jobs
    WHERE state = 'running' AND lease_expires_at < now()
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), rescued AS (
    UPDATE {schema}.jobs AS j
    SET crash_count = j.crash_count + 1,
        state = CASE WHEN j.crash_count + 1 >= %(max_crash_recoveries)s
                     THEN 'dead' ELSE 'failed' END,
        run_at = now() + make_interval(secs => least(power(2, j.crash_count), 60)),
        finished_at = CASE WHEN j.crash_count + 1 >= %(max_crash_recoveries)s THEN now() END,
        last_error = 'worker lost: the lease expired while this job was running ('
            || (j.crash_count + 1) || '/' || %(max_crash_recoveries)s
            || ' crash recoveries; worker ' || coalesce(j.worker_id, '?')
            || ' stopped renewing it)',
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.attempt, 'at', now(), 'kind', 'worker_lost', 'type', 'WorkerLost',
            'message', 'lease expired at ' || j.lease_expires_at, 'worker_id', j.worker_id)),
        lease_token = NULL,
        lease_expires_at = NULL
    FROM expired
    WHERE j.id = expired.id AND j.state = 'running'
    RETURNING j.id, j.state, j.queue
)
SELECT id, state,
       CASE WHEN state = 'dead' THEN pg_notify(%(events_channel)s, 'done ' || id)
            ELSE pg_notify(%(notify_channel)s, queue) END
FROM rescued
"""


# What running a job again resets, for retry by id and by filter alike. A job
# out of attempts gets one more; its crash count starts again.
_RETRY_SET = """
    SET state = 'queued', run_at = now(), finished_at = NULL, crash_count = 0,
        cancel_requested_at = NULL, result = NULL,
        max_attempts = least(100, greatest(max_attempts, attempt + 1))
"""

# Re-run finished or waiting jobs now.
JOB_RETRY = (
    """
WITH retried AS (
    UPDATE {schema}.jobs"""
    + _RETRY_SET
    + """    WHERE id = ANY(%(ids)s) AND state IN ('dead', 'cancelled', 'failed', 'succeeded')
    RETURNING id, queue
)
SELECT id, pg_notify(%(notify_channel)s, queue) FROM retried
"""
)


# Redrive jobs matching the operator's filters (the dead-letter queue, usually).
JOB_RETRY_FILTERED = (
    """
WITH retried AS (
    UPDATE {schema}.jobs"""
    + _RETRY_SET
    + """    WHERE id IN (
        SELECT id FROM {schema}.jobs
        WHERE state = %(state)s::text
          AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
          AND (%(task)s::text IS NULL OR task = %(task)s::text)
          AND coalesce(finished_at, created_at)
              < now() - make_interval(secs => %(older_than_seconds)s)
        ORDER BY id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, queue
)
SELECT id, pg_notify(%(notify_channel)s, queue) FROM retried
"""
)


# Finish many jobs in one statement, each fenced by its own lease token, and
# wake anyone waiting on them with one notification per batch (or 'done *' when
# the ids would not fit NOTIFY's 8000-byte payload).
JOB_SUCCEED_MANY = """
WITH finished AS (
    UPDATE {schema}.jobs AS j
    SET state = 'succeeded', result = done.result::jsonb, finished_at = now(),
        lease_token = NULL, lease_expires_at = NULL
    FROM unnest(%(ids)s::bigint[], %(lease_tokens)s::uuid[], %(results)s::text[])
         AS done(id, lease_token, result)
    WHERE j.id = done.id AND j.lease_token = done.lease_token AND j.state = 'running'
    RETURNING j.id
), ids AS (
    SELECT string_agg(id::text, ',') AS list, array_agg(id) AS all_ids FROM finished
)
SELECT all_ids,
       CASE WHEN list IS NULL THEN NULL
            WHEN octet_length(list) < 7900 THEN pg_notify(%(events_channel)s, 'done ' || list)
            ELSE pg_notify(%(events_channel)s, 'done *') END
FROM ids
"""


QUEUE_LIST_KNOWN = """
SELECT queue FROM {schema}.jobs GROUP BY queue
UNION
SELECT name FROM {schema}.queues
ORDER BY 1
"""


QUEUE_LIST_PAUSED = "SELECT name FROM {schema}.queues WHERE paused_at IS NOT NULL"


QUEUE_PAUSE = """
INSERT INTO {schema}.queues (name, paused_at) VALUES (%(queue)s, now())
ON CONFLICT (name) DO UPDATE SET paused_at = coalesce({schema}.queues.paused_at, now())
"""


# Tell workers to re-read which queues are paused.
QUEUE_PAUSE_ANNOUNCE = "SELECT pg_notify(%(events_channel)s, 'paused ' || %(queue)s::text)"


# Resume a queue and wake its workers.
QUEUE_RESUME = """
WITH resumed AS (
    UPDATE {schema}.queues SET paused_at = NULL WHERE name = %(queue)s RETURNING name
)
SELECT name, pg_notify(%(notify_channel)s, name) FROM resumed
"""


QUEUE_STATS = """
SELECT queue, queued, scheduled, running, retrying, dead, succeeded, cancelled,
       oldest_ready_seconds, jobs_per_second_1m, paused
FROM {schema}.queue_stats
ORDER BY queue
"""


SCHEMA_REVISION_GET = "SELECT version_num FROM {schema}.pgqueue_alembic_version"


WORKER_DELETE = "DELETE FROM {schema}.workers WHERE id = %(id)s"


# Forget workers that stopped heartbeating long ago (killed without cleanup).
WORKER_DELETE_STALE = """
DELETE FROM {schema}.workers
WHERE heartbeat_at < now() - make_interval(secs => %(older_than_seconds)s)
"""


WORKER_LIST = """
SELECT id, hostname, pid, queues, concurrency, started_at,
       extract(epoch FROM now() - heartbeat_at)::float8 AS heartbeat_age_seconds
FROM {schema}.workers
ORDER BY started_at
"""


WORKER_UPSERT = """
INSERT INTO {schema}.workers (id, hostname, pid, queues, concurrency)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(queues)s, %(concurrency)s)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()
"""


@functools.lru_cache(maxsize=256)
def render(statement: str, schema: str) -> str:
    """``statement`` with the (validated, quoted) schema name filled in."""
    return statement.replace("{schema}", f'"{validate_schema_name(schema)}"')
