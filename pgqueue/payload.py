"""Arguments and results as JSON: encoding, limits, and redaction of secrets."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from pgqueue.errors import PayloadTooLargeError, SerializationError

__all__ = ["MAX_PAYLOAD_BYTES_DEFAULT", "REDACTED", "dump_args", "dump_result", "redact"]

MAX_PAYLOAD_BYTES_DEFAULT = 256 * 1024
REDACTED = "[REDACTED]"

JsonDefault = Callable[[Any], Any]

# Keys whose values never reach a log line, an error message, `jobs show` or a metric.
_SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[_-]?key|apikey|auth|credential|private[_-]?key"
    r"|session[_-]?id|cookie|signature",
    re.IGNORECASE,
)


def _dumps(value: Any, default: JsonDefault | None) -> str:
    # Compact separators: the row, the WAL and every read get smaller.
    return json.dumps(value, allow_nan=False, separators=(",", ":"), default=default)


def _locate_problem(value: Any, default: JsonDefault | None, path: str = "$") -> tuple[str, str]:
    """Walk ``value`` to find the first part json.dumps refuses: (JSONPath, reason)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, "NaN/Infinity are not allowed"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                return path, f"keys must be strings, got {type(key).__name__}"
            found = _locate_problem(item, default, f"{path}.{key}")
            if found[0]:
                return found
        return "", ""
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _locate_problem(item, default, f"{path}[{index}]")
            if found[0]:
                return found
        return "", ""
    if value is None or isinstance(value, (str, int, float, bool)):
        return "", ""
    if default is not None:
        try:
            converted = default(value)
        except (TypeError, ValueError) as error:
            return path, str(error)
        return _locate_problem(converted, None, path)
    return path, f"Object of type {type(value).__name__} is not JSON serializable"


def dump_args(
    task: str,
    args: Mapping[str, Any],
    *,
    max_bytes: int = MAX_PAYLOAD_BYTES_DEFAULT,
    default: JsonDefault | None = None,
) -> str:
    """Encode a job's arguments, or raise naming the JSON path and the fix.

    Raises:
        SerializationError: a value is not JSON (or is NaN/Infinity).
        PayloadTooLargeError: the encoding is longer than ``max_bytes`` bytes.
    """
    try:
        text = _dumps(args, default)
    except (TypeError, ValueError, OverflowError, RecursionError) as error:
        path, reason = _locate_problem(args, default)
        if "NaN" in reason:
            raise SerializationError(
                f"args for task '{task}' are not valid JSON at {path}: {reason}"
            ) from None
        raise SerializationError(
            f"args for task '{task}' are not JSON-serializable at {path or '$'}: "
            f"{reason or error} (pass an ISO-8601 string or register an encoder)"
        ) from None
    size = len(text.encode())
    if size > max_bytes:
        raise PayloadTooLargeError(
            f"args for task '{task}' serialize to {size:,} bytes; the limit is {max_bytes:,}"
            " (max_payload_bytes). Store the data elsewhere and pass a reference."
        )
    return text


def dump_result(task: str, value: Any, default: JsonDefault | None = None) -> str:
    """Encode a task's return value; raises SerializationError naming the path."""
    try:
        return _dumps(value, default)
    except (TypeError, ValueError, OverflowError, RecursionError) as error:
        path, reason = _locate_problem(value, default)
        raise SerializationError(
            f"result of task '{task}' is not JSON-serializable at {path or '$'}: "
            f"{reason or error} (return JSON types: dict, list, str, int, float, bool, None)"
        ) from None


def is_secret_key(key: str) -> bool:
    """Whether a key name looks like it holds a secret."""
    return bool(_SECRET_KEY.search(key))


def redact(value: Any) -> Any:
    """A copy of ``value`` with the values of secret-looking keys replaced by ``[REDACTED]``."""
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and is_secret_key(key) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(item) for item in value]
    return value
