"""``PgqueueBackend``: Django's Tasks framework on pgqueue's jobs table.

::

    TASKS = {
        "default": {
            "BACKEND": "pgqueue.contrib.django.PgqueueBackend",
            "QUEUES": ["default", "high", "low"],
            "OPTIONS": {"max_attempts": 3, "retry_backoff": 2.0},
        }
    }

A Django task enqueued here is one row of ``pgqueue.jobs``:

- ``task`` is the task's ``module_path`` (``myapp.tasks.send_welcome_email``),
  which the worker imports to run it;
- ``args`` is ``{"args": [...], "kwargs": {...}, "backend": "<alias>"}``, after
  Django's JSON normalisation (tuples become lists);
- ``queue``, ``priority`` (Django's -100..100, which is pgqueue's range too,
  higher first) and ``run_at`` (``run_after``) are the task's;
- the insert runs on Django's connection for pgqueue's database, so it commits
  or rolls back with the surrounding ``transaction.atomic()`` block.

``TaskResult``s are read back from the row: ``queued``/``failed`` (a retry is
due) are READY, ``running`` is RUNNING, ``succeeded`` is SUCCESSFUL, ``dead``
and ``cancelled`` are FAILED. Each failed attempt is one ``TaskError``, and
``worker_ids`` holds one worker id per attempt, so ``TaskContext.attempt``
counts attempts.

OPTIONS (all optional): ``max_attempts`` (default 1: as in Django, an exception
fails the task; more makes pgqueue retry it), ``retry_backoff`` (base seconds of
the exponential backoff, default 1), ``retry_backoff_max`` (cap in seconds,
default 600), ``retry_jitter`` (default True) and ``timeout`` (seconds an
attempt may run; default none).
"""

from __future__ import annotations

import builtins
import keyword
import logging
import sys
import traceback
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from django.apps import apps as django_apps
from django.conf import settings
from django.db import close_old_connections, reset_queries
from django.utils import timezone
from django.utils.module_loading import import_string

from pgqueue import errors as pgqueue_errors
from pgqueue.app import App
from pgqueue.errors import JobNotFoundError, PgqueueError, SerializationError
from pgqueue.jobs import Job, JobState
from pgqueue.payload import dump_args
from pgqueue.retry import BACKOFF_BASE_DEFAULT, BACKOFF_MAX_DEFAULT
from pgqueue.task_options import build_task_options
from pgqueue.tasks import Task as PgqueueTask
from pgqueue.tasks import validate_max_attempts, validate_queue
from pgqueue.worker.execution import JobContext

from . import tasks_api
from .app import get_app
from .tasks_api import (
    BaseTaskBackend,
    InvalidTask,
    InvalidTaskBackend,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    normalize_json,
    task_backends,
    task_enqueued,
    task_finished,
    task_started,
)

__all__ = ["PgqueueBackend", "WorkerLost", "register_django_task"]

logger = logging.getLogger("pgqueue.django")

OPTION_NAMES = frozenset(
    {"max_attempts", "retry_backoff", "retry_backoff_max", "retry_jitter", "timeout"}
)
MAX_ATTEMPTS_DEFAULT = 1
PAYLOAD_KEYS = frozenset({"args", "kwargs", "backend"})
_TRACEBACK_HEADER = "Traceback (most recent call last):\n"


class WorkerLost(Exception):
    """The worker running the task stopped renewing its lease (it crashed or was killed).

    The ``exception_class_path`` of the ``TaskError`` recorded for such an attempt.
    """


def _status(state: JobState) -> Any:
    return {
        JobState.QUEUED: TaskResultStatus.READY,
        JobState.FAILED: TaskResultStatus.READY,
        JobState.RUNNING: TaskResultStatus.RUNNING,
        JobState.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
        JobState.DEAD: TaskResultStatus.FAILED,
        JobState.CANCELLED: TaskResultStatus.FAILED,
    }[state]


def _is_exception_class(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, BaseException)


def _path_from_traceback(trace: str) -> str | None:
    """The qualified class of the exception a formatted traceback ends with.

    ``traceback.format_exception`` writes ``package.module.Class: message`` after
    the frames of the last exception of a chain (bare ``Class`` for builtins).
    """
    start = trace.rfind(_TRACEBACK_HEADER)
    if start < 0:
        return None
    for line in trace[start + len(_TRACEBACK_HEADER) :].splitlines():
        if not line or line[0].isspace():
            continue  # frames and source lines are indented
        head = line.split(":", 1)[0].strip()
        parts = head.split(".")
        if not all(part.isidentifier() and not keyword.iskeyword(part) for part in parts):
            return None
        if len(parts) == 1:
            return (
                f"builtins.{head}" if _is_exception_class(getattr(builtins, head, None)) else head
            )
        return head
    return None


def exception_class_path(entry: Mapping[str, Any]) -> str:
    """``TaskError.exception_class_path`` for one entry of a job's ``errors``."""
    found = _path_from_traceback(str(entry.get("traceback") or ""))
    if found:
        return found
    name = str(entry.get("type") or "Exception")
    if name == "WorkerLost":
        return f"{__name__}.WorkerLost"
    if _is_exception_class(getattr(builtins, name, None)):
        return f"builtins.{name}"
    if _is_exception_class(getattr(pgqueue_errors, name, None)):
        return f"pgqueue.errors.{name}"
    return name


class PgqueueBackend(BaseTaskBackend):
    """Django's Tasks framework backend that stores tasks as pgqueue jobs.

    Supports every optional feature: ``run_after`` (defer), priorities, async
    tasks, and results from any process (``get_result``/``aget_result``).
    Tasks run in ``manage.py pgqueue_work``.
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: Mapping[str, Any]) -> None:
        super().__init__(alias, params)
        options = {str(key).lower(): value for key, value in dict(self.options).items()}
        unknown = sorted(set(options) - OPTION_NAMES)
        if unknown:
            raise InvalidTaskBackend(
                f"TASKS[{alias!r}]['OPTIONS'] has unknown keys {unknown};"
                f" pgqueue's backend takes {', '.join(sorted(OPTION_NAMES))}"
            )
        try:
            for queue in self.queues:
                validate_queue(queue)
            self.max_attempts = validate_max_attempts(
                options.get("max_attempts", MAX_ATTEMPTS_DEFAULT)
            )
            # Validated the way @app.task validates them.
            self.task_options = build_task_options(
                name=None,
                queue=None,
                priority=None,
                max_attempts=self.max_attempts,
                timeout=options.get("timeout"),
                retry_for=None,
                retry_backoff=options.get("retry_backoff", BACKOFF_BASE_DEFAULT),
                retry_backoff_max=options.get("retry_backoff_max", BACKOFF_MAX_DEFAULT),
                retry_jitter=bool(options.get("retry_jitter", True)),
                pass_context=True,
                extra={},
            )
        except (ValueError, TypeError, PgqueueError) as error:
            raise InvalidTaskBackend(f"TASKS[{alias!r}]: {error}") from None

    # ----------------------------------------------------------------- validate

    def validate_task(self, task: Any) -> None:
        """Django's checks, plus pgqueue's queue-name rule (lower case, ≤ 63 characters)."""
        super().validate_task(task)
        try:
            validate_queue(task.queue_name)
        except ValueError as error:
            raise InvalidTask(str(error)) from None

    # ------------------------------------------------------------------ enqueue

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Insert the job on Django's connection (inside ``atomic()``, with it).

        Raises:
            InvalidTask: the task does not suit this backend (queue, priority...).
            pgqueue.SerializationError: an argument is not JSON (the message names it).
        """
        self.validate_task(task)
        app = get_app()
        plain_args, plain_kwargs = self._normalized_arguments(task, args, kwargs)
        spec = app.prepare(
            task.module_path,
            {"args": plain_args, "kwargs": plain_kwargs, "backend": self.alias},
            queue=task.queue_name,
            priority=task.priority,
            run_at=self._run_at(task.run_after),
            max_attempts=self.max_attempts,
            check_task=False,
        )
        job = app.insert(spec, connection=app.django_connection())
        result = self._result(task, job)
        task_enqueued.send(type(self), task_result=result)
        return result

    def _normalized_arguments(
        self, task: Any, args: Any, kwargs: Any
    ) -> tuple[list[Any], dict[str, Any]]:
        try:
            return normalize_json(list(args)), normalize_json(dict(kwargs))
        except (TypeError, ValueError):
            # pgqueue's encoder names the offending value's path ($.args[1]...) and type.
            dump_args(task.module_path, {"args": list(args), "kwargs": dict(kwargs)})
            raise SerializationError(
                f"args for task '{task.module_path}' are not JSON-serializable"
            ) from None

    @staticmethod
    def _run_at(run_after: datetime | None) -> datetime | None:
        if run_after is None or timezone.is_aware(run_after):
            return run_after
        # USE_TZ = False: Django's naive datetimes are in the current time zone.
        aware: datetime = timezone.make_aware(run_after)
        return aware

    # ------------------------------------------------------------------ results

    def get_result(self, result_id: str) -> Any:
        """The task's current result, read from its job row.

        Raises:
            TaskResultDoesNotExist: no such job, or it is not a task of this backend.
        """
        try:
            job_id = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(f"no task result {result_id!r}") from None
        app = get_app()
        try:
            job = app.get_job(job_id, connection=app.django_connection())
        except JobNotFoundError:
            raise TaskResultDoesNotExist(f"no task result {result_id!r}") from None
        payload = job.args
        if (
            not isinstance(payload, dict)
            or set(payload) != PAYLOAD_KEYS
            or payload["backend"] != self.alias
        ):
            raise TaskResultDoesNotExist(
                f"job {job_id} (task '{job.task}') is not a task of backend '{self.alias}'"
            )
        return self._result(self._task_of(job), job)

    def _task_of(self, job: Job) -> Any:
        """The Django Task a job runs, with the job's queue, priority and backend."""
        try:
            task = import_string(job.task)
        except ImportError as error:
            raise TaskResultDoesNotExist(
                f"job {job.id} runs '{job.task}', which cannot be imported here: {error}"
            ) from None
        if not isinstance(task, tasks_api.Task):
            raise TaskResultDoesNotExist(f"job {job.id} runs '{job.task}', not a Django task")
        changes: dict[str, Any] = {}
        if task.queue_name != job.queue:
            changes["queue_name"] = job.queue
        if task.priority != job.priority:
            changes["priority"] = job.priority
        if task.backend != self.alias:
            changes["backend"] = self.alias
        if changes:
            try:
                task = task.using(**changes)
            except InvalidTask:
                pass  # e.g. a queue since removed from QUEUES: report the task as defined
        return task

    def _result(self, task: Any, job: Job) -> Any:
        payload = job.args if isinstance(job.args, dict) else {}
        errors = [
            TaskError(
                exception_class_path=exception_class_path(entry),
                traceback=str(entry.get("traceback") or entry.get("message") or ""),
            )
            for entry in job.errors
            if isinstance(entry, dict) and entry.get("kind") != "released"
        ]
        result = TaskResult(
            task=task,
            id=str(job.id),
            status=_status(job.state),
            enqueued_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at if job.is_finished else None,
            last_attempted_at=job.started_at,
            args=list(payload.get("args") or []),
            kwargs=dict(payload.get("kwargs") or {}),
            backend=self.alias,
            errors=errors,
            worker_ids=_worker_ids(job),
        )
        if job.state is JobState.SUCCEEDED:
            object.__setattr__(result, "_return_value", job.result)
        return result

    def check(self, **kwargs: Any) -> Any:
        """System check: pgqueue's database must be PostgreSQL."""
        from django.core import checks
        from django.core.exceptions import ImproperlyConfigured

        from .conf import dsn_from_database_settings, pgqueue_settings

        try:
            conf = pgqueue_settings()
            dsn_from_database_settings(settings.DATABASES[conf.database], conf.database)
        except ImproperlyConfigured as error:
            return [checks.Error(str(error), obj=f"TASKS[{self.alias!r}]", id="pgqueue.E001")]
        return []


def _worker_ids(job: Job) -> list[str]:
    """One worker id per attempt (Django counts attempts as ``len(worker_ids)``)."""
    by_attempt: dict[int, str] = {}
    for entry in job.errors:
        if not isinstance(entry, dict) or entry.get("kind") == "released":
            continue
        attempt = entry.get("attempt")
        if isinstance(attempt, int) and attempt > 0:
            by_attempt[attempt] = str(entry.get("worker_id") or "unknown")
    current = job.worker_id or "unknown"
    return [by_attempt.get(number, current) for number in range(1, job.attempt + 1)]


# ----------------------------------------------------------------------- worker


def register_django_task(app: App, name: str) -> PgqueueTask[Any] | None:
    """Register a pgqueue task that runs the Django task at import path ``name``.

    Returns None when ``name`` is not a Django Task (jobs of it stay unknown).
    Retry and timeout settings come from the OPTIONS of the task's backend.
    """
    if not _importable_task_path(name):
        return None
    try:
        django_task = import_string(name)
    except ImportError:
        return None
    if not isinstance(django_task, tasks_api.Task):
        return None
    try:
        return _register(app, name, django_task)
    except Exception:
        # Called from the worker's task lookup: an error here must not stop the
        # worker. The job goes dead as "no handler", and the reason is logged.
        logger.exception("cannot run Django task %s with pgqueue", name)
        return None


def _importable_task_path(name: str) -> bool:
    """Whether the worker may import ``name``'s module to find a task there.

    A job row names the module; importing runs the module's code, so only modules
    already imported or inside an installed Django app qualify, never any module
    on ``sys.path`` that someone able to insert rows would like to run.
    """
    module, _, attribute = name.rpartition(".")
    if not module or not attribute.isidentifier():
        return False
    if module in sys.modules:
        return True
    return any(
        module == config.name or module.startswith(config.name + ".")
        for config in django_apps.get_app_configs()
    )


def _register(app: App, name: str, django_task: Any) -> PgqueueTask[Any]:
    try:
        backend = task_backends[django_task.backend]
    except InvalidTaskBackend:
        backend = None
    base = backend.task_options if isinstance(backend, PgqueueBackend) else None
    options = build_task_options(
        name=name,
        queue=django_task.queue_name,
        priority=django_task.priority,
        max_attempts=base.max_attempts if base else MAX_ATTEMPTS_DEFAULT,
        timeout=base.timeout if base else None,
        retry_for=None,
        retry_backoff=base.retry.backoff if base else BACKOFF_BASE_DEFAULT,
        retry_backoff_max=base.retry.backoff_max if base else BACKOFF_MAX_DEFAULT,
        retry_jitter=base.retry.jitter if base else True,
        pass_context=True,
        extra={},
    )
    return app.register_task(_runner(name, django_task), options)


def _runner(name: str, django_task: Any) -> Callable[..., Any]:
    """The function pgqueue calls for jobs of ``django_task``.

    Its parameters are the keys of the stored payload, so pgqueue's own check of
    stored arguments against the signature rejects a malformed row.
    """

    def run_django_task(
        context: JobContext, args: list[Any], kwargs: dict[str, Any], backend: str = "default"
    ) -> Any:
        return _run(context, django_task, args, kwargs, backend)

    run_django_task.__qualname__ = run_django_task.__name__ = f"run[{name}]"
    run_django_task.__doc__ = f"Run the Django task {name} (pgqueue.contrib.django)."
    return run_django_task


def _given_up(context: JobContext) -> bool:
    """The worker gave this attempt up (timeout, release); a user's cancel is not that."""
    return context._job.given_up.is_set()


def _send(signal: Any, backend: Any, result: Any) -> None:
    # A failing receiver is logged, not allowed to change the job's outcome.
    for receiver, response in signal.send_robust(type(backend), task_result=result):
        if isinstance(response, Exception):
            logger.error(
                "task signal receiver %r failed",
                receiver,
                exc_info=(type(response), response, response.__traceback__),
            )


def _run(
    context: JobContext, django_task: Any, args: list[Any], kwargs: dict[str, Any], alias: str
) -> Any:
    # Worker threads keep their Django connections between jobs: treat each job
    # like a request, so CONN_MAX_AGE and broken connections are handled as there.
    close_old_connections()
    reset_queries()
    try:
        backend = task_backends[alias]
        task = django_task if django_task.backend == alias else django_task.using(backend=alias)
        result = backend.get_result(str(context.id))  # the RUNNING snapshot, from the row
        _send(task_started, backend, result)
        try:
            if task.takes_context:
                value = task.call(TaskContext(task_result=result), *args, **kwargs)
            else:
                value = task.call(*args, **kwargs)
        except Exception as error:
            final = context.attempt >= context.max_attempts
            object.__setattr__(
                result, "status", TaskResultStatus.FAILED if final else TaskResultStatus.READY
            )
            if final:
                object.__setattr__(result, "finished_at", timezone.now())
            if _given_up(context):
                raise  # timed out or released: this is not the recorded outcome
            error_type = type(error)
            result.errors.append(
                TaskError(
                    exception_class_path=f"{error_type.__module__}.{error_type.__qualname__}",
                    traceback="".join(
                        traceback.format_exception(error_type, error, error.__traceback__)
                    ),
                )
            )
            _send(task_finished, backend, result)
            raise
        try:
            value = normalize_json(value)
        except (TypeError, ValueError):
            pass  # pgqueue's result encoder fails the job with a message naming the value
        if _given_up(context):
            # A thread that returns after its attempt timed out (or was released at
            # shutdown) must not announce a success: the job's outcome is recorded.
            return value
        object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
        object.__setattr__(result, "finished_at", timezone.now())
        object.__setattr__(result, "_return_value", value)
        _send(task_finished, backend, result)
        return value
    finally:
        close_old_connections()
