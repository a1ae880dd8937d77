"""Finding the user's App from an import path such as ``myproject.tasks:app``."""

from __future__ import annotations

import importlib
import os
import sys

from pgqueue.app import App
from pgqueue.errors import ConfigurationError

__all__ = ["load_app"]


def load_app(path: str) -> App:
    """Import ``module:attribute`` (or ``module``, which must define ``app``) and return the App.

    The current directory is importable, as it is for ``celery -A``.
    """
    module_name, _, attribute = path.partition(":")
    attribute = attribute or "app"
    if not module_name:
        raise ConfigurationError(f"invalid app path {path!r}: expected 'module:attribute'")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            raise ConfigurationError(
                f"cannot import app module '{module_name}' (from -A {path}): {error}."
                " Run from the project directory or put it on PYTHONPATH"
            ) from None
        raise
    try:
        app = getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(
            f"module '{module_name}' has no attribute '{attribute}' (from -A {path})"
        ) from None
    if not isinstance(app, App):
        raise ConfigurationError(f"-A {path} is a {type(app).__name__}, not a pgqueue.App")
    return app
