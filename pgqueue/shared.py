"""``shared_task``: tasks for libraries and reusable apps that do not know the App.

Celery's ``@shared_task`` registers a task with every app and resolves to the
current one when called. pgqueue does the same: a shared task is registered on
every ``App`` (those created before and after it), and ``delay()``/``enqueue()``
use the current app — the one created last, or the one made current with
``app.set_as_current()``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from pgqueue.errors import ConfigurationError
from pgqueue.retry import BACKOFF_MAX_DEFAULT
from pgqueue.task_options import TaskOptions, build_task_options

if TYPE_CHECKING:
    from pgqueue.app import App
    from pgqueue.tasks import Task

__all__ = ["SharedTask", "attach", "current_app", "set_current", "shared_task"]

R = TypeVar("R")

_lock = threading.Lock()
_apps: weakref.WeakSet[App] = weakref.WeakSet()
_current: weakref.ref[App] | None = None
_shared: list[tuple[Callable[..., Any], TaskOptions]] = []


def attach(app: App) -> None:
    """Register every shared task on ``app`` and make it the current app."""
    global _current
    with _lock:
        _apps.add(app)
        _current = weakref.ref(app)
        pending = list(_shared)
    for function, options in pending:
        app.register_task(function, options)


def set_current(app: App) -> None:
    global _current
    with _lock:
        _current = weakref.ref(app)


def current_app() -> App:
    """The App shared tasks use now; raises ConfigurationError if none exists."""
    app = _current() if _current is not None else None
    if app is None:
        raise ConfigurationError(
            "a shared task was used before any pgqueue.App was created; create your App"
            " (for example in myproject/tasks.py) before enqueueing"
        )
    return app


class SharedTask(Generic[R]):
    """A shared task: calls run the function; enqueue methods use the current app."""

    def __init__(self, function: Callable[..., R], options: TaskOptions) -> None:
        self.function = function
        self.options = options
        self.name = options.name or function.__name__
        self.__name__ = getattr(function, "__name__", self.name)
        self.__doc__ = function.__doc__
        self.__wrapped__ = function

    def __repr__(self) -> str:
        return f"<SharedTask {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        return self.function(*args, **kwargs)

    @property
    def task(self) -> Task[R]:
        """This task as registered on the current app."""
        app = current_app()
        registered = app.tasks.get(self.name)
        if registered is None or registered.func is not self.function:
            registered = app.register_task(self.function, self.options)
        return registered

    def __getattr__(self, attribute: str) -> Any:
        # enqueue, enqueue_async, delay, apply_async, prepare, queue... of the bound Task.
        return getattr(self.task, attribute)


@overload
def shared_task(func: Callable[..., R], /) -> SharedTask[R]: ...


@overload
def shared_task(
    func: None = None, /, **options: Any
) -> Callable[[Callable[..., R]], SharedTask[R]]: ...


def shared_task(
    func: Callable[..., R] | None = None, /, **options: Any
) -> SharedTask[R] | Callable[[Callable[..., R]], SharedTask[R]]:
    """Declare a task without an App; it is registered on every App.

    Takes the same options as ``@app.task`` (pgqueue's and Celery's names).
    """
    native = {
        key: options.pop(key, default)
        for key, default in (
            ("name", None), ("queue", None), ("priority", None), ("max_attempts", None),
            ("timeout", None), ("retry_for", None), ("retry_backoff", None),
            ("retry_backoff_max", BACKOFF_MAX_DEFAULT), ("retry_jitter", True),
            ("pass_context", False),
        )
    }
    task_options = build_task_options(**native, extra=options)

    def register(function: Callable[..., R]) -> SharedTask[R]:
        with _lock:
            _shared.append((function, task_options))
            apps = list(_apps)
        for app in apps:
            app.register_task(function, task_options)
        return SharedTask(function, task_options)

    if func is not None:
        return register(func)
    return register
