"""Database URLs: where they come from, how they are checked, how they are shown.

A URL is shown to humans only through ``redact_dsn``: the password becomes ``***``.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

import psycopg.conninfo

from pgqueue.errors import InvalidDatabaseURL

__all__ = [
    "DSN_ENV_VAR",
    "connection_failure_reason",
    "error_summary",
    "normalize_dsn",
    "redact_dsn",
    "redact_text",
    "resolve_dsn",
]

DSN_ENV_VAR = "PGQUEUE_DATABASE_URL"

# "postgresql+psycopg://" and friends are SQLAlchemy spellings; libpq wants the bare scheme.
_DRIVER_SUFFIX = re.compile(r"^(postgres(?:ql)?)\+[a-z0-9_]+://", re.IGNORECASE)
_URL_PASSWORD = re.compile(
    r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@\s]*)(?=@)", re.IGNORECASE
)
_KEYWORD_PASSWORD = re.compile(
    r"(?P<head>\bpassword\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE
)


def redact_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***`` (URL or key=value form)."""
    return redact_text(dsn)


def redact_text(text: str) -> str:
    """Replace every DSN password inside free text (for error messages and logs)."""
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + "***", text)
    return _KEYWORD_PASSWORD.sub(lambda m: m.group("head") + "***", text)


def error_summary(error: BaseException, empty: str = "") -> str:
    """The first line of ``error``'s message with passwords masked (``empty`` if none)."""
    text = str(error).strip()
    return redact_text(text.splitlines()[0]) if text else empty


def normalize_dsn(dsn: str) -> str:
    """Check that ``dsn`` parses and return it in the form libpq accepts.

    Raises:
        InvalidDatabaseURL: the URL cannot be parsed; the message shows it redacted.
    """
    dsn = dsn.strip()
    dsn = _DRIVER_SUFFIX.sub(lambda m: m.group(1) + "://", dsn)
    if "://" in dsn:
        parts = urlsplit(dsn)
        if parts.scheme.lower() not in ("postgres", "postgresql"):
            raise InvalidDatabaseURL(
                f"invalid database URL '{redact_dsn(dsn)}': scheme must be postgresql://"
            )
        try:
            parts.port  # noqa: B018 - urllib validates the port only when asked
        except ValueError:
            port = parts.netloc.rsplit("@", 1)[-1].rsplit(":", 1)[-1]
            raise InvalidDatabaseURL(
                f"invalid database URL '{redact_dsn(dsn)}': invalid port '{port}'"
            ) from None
        dsn = urlunsplit(parts)
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as error:
        reason = error_summary(error)
        raise InvalidDatabaseURL(f"invalid database URL '{redact_dsn(dsn)}': {reason}") from None
    return dsn


def resolve_dsn(dsn: str | None) -> str | None:
    """The explicit ``dsn``, else ``$PGQUEUE_DATABASE_URL``, else ``None`` (embedded)."""
    chosen = dsn or os.environ.get(DSN_ENV_VAR) or None
    return normalize_dsn(chosen) if chosen else None


def connection_failure_reason(error: BaseException) -> str:
    """The useful part of libpq's connection error, password redacted, on one line.

    libpq says ``connection failed: connection to server at "db", port 5432
    failed: FATAL: password authentication failed for user "app"`` and adds hint
    lines; keep the innermost reason of the first line.
    """
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    reason = lines[0].removeprefix("connection failed: ")
    if reason.startswith("connection to server") and " failed: " in reason:
        reason = reason.split(" failed: ", 1)[1]
    return redact_text(reason.removeprefix("FATAL:  ").removeprefix("FATAL: "))
