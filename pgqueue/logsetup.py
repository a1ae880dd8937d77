"""Logging for the CLI: Celery-like text lines, or JSON for log shippers."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from pgqueue.dsn import redact_text

__all__ = ["configure_logging"]

LEVELS = ("debug", "info", "warning", "error", "critical")


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": record.process,
            "thread": record.threadName,
            "message": redact_text(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(entry)


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Send pgqueue's (and the tasks') log records to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            _RedactingFormatter("[%(asctime)s: %(levelname)s/%(processName)s] %(message)s")
        )
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
