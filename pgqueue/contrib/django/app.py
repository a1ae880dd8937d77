"""The pgqueue App of a Django project: Django's database, Django's transactions.

``get_app()`` returns one :class:`DjangoApp` per process, configured from
``settings.PGQUEUE`` and ``settings.DATABASES``. It differs from a plain
``pgqueue.App`` in three ways:

- its DSN is the Django database's (read when first needed, so a test run
  that renames the database to ``test_...`` is followed);
- a statement run without ``connection=`` while Django is inside
  ``transaction.atomic()`` runs on Django's connection, so the job commits or
  rolls back with the surrounding block (no ``on_commit`` needed). Outside an
  atomic block Django autocommits, and so does pgqueue's own pool;
- a job whose task is not registered is looked up as a Django Tasks API task
  by its import path, so ``manage.py pgqueue_work`` runs those too.
"""

from __future__ import annotations

import functools
import inspect
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from django.db import close_old_connections, connections, reset_queries
from django.db.backends.base.base import BaseDatabaseWrapper

from pgqueue import queries
from pgqueue.app import App
from pgqueue.db import Row
from pgqueue.dsn import normalize_dsn, redact_dsn
from pgqueue.task_options import TaskOptions
from pgqueue.tasks import Task

from .conf import dsn_from_database_settings, pgqueue_settings

__all__ = ["DjangoApp", "DjangoTaskRegistry", "get_app", "mark_worker_process", "reset_app"]

T = TypeVar("T")
R = TypeVar("R")

JSONB_OID = 3802

_worker_process = False
_job = threading.local()


def mark_worker_process() -> None:
    """This process runs jobs (``pgqueue_work``, its children): treat each job like a request."""
    global _worker_process
    _worker_process = True


def at_job_boundary(function: Callable[..., R]) -> Callable[..., R]:
    """``function``, which in a worker process starts and ends each job like a Django request.

    Django closes expired and broken connections at the start and end of each
    request (``close_old_connections``), and forgets DEBUG's query log; a worker
    thread serves jobs instead, so the same happens around each job. Only the
    outermost call in a worker process does it: a task called directly from
    another task, or from a view, runs as it is (closing a connection inside an
    ``atomic()`` block would break it). ``async def`` tasks are left alone.
    """
    is_async = inspect.iscoroutinefunction(function)  # a bool: no narrowing of `function`
    if is_async:
        return function

    @functools.wraps(function)
    def run_as_job(*args: Any, **kwargs: Any) -> R:
        if (
            not _worker_process
            or getattr(_job, "running", False)
            or any(c.in_atomic_block for c in connections.all(initialized_only=True))
        ):
            return function(*args, **kwargs)
        _job.running = True
        close_old_connections()
        reset_queries()
        try:
            return function(*args, **kwargs)
        finally:
            _job.running = False
            close_old_connections()

    return run_as_job


class DjangoTaskRegistry(dict[str, Task[Any]]):
    """The App's task registry, which also finds Django Tasks API tasks by import path.

    The worker looks tasks up with ``app.tasks.get(name)``. A name that is not
    registered and looks like ``package.module.function`` is imported; if it is
    a Django ``Task`` whose backend is pgqueue's, a pgqueue task that runs it is
    registered under that name. Anything else stays unknown (the job goes dead
    with "no handler", as for any unknown task).
    """

    def __init__(self, app: DjangoApp) -> None:
        super().__init__()
        self._app = app
        self._lock = threading.RLock()
        self._resolving: set[str] = set()

    @overload
    def get(self, key: str, default: None = None, /) -> Task[Any] | None: ...

    @overload
    def get(self, key: str, default: Task[Any], /) -> Task[Any]: ...

    @overload
    def get(self, key: str, default: T, /) -> Task[Any] | T: ...

    def get(self, key: str, default: Any = None, /) -> Any:
        found = super().get(key)
        if found is not None:
            return found
        resolved = self._resolve(key)
        return default if resolved is None else resolved

    def _resolve(self, name: str) -> Task[Any] | None:
        if not isinstance(name, str) or "." not in name:
            return None
        with self._lock:
            found = super().get(name)
            if found is not None or name in self._resolving:
                return found  # registering calls get() for the same name: not again
            self._resolving.add(name)
            try:
                try:
                    from .backend import register_django_task
                except ImportError:  # neither django.tasks nor django_tasks is installed
                    return None
                return register_django_task(self._app, name)
            finally:
                self._resolving.discard(name)


class DjangoApp(App):
    """A pgqueue App on a Django database (see the module docstring).

    Args:
        database: the ``DATABASES`` alias holding pgqueue's schema.
        queues: the queues ``manage.py pgqueue_work`` serves when given no ``-Q``.
        **options: ``pgqueue.App`` options (schema, pool_size, task_routes...).
    """

    def __init__(
        self, *, database: str = "default", queues: tuple[str, ...] = ("default",), **options: Any
    ) -> None:
        super().__init__(None, **options)
        # Django's DATABASES is the one source of the connection settings: not
        # PGQUEUE_DATABASE_URL (which App() read), not the embedded server.
        self._dsn = None
        self.database = database
        self.queues = queues
        registry = DjangoTaskRegistry(self)
        registry.update(self.tasks)  # shared tasks were registered by App.__init__
        self.tasks = registry

    def register_task(self, function: Callable[..., R], options: TaskOptions) -> Task[R]:
        """Register ``function`` as ``App.register_task`` does, run at a job boundary.

        See ``at_job_boundary``. Registering the same function again (shared
        tasks do) returns the task already registered.
        """
        existing = dict.get(self.tasks, options.name or function.__name__)
        if existing is not None and getattr(existing.func, "__wrapped__", None) is function:
            return existing
        return super().register_task(at_job_boundary(function), options)

    def __repr__(self) -> str:
        where = redact_dsn(self._dsn) if self._dsn else "not connected yet"
        return (
            f"<pgqueue.contrib.django.DjangoApp database={self.database} ({where})"
            f" schema={self.schema} tasks={len(self.tasks)}>"
        )

    @property
    def dsn(self) -> str:
        """The libpq URL of ``DATABASES[database]`` (as Django connects to it now)."""
        if self._dsn is None:
            with self._lock:
                if self._dsn is None:
                    settings_dict = connections[self.database].settings_dict
                    self._dsn = normalize_dsn(
                        dsn_from_database_settings(settings_dict, self.database)
                    )
        return self._dsn

    def forget_database(self) -> None:
        """Close this app's connections and read the DSN again on next use."""
        self.close()
        self._dsn = None

    def django_connection(self) -> BaseDatabaseWrapper:
        """Django's connection (of this thread) to pgqueue's database."""
        return connections[self.database]

    def run(
        self, sql: str, params: Mapping[str, Any], connection: object | None = None
    ) -> list[Row]:
        """Run a statement; inside ``transaction.atomic()`` on Django's connection.

        A Django connection (given, or chosen because a block is open) is used
        through its cursor, and jsonb values come back decoded, as they do on
        pgqueue's own connections (Django's psycopg setup loads jsonb as text).
        """
        if connection is None:
            django_connection = connections[self.database]
            if django_connection.in_atomic_block:
                connection = django_connection
        if isinstance(connection, BaseDatabaseWrapper):
            return self._run_on_django(connection, sql, params)
        return super().run(sql, params, connection)

    def _run_on_django(
        self, connection: BaseDatabaseWrapper, sql: str, params: Mapping[str, Any]
    ) -> list[Row]:
        rendered = queries.render(sql, self.schema)
        with connection.cursor() as cursor:
            cursor.execute(rendered, dict(params))
            description = cursor.description
            if description is None:
                return []
            jsonb = [
                index
                for index, column in enumerate(description)
                if getattr(column, "type_code", None) == JSONB_OID
            ]
            rows = cursor.fetchall()
        if not jsonb:
            return [tuple(row) for row in rows]
        decoded: list[Row] = []
        for row in rows:
            values = list(row)
            for index in jsonb:
                if isinstance(values[index], (str, bytes)):
                    values[index] = json.loads(values[index])
            decoded.append(tuple(values))
        return decoded


_app: DjangoApp | None = None
_app_lock = threading.Lock()


def get_app() -> DjangoApp:
    """The project's pgqueue App, created from ``settings.PGQUEUE`` on first call.

    Use it in ``tasks.py`` like any App: ``app = get_app()``, then ``@app.task``.

    Raises:
        django.core.exceptions.ImproperlyConfigured: PGQUEUE is invalid.
    """
    global _app
    if _app is None:
        with _app_lock:
            if _app is None:
                conf = pgqueue_settings()
                _app = DjangoApp(
                    database=conf.database,
                    queues=conf.queues,
                    schema=conf.schema,
                    **dict(conf.app_options),
                )
    return _app


def reset_app() -> None:
    """Forget the App (closing its connections); the next ``get_app()`` reads PGQUEUE again.

    ``PGQUEUE`` is read once, by the first ``get_app()``. Tasks registered on the
    old App with ``@app.task`` stay on it, so this is for tests that need an App
    built from other settings, not for production code.
    """
    global _app
    with _app_lock:
        old, _app = _app, None
    if old is not None:
        old.close()


def forget_database() -> None:
    """``DATABASES`` changed: the App reconnects with the new settings on next use."""
    if _app is not None:
        _app.forget_database()
