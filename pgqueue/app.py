"""App: configuration, the task registry, and the producer's methods."""

from __future__ import annotations

import difflib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, overload

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from pgqueue import db, queries, shared, tracing
from pgqueue.dsn import (
    connection_failure_reason,
    error_summary,
    redact_dsn,
    resolve_dsn,
)
from pgqueue.errors import (
    ConfigurationError,
    ConnectionLost,
    DatabaseUnavailableError,
    InvalidOptionError,
    JobFailedError,
    JobNotFoundError,
    UnknownTaskError,
)
from pgqueue.jobs import FINISHED_STATES, Job, JobState
from pgqueue.names import DEFAULT_SCHEMA, events_channel, notify_channel, validate_schema_name
from pgqueue.payload import MAX_PAYLOAD_BYTES_DEFAULT, JsonDefault, dump_args
from pgqueue.results import AsyncResult

if TYPE_CHECKING:
    from pgqueue.testing import EagerRunner
from pgqueue.retry import BACKOFF_MAX_DEFAULT
from pgqueue.task_options import TaskOptions, TaskRoutes, build_task_options
from pgqueue.tasks import (
    MAX_ATTEMPTS_DEFAULT,
    QUEUE_DEFAULT,
    JobSpec,
    Task,
    validate_countdown,
    validate_expires,
    validate_max_attempts,
    validate_priority,
    validate_queue,
    validate_run_at,
)

__all__ = ["App", "row_to_job"]

logger = logging.getLogger("pgqueue")

R = TypeVar("R")
R2 = TypeVar("R2")

APPLICATION_NAME = "pgqueue"
SCHEMA_ENV_VAR = "PGQUEUE_SCHEMA"
POOL_SIZE_DEFAULT = 4
CONNECT_TIMEOUT_DEFAULT = 10


def row_to_job(row: db.Row, app: App | None = None) -> Job:
    """Build a Job from a row selected with ``queries.JOB_COLUMNS``."""
    (
        job_id,
        queue,
        task,
        args,
        state,
        priority,
        attempt,
        max_attempts,
        run_at,
        created_at,
        started_at,
        finished_at,
        result,
        last_error,
        errors,
        worker_id,
        expires_at,
    ) = row
    return Job(
        id=job_id,
        queue=queue,
        task=task,
        args=args,
        state=JobState(state),
        priority=priority,
        attempt=attempt,
        max_attempts=max_attempts,
        run_at=run_at,
        created_at=created_at,
        started_at=started_at,
        finished_at=finished_at,
        result=result,
        last_error=last_error,
        errors=list(errors or []),
        worker_id=worker_id,
        expires_at=expires_at,
        _app=app,
    )


def _connection_lost(error: psycopg.OperationalError) -> ConnectionLost:
    return ConnectionLost(
        "the connection to the database broke while a statement was in flight;"
        f" it may or may not have committed ({error_summary(error, 'no detail')})"
    )


class App:
    """A pgqueue application: where the database is, and which tasks exist.

    Args:
        dsn: PostgreSQL URL. ``None`` reads ``PGQUEUE_DATABASE_URL``; if that is
            unset too, the embedded development database is started on first use.
        schema: the schema holding pgqueue's tables; ``None`` reads
            ``PGQUEUE_SCHEMA``, else ``pgqueue``.
        max_payload_bytes: largest accepted JSON encoding of a job's arguments.
        json_default: a ``default=`` function for ``json.dumps``, to encode types
            JSON lacks (datetimes, decimals...). Tasks then receive the encoded form.
        pool_size: connections this process keeps for enqueueing and queries.
        connect_timeout: seconds to wait for a connection before giving up.
        task_routes: Celery-style routes, task-name glob -> queue (or
            ``{"queue": ..., "priority": ...}``), for tasks that name no queue.

    Creating an App opens nothing; the first enqueue or query connects.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        schema: str | None = None,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES_DEFAULT,
        json_default: JsonDefault | None = None,
        pool_size: int = POOL_SIZE_DEFAULT,
        connect_timeout: float = CONNECT_TIMEOUT_DEFAULT,
        task_routes: Mapping[str, str | Mapping[str, Any]] | None = None,
    ) -> None:
        if schema is None:
            schema = os.environ.get(SCHEMA_ENV_VAR) or DEFAULT_SCHEMA
        self.schema = validate_schema_name(schema)
        self._dsn = resolve_dsn(dsn)
        if max_payload_bytes < 1:
            raise ConfigurationError(f"max_payload_bytes must be >= 1, got {max_payload_bytes}")
        self.max_payload_bytes = max_payload_bytes
        self.json_default = json_default
        if pool_size < 1:
            raise ConfigurationError(f"pool_size must be >= 1, got {pool_size}")
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.tasks: dict[str, Task[Any]] = {}
        self.routes = TaskRoutes(task_routes)
        self.notify_channel = notify_channel(self.schema)
        self.events_channel = events_channel(self.schema)
        self._lock = threading.RLock()
        self._pool: ConnectionPool | None = None
        self._async_pool: AsyncConnectionPool | None = None
        self.embedded_description: str | None = None
        # Set by pgqueue.testing.eager(): run jobs inline instead of storing them.
        self.eager_runner: EagerRunner | None = None
        shared.attach(self)

    def __repr__(self) -> str:
        where = redact_dsn(self._dsn) if self._dsn else "embedded"
        return f"<pgqueue.App {where} schema={self.schema} tasks={len(self.tasks)}>"

    # ----------------------------------------------------------------- database

    @property
    def dsn(self) -> str:
        """The database URL, starting the embedded server if none was configured."""
        if self._dsn is None:
            with self._lock:
                if self._dsn is None:
                    from pgqueue import embedded

                    server = embedded.ensure_running()
                    self.embedded_description = embedded.describe(server)
                    logger.info("%s", self.embedded_description)
                    self._dsn = server.dsn
        return self._dsn

    def set_as_current(self) -> None:
        """Make this the app that shared tasks enqueue through."""
        shared.set_current(self)

    def AsyncResult(self, job_id: int) -> AsyncResult:
        """A Celery-style live handle on job ``job_id``."""
        return AsyncResult(job_id, self)

    def use_database(self, dsn: str | None = None, *, schema: str | None = None) -> None:
        """Point this app at another database and/or schema (the CLI's ``--dsn``, ``--schema``).

        Only before the app has connected.
        """
        if self._pool is not None or self._async_pool is not None:
            raise ConfigurationError("use_database() must be called before the app connects")
        if dsn is not None:
            self._dsn = resolve_dsn(dsn)
            self.embedded_description = None
        if schema is not None:
            self.schema = validate_schema_name(schema)
            self.notify_channel = notify_channel(self.schema)
            self.events_channel = events_channel(self.schema)

    @property
    def is_embedded(self) -> bool:
        """True when no URL was configured and the embedded database serves this app."""
        _ = self.dsn
        return self.embedded_description is not None

    def connect(self, *, autocommit: bool = True, **kwargs: Any) -> psycopg.Connection[Any]:
        """A new psycopg connection of this app's own (the caller closes it).

        Raises:
            DatabaseUnavailableError: the server cannot be reached or refused the login.
        """
        try:
            return psycopg.connect(
                self.dsn,
                autocommit=autocommit,
                application_name=kwargs.pop("application_name", APPLICATION_NAME),
                connect_timeout=int(self.connect_timeout),
                **kwargs,
            )
        except psycopg.OperationalError as error:
            raise self._unavailable(error) from None

    async def connect_async(self, *, autocommit: bool = True) -> psycopg.AsyncConnection[Any]:
        """The async twin of ``connect()``."""
        try:
            return await psycopg.AsyncConnection.connect(
                self.dsn,
                autocommit=autocommit,
                application_name=APPLICATION_NAME,
                connect_timeout=int(self.connect_timeout),
            )
        except psycopg.OperationalError as error:
            raise self._unavailable(error) from None

    def _unavailable(self, error: BaseException) -> DatabaseUnavailableError:
        return DatabaseUnavailableError(
            f"could not connect to {redact_dsn(self.dsn)}: {connection_failure_reason(error)}"
        )

    def _get_pool(self) -> ConnectionPool:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    # Connect once first: an unreachable or misconfigured server then
                    # fails at once with its own reason, instead of after the pool's
                    # timeout behind a series of retry warnings.
                    self.connect().close()
                    pool = ConnectionPool(
                        self.dsn,
                        min_size=1,
                        max_size=self.pool_size,
                        kwargs={
                            "autocommit": True,
                            "application_name": APPLICATION_NAME,
                            "connect_timeout": int(self.connect_timeout),
                        },
                        open=False,
                        name="pgqueue-producer",
                        timeout=self.connect_timeout,
                    )
                    pool.open(wait=False)
                    self._pool = pool
        return self._pool

    @contextmanager
    def _own_connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled autocommit connection: each statement is its own transaction."""
        try:
            with self._get_pool().connection() as connection:
                yield connection
        except PoolTimeout as error:
            raise self._unavailable(error) from None

    def run(
        self, sql: str, params: Mapping[str, Any], connection: object | None = None
    ) -> list[db.Row]:
        """Run one of ``queries``' statements on ``connection`` or on a pooled one.

        On a pooled connection each statement commits by itself. A connection
        that breaks mid-statement raises ConnectionLost: whether the statement
        committed is unknown.
        """
        rendered = queries.render(sql, self.schema)
        if connection is None:
            connection = self.default_connection()
        with db.explained_errors(self.schema):
            if connection is not None:
                return db.execute(connection, rendered, params)
            with self._own_connection() as own:
                try:
                    return db.execute(own, rendered, params)
                except psycopg.OperationalError as error:
                    if own.broken or own.closed:
                        raise _connection_lost(error) from error
                    raise

    async def run_async(
        self, sql: str, params: Mapping[str, Any], connection: object | None = None
    ) -> list[db.Row]:
        """The async twin of ``run()``."""
        with db.explained_errors(self.schema):
            return await self._run_async(queries.render(sql, self.schema), params, connection)

    async def _run_async(
        self, rendered: str, params: Mapping[str, Any], connection: object | None
    ) -> list[db.Row]:
        if connection is not None:
            return await db.execute_async(connection, rendered, params)
        if self._async_pool is None:
            pool = AsyncConnectionPool(
                self.dsn,
                min_size=1,
                max_size=self.pool_size,
                kwargs={"autocommit": True, "application_name": APPLICATION_NAME},
                open=False,
                name="pgqueue-producer-async",
                timeout=self.connect_timeout,
            )
            await pool.open(wait=False)
            self._async_pool = pool
        try:
            async with self._async_pool.connection() as own:
                try:
                    return await db.execute_async(own, rendered, params)
                except psycopg.OperationalError as error:
                    if own.broken or own.closed:
                        raise _connection_lost(error) from error
                    raise
        except PoolTimeout as error:
            raise self._unavailable(error) from None

    def close(self) -> None:
        """Close this app's own connections (not the ones you passed in)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    async def aclose(self) -> None:
        """Close the async pool too."""
        self.close()
        if self._async_pool is not None:
            await self._async_pool.close()
            self._async_pool = None

    # ------------------------------------------------------------------ tasks

    @overload
    def task(self, func: Callable[..., R], /) -> Task[R]: ...

    @overload
    def task(
        self,
        func: None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        retry_for: tuple[type[BaseException], ...] | None = None,
        retry_backoff: float | bool | None = None,
        retry_backoff_max: float = BACKOFF_MAX_DEFAULT,
        retry_jitter: bool = True,
        pass_context: bool = False,
        **celery_options: Any,
    ) -> Callable[[Callable[..., R2]], Task[R2]]: ...

    def task(
        self,
        func: Callable[..., R] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        retry_for: tuple[type[BaseException], ...] | None = None,
        retry_backoff: float | bool | None = None,
        retry_backoff_max: float = BACKOFF_MAX_DEFAULT,
        retry_jitter: bool = True,
        pass_context: bool = False,
        **celery_options: Any,
    ) -> Task[R] | Callable[[Callable[..., R]], Task[R]]:
        """Register a function as a task (``@app.task`` or ``@app.task(...)``).

        Args:
            name: the name jobs store; defaults to the function's ``__name__``.
            queue: default queue; else the first matching ``task_routes`` entry,
                else ``default``.
            priority: default priority, -100..100, higher first (default 0).
            max_attempts: attempts before the job is dead (default 5).
            timeout: seconds an attempt may run before it fails with TimeoutError.
            retry_for: exception types that are retried; any other goes ``dead``
                at once (default: every Exception).
            retry_backoff: base seconds of exponential backoff (default 1; ``True``
                = 1 s; ``False`` or ``0`` = retry at once). Declared with Celery's
                ``autoretry_for``, the default is Celery's ``False``, and without
                backoff retries wait ``default_retry_delay`` (180 s), as in Celery.
            retry_backoff_max: cap on one backoff delay, seconds (default 600).
            retry_jitter: randomise each delay in ``[0, delay]`` (default True).
            pass_context: call the function with a ``JobContext`` first (job id,
                attempt, cancellation, ``complete(connection)``).
            **celery_options: Celery's names with Celery's meanings: ``bind``,
                ``autoretry_for``, ``dont_autoretry_for``, ``max_retries``,
                ``retry_kwargs``, ``default_retry_delay``, ``time_limit``,
                ``ignore_result``, ``acks_late=True``,
                ``track_started=True``. Options pgqueue cannot honour raise
                ConfigurationError saying why.
        """
        options = build_task_options(
            name=name,
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout,
            retry_for=retry_for,
            retry_backoff=retry_backoff,
            retry_backoff_max=retry_backoff_max,
            retry_jitter=retry_jitter,
            pass_context=pass_context,
            extra=celery_options,
        )

        def register(function: Callable[..., R]) -> Task[R]:
            return self.register_task(function, options)

        if func is not None:
            return register(func)
        return register

    def register_task(self, function: Callable[..., R], options: TaskOptions) -> Task[R]:
        """Register ``function`` with already-validated options (``task`` and ``shared_task``)."""
        task_name = options.name or function.__name__
        if not isinstance(task_name, str) or not 1 <= len(task_name) <= 255:
            raise InvalidOptionError(f"task name must be 1 to 255 characters, got {task_name!r}")
        existing = self.tasks.get(task_name)
        if existing is not None and existing.func is not function:
            raise ConfigurationError(
                f"task '{task_name}' is already registered by"
                f" {existing.func.__module__}.{existing.func.__qualname__};"
                " pass name='...' to register this one under another name"
            )
        routed_queue, routed_priority = self.routes.match(task_name)
        # "is None", never "or": queue="" and max_attempts=0 are values for Task
        # to refuse, not absent options to replace with a default.
        registered: Task[R] = Task(
            self,
            function,
            name=task_name,
            queue=options.queue if options.queue is not None else routed_queue or QUEUE_DEFAULT,
            priority=options.priority if options.priority is not None else routed_priority or 0,
            max_attempts=(
                options.max_attempts if options.max_attempts is not None else MAX_ATTEMPTS_DEFAULT
            ),
            timeout=options.timeout,
            retry=options.retry,
            pass_context=options.pass_context,
            bind=options.bind,
            ignore_result=options.ignore_result,
            default_retry_delay=options.default_retry_delay,
        )
        self.tasks[task_name] = registered
        return registered

    def resolve_task(self, name: str) -> Task[Any] | None:
        """The task that runs jobs called ``name`` on this worker, or None.

        Integrations override this to find tasks elsewhere (Django's Tasks
        framework stores a task's module path as its name).
        """
        return self.tasks.get(name)

    def default_connection(self) -> object | None:
        """The connection used when a caller passes none; None means this app's own pool.

        Integrations override this (Django: its connection inside ``atomic()``),
        so that plain ``task.enqueue(...)`` joins the framework's transaction.
        """
        return None

    def get_task(self, name: str) -> Task[Any]:
        """The registered task called ``name``.

        Raises:
            UnknownTaskError: with the closest registered name, if any.
        """
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTaskError(self._unknown_task_message(name)) from None

    def _unknown_task_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self.tasks), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return (
            f"no task named '{name}' is registered in this process{hint}."
            " Producers that only enqueue can pass check_task=False."
        )

    # --------------------------------------------------------------- enqueue

    def prepare(
        self,
        task: str,
        args: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        countdown: float | None = None,
        max_attempts: int | None = None,
        expires: datetime | float | None = None,
        check_task: bool = True,
    ) -> JobSpec:
        """Validate a job and encode its arguments; nothing is written.

        Every enqueue path goes through here, so every check happens before any SQL.
        """
        registered = self.tasks.get(task)
        if registered is None and check_task:
            raise UnknownTaskError(self._unknown_task_message(task))
        if not isinstance(task, str) or not 1 <= len(task) <= 255:
            raise InvalidOptionError(f"task name must be 1 to 255 characters, got {task!r}")
        args = {} if args is None else args
        if not isinstance(args, Mapping):
            raise InvalidOptionError(
                f"args for task '{task}' must be a mapping of argument names to values,"
                f" got {type(args).__name__}"
            )
        run_at = validate_run_at(run_at)
        delay = validate_countdown(countdown)
        if run_at is not None and countdown is not None:
            raise InvalidOptionError("pass either run_at or countdown, not both")
        expires_at, expires_in = validate_expires(expires)
        if registered is not None:
            default_queue, default_priority = registered.queue, registered.priority
            default_attempts = registered.max_attempts
        else:
            routed_queue, routed_priority = self.routes.match(task)
            default_queue = routed_queue or QUEUE_DEFAULT
            default_priority = routed_priority or 0
            default_attempts = MAX_ATTEMPTS_DEFAULT
        return JobSpec(
            task=task,
            args=dump_args(task, args, max_bytes=self.max_payload_bytes, default=self.json_default),
            queue=validate_queue(queue if queue is not None else default_queue),
            priority=validate_priority(priority if priority is not None else default_priority),
            max_attempts=validate_max_attempts(
                max_attempts if max_attempts is not None else default_attempts
            ),
            run_at=run_at,
            delay_seconds=delay,
            expires_at=expires_at,
            expires_in=expires_in,
        )

    @staticmethod
    def _insert_params(spec: JobSpec) -> dict[str, Any]:
        return {
            "queue": spec.queue,
            "task": spec.task,
            "args": spec.args,
            "priority": spec.priority,
            "run_at": spec.run_at,
            "delay_seconds": spec.delay_seconds,
            "expires_at": spec.expires_at,
            "expires_in": spec.expires_in,
            "max_attempts": spec.max_attempts,
        }

    def _inserted_job(self, spec: JobSpec, row: db.Row) -> Job:
        """The Job just inserted from ``spec``: the row gave id and times (``INSERTED_COLUMNS``)."""
        job_id, run_at, created_at, expires_at = row
        return Job(
            id=job_id,
            queue=spec.queue,
            task=spec.task,
            args=json.loads(spec.args),
            state=JobState.QUEUED,
            priority=spec.priority,
            attempt=0,
            max_attempts=spec.max_attempts,
            run_at=run_at,
            created_at=created_at,
            expires_at=expires_at,
            _app=self,
        )

    def insert(self, spec: JobSpec, *, connection: object | None = None) -> Job:
        """Insert a prepared job, in ``connection``'s transaction or in its own."""
        if self.eager_runner is not None:
            return self.eager_runner.run(spec)
        with tracing.span("pgqueue.enqueue", task=spec.task, queue=spec.queue) as current:
            rows = self.run(queries.JOB_INSERT, self._insert_params(spec), connection)
            job = self._inserted_job(spec, rows[0])
            if current is not None:
                current.set_attribute("pgqueue.job_id", job.id)
        return job

    async def insert_async(self, spec: JobSpec, *, connection: object | None = None) -> Job:
        """The async twin of ``insert()``."""
        if self.eager_runner is not None:
            return self.eager_runner.run(spec)
        with tracing.span("pgqueue.enqueue", task=spec.task, queue=spec.queue) as current:
            rows = await self.run_async(queries.JOB_INSERT, self._insert_params(spec), connection)
            job = self._inserted_job(spec, rows[0])
            if current is not None:
                current.set_attribute("pgqueue.job_id", job.id)
        return job

    def enqueue(
        self,
        task: str,
        args: Mapping[str, Any] | None = None,
        *,
        connection: object | None = None,
        check_task: bool = True,
        **options: Any,
    ) -> Job:
        """Enqueue a job by task name, with its arguments as a mapping.

        ``check_task=False`` lets a producer that does not import the task code
        enqueue anyway; the worker checks the name when it runs the job.
        """
        spec = self.prepare(task, args, check_task=check_task, **options)
        return self.insert(spec, connection=connection)

    async def enqueue_async(
        self,
        task: str,
        args: Mapping[str, Any] | None = None,
        *,
        connection: object | None = None,
        check_task: bool = True,
        **options: Any,
    ) -> Job:
        """The async twin of ``enqueue()``."""
        spec = self.prepare(task, args, check_task=check_task, **options)
        return await self.insert_async(spec, connection=connection)

    @staticmethod
    def _insert_many_params(specs: list[JobSpec]) -> dict[str, Any]:
        """The batch as one JSON array; ``spec.args`` is JSON already and goes in as is."""
        task_json: dict[str, str] = {}
        rows = []
        for spec in specs:
            task = task_json.get(spec.task)
            if task is None:
                task = task_json[spec.task] = json.dumps(spec.task)
            # Queue names are validated to [a-z0-9_.:-], so they need no escaping.
            row = (
                f'{{"q":"{spec.queue}","t":{task},"a":{spec.args},"p":{spec.priority},'
                f'"m":{spec.max_attempts},"d":{spec.delay_seconds!r}'
            )
            if spec.run_at is not None:
                row += f',"r":"{spec.run_at.isoformat()}"'
            if spec.expires_at is not None:
                row += f',"e":"{spec.expires_at.isoformat()}"'
            elif spec.expires_in is not None:
                row += f',"ei":{spec.expires_in!r}'
            rows.append(row + "}")
        return {"batch": "[" + ",".join(rows) + "]"}

    @staticmethod
    def _check_specs(specs: Iterable[JobSpec]) -> list[JobSpec]:
        checked = list(specs)
        for position, spec in enumerate(checked):
            if not isinstance(spec, JobSpec):
                raise InvalidOptionError(
                    f"enqueue_many takes JobSpec objects (from task.prepare(...) or"
                    f" app.prepare(...)); item {position} is a {type(spec).__name__}"
                )
        return checked

    def enqueue_many(
        self, specs: Iterable[JobSpec], *, connection: object | None = None
    ) -> list[Job]:
        """Insert many prepared jobs in one statement (one round trip), all or none."""
        checked = self._check_specs(specs)
        if self.eager_runner is not None:
            return [self.eager_runner.run(spec) for spec in checked]
        if not checked:
            return []
        rows = self.run(queries.JOB_INSERT_MANY, self._insert_many_params(checked), connection)
        return [self._inserted_job(spec, row) for spec, row in zip(checked, rows, strict=True)]

    async def enqueue_many_async(
        self, specs: Iterable[JobSpec], *, connection: object | None = None
    ) -> list[Job]:
        """The async twin of ``enqueue_many()``."""
        checked = self._check_specs(specs)
        if self.eager_runner is not None:
            return [self.eager_runner.run(spec) for spec in checked]
        if not checked:
            return []
        rows = await self.run_async(
            queries.JOB_INSERT_MANY, self._insert_many_params(checked), connection
        )
        return [self._inserted_job(spec, row) for spec, row in zip(checked, rows, strict=True)]

    # ------------------------------------------------------------- inspection

    def get_job(self, job_id: int, *, connection: object | None = None) -> Job:
        """The current snapshot of job ``job_id``.

        Raises:
            JobNotFoundError: no such job.
        """
        if self.eager_runner is not None:
            return self.eager_runner.get(job_id)
        rows = self.run(queries.JOB_GET, {"id": job_id}, connection)
        if not rows:
            raise JobNotFoundError(job_id)
        return row_to_job(rows[0], self)

    def cancel_job(self, job_id: int, *, connection: object | None = None) -> JobState:
        """Cancel a job: at once if it has not started, by request if it is running.

        Returns ``CANCELLED`` if it was waiting, ``RUNNING`` if it was running
        (cancellation was requested; it stays ``running`` until its task
        notices or finishes), and otherwise the finished state it already had,
        which nothing changed.

        Raises:
            JobNotFoundError: no such job.
        """
        waiting = self.run(queries.JOB_CANCEL_WAITING, {"ids": [job_id]}, connection)
        if waiting:
            return JobState.CANCELLED
        requested = self.run(
            queries.JOB_CANCEL_REQUEST_RUNNING,
            {"ids": [job_id], "events_channel": self.events_channel},
            connection,
        )
        if requested:
            # It was running: report the request even if it finished since.
            return JobState.RUNNING
        return self.get_job(job_id, connection=connection).state

    def retry_job(self, job_id: int, *, connection: object | None = None) -> Job:
        """Queue a dead, cancelled, failed or succeeded job to run again now.

        A job that used all its attempts gets one more.
        """
        rows = self.run(
            queries.JOB_RETRY, {"ids": [job_id], "notify_channel": self.notify_channel}, connection
        )
        job = self.get_job(job_id, connection=connection)
        if not rows and job.state is not JobState.QUEUED:
            raise InvalidOptionError(
                f"job {job_id} is {job.state}; only finished jobs can be retried"
            )
        return job

    def wait_for_job(self, job_id: int, *, timeout: float | None = None) -> Any:
        """Block until job ``job_id`` finishes; return its result.

        Listens for the worker's "done" notification and re-reads the row when
        it arrives (and every couple of seconds, in case a notification is lost).

        Raises:
            JobFailedError: the job ended ``dead`` or ``cancelled``.
            TimeoutError: still unfinished after ``timeout`` seconds.
            JobNotFoundError: no such job.
        """
        if self.eager_runner is not None:
            job = self.eager_runner.get(job_id)
            if job.state is JobState.SUCCEEDED:
                return job.result
            raise JobFailedError(job_id, job.state.value, job.last_error)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.connect() as listener:
            listener.execute(f'LISTEN "{self.events_channel}"')
            while True:
                job = self.get_job(job_id, connection=listener)
                if job.state in FINISHED_STATES:
                    if job.state is JobState.SUCCEEDED:
                        return job.result
                    raise JobFailedError(job_id, job.state.value, job.last_error)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"job {job_id} is still {job.state} after {timeout} s"
                        f" (attempt {job.attempt}/{job.max_attempts})"
                    )
                wake_in = 2.0 if remaining is None else min(2.0, remaining)
                for notify in listener.notifies(timeout=wake_in):
                    if _mentions(notify.payload, job_id):
                        break


def _mentions(payload: str, job_id: int) -> bool:
    kind, _, ids = payload.partition(" ")
    return kind == "done" and (ids == "*" or str(job_id) in ids.split(","))
