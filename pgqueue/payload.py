"""Arguments and results as JSON: encoding, limits, and redaction of secrets."""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from pgqueue.errors import PayloadTooLargeError, SerializationError

__all__ = [
    "MAX_PAYLOAD_BYTES_DEFAULT",
    "REDACTED",
    "dump_args",
    "dump_result",
    "redact",
    "scrub_secrets",
]

MAX_PAYLOAD_BYTES_DEFAULT = 256 * 1024
REDACTED = "[REDACTED]"

JsonDefault = Callable[[Any], Any]

# Keys whose values never reach a log line, an error message, `jobs show` or a metric.
# Matched against the words of a key ("apiKey", "api-key", "API_KEY" -> api, key),
# so that "passenger_count" or "author" are not mistaken for secrets.
_SECRET_WORDS = frozenset(
    {
        "password", "passwd", "pwd", "pass", "passphrase", "secret", "secrets", "token",
        "tokens", "apikey", "auth", "authorization", "credential", "credentials", "cookie",
        "cookies", "signature", "otp", "pin", "ssn", "dsn",
    }
)
_SECRET_PAIRS = frozenset(
    {("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key"),
     ("session", "id"), ("session", "key"), ("card", "number"), ("client", "secret")}
)
_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|[^A-Za-z0-9]+")


def _dumps(value: Any, default: JsonDefault | None) -> str:
    # Compact separators: the row, the WAL and every read get smaller.
    return json.dumps(value, allow_nan=False, separators=(",", ":"), default=default)


# PostgreSQL's jsonb refuses two things json.dumps happily writes: the escape
# \u0000 (text cannot hold NUL) and unpaired surrogate escapes (\ud800 alone is
# not Unicode). Found only after SQL ran, they would abort the caller's
# transaction, so they are refused here. ensure_ascii output spells both as
# escapes, which makes this cheap pre-check exact enough to decide when to walk.
_JSONB_SUSPECT = re.compile(r"\\u(?:0000|d[89a-f][0-9a-f]{2})")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _bad_text(text: str) -> str:
    """Why PostgreSQL's jsonb would refuse the string ``text``, or ``""``."""
    if "\x00" in text:
        return "strings cannot contain the NUL character (\\u0000); PostgreSQL's jsonb rejects it"
    if _SURROGATE.search(text):
        return (
            "strings cannot contain unpaired surrogates (\\ud800-\\udfff); they are not"
            " Unicode text and PostgreSQL's jsonb rejects them"
        )
    return ""


def _locate_unstorable(value: Any, path: str = "$") -> tuple[str, str]:
    """In decoded JSON, the first string (key or value) jsonb refuses: (JSONPath, reason)."""
    if isinstance(value, str):
        reason = _bad_text(value)
        return (path, reason) if reason else ("", "")
    if isinstance(value, dict):
        for key, item in value.items():
            reason = _bad_text(key)
            if reason:
                return path, f"key {key!r}: {reason}"
            found = _locate_unstorable(item, f"{path}.{key}")
            if found[0]:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _locate_unstorable(item, f"{path}[{index}]")
            if found[0]:
                return found
    return "", ""


def _unstorable(text: str) -> tuple[str, str]:
    """(JSONPath, reason) of what jsonb would refuse in the JSON ``text``, else ("", "")."""
    if not _JSONB_SUSPECT.search(text):
        return "", ""
    try:
        return _locate_unstorable(json.loads(text))
    except RecursionError:
        return "", ""  # json.dumps managed the depth; PostgreSQL will judge it


def _locate_problem(
    value: Any, default: JsonDefault | None, path: str = "$", active: frozenset[int] = frozenset()
) -> tuple[str, str]:
    """Walk ``value`` to find the first part json.dumps refuses: (JSONPath, reason).

    ``active`` holds the ids of the containers on the current path, so a
    container that holds itself is reported instead of recursing forever.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return path, "NaN/Infinity are not allowed"
    if isinstance(value, (Mapping, list, tuple)):
        if id(value) in active:
            return path, "circular reference (a container holds itself)"
        active = active | {id(value)}
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                return path, f"keys must be strings, got {type(key).__name__}"
            found = _locate_problem(item, default, f"{path}.{key}", active)
            if found[0]:
                return found
        return "", ""
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _locate_problem(item, default, f"{path}[{index}]", active)
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
        return _locate_problem(converted, None, path, active)
    return path, f"Object of type {type(value).__name__} is not JSON serializable"


def _find_problem(value: Any, default: JsonDefault | None) -> tuple[str, str]:
    """``_locate_problem`` that survives values nested deeper than Python's recursion limit."""
    try:
        return _locate_problem(value, default)
    except RecursionError:
        return "$", "nested too deeply to encode"


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
        path, reason = _find_problem(args, default)
        if "NaN" in reason:
            raise SerializationError(
                f"args for task '{task}' are not valid JSON at {path}: {reason}"
            ) from None
        hint = " (pass an ISO-8601 string or register an encoder)"
        if reason.startswith(("circular", "nested")):
            hint = ""  # an encoder helps only when a value of a non-JSON type was met
        raise SerializationError(
            f"args for task '{task}' are not JSON-serializable at {path or '$'}: "
            f"{reason or error}{hint}"
        ) from None
    path, reason = _unstorable(text)
    if reason:
        raise SerializationError(f"args for task '{task}' are not valid JSON at {path}: {reason}")
    size = len(text.encode())
    if size > max_bytes:
        raise PayloadTooLargeError(
            f"args for task '{task}' serialize to {size:,} bytes; the limit is {max_bytes:,}"
            " (max_payload_bytes). Store the data elsewhere and pass a reference."
        )
    return text


def dump_result(task: str, value: Any, default: JsonDefault | None = None) -> str:
    """Encode a task's return value; raises SerializationError naming the path."""
    if value is None:  # most tasks return nothing; skip the encoder
        return "null"
    try:
        text = _dumps(value, default)
    except (TypeError, ValueError, OverflowError, RecursionError) as error:
        path, reason = _find_problem(value, default)
        raise SerializationError(
            f"result of task '{task}' is not JSON-serializable at {path or '$'}: "
            f"{reason or error} (return JSON types: dict, list, str, int, float, bool, None)"
        ) from None
    # Refused here, a bad result fails its own job; refused by PostgreSQL, it
    # would fail the whole batch of completions it was sent with.
    path, reason = _unstorable(text)
    if reason:
        raise SerializationError(f"result of task '{task}' is not valid JSON at {path}: {reason}")
    return text


def is_secret_key(key: str) -> bool:
    """Whether a key name looks like it holds a secret (password, api_key, authToken...)."""
    words = [word.lower() for word in _WORD_BOUNDARY.split(key) if word]
    if any(word in _SECRET_WORDS for word in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


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


def _secret_values(value: Any, found: set[str]) -> set[str]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            secret = isinstance(key, str) and is_secret_key(key)
            if secret and isinstance(item, (str, int, float)) and item != "":
                found.add(str(item))
            _secret_values(item, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _secret_values(item, found)
    return found


def scrub_secrets(text: str, args: Any) -> str:
    """``text`` with every value of a secret-looking key of ``args`` replaced by ``[REDACTED]``.

    Values shorter than 4 characters are left alone: replacing "1" everywhere
    would make the text useless without protecting anything.
    """
    for secret in sorted(_secret_values(args, set()), key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return text
