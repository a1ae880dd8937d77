"""Names and limits shared by the schema, the SQL and the validators.

Kept apart from ``schema.py`` so that importing pgqueue does not import
SQLAlchemy: a producer or worker needs these checks, not the table objects.
"""

from __future__ import annotations

import re

from pgqueue.errors import ConfigurationError

__all__ = [
    "CLAIMABLE_STATES",
    "DEFAULT_SCHEMA",
    "MAX_ATTEMPTS_RANGE",
    "PRIORITY_RANGE",
    "QUEUE_NAME_PATTERN",
    "SCHEMA_NAME_PATTERN",
    "STATES",
    "events_channel",
    "notify_channel",
    "validate_schema_name",
]

DEFAULT_SCHEMA = "pgqueue"
QUEUE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.:-]{0,62}$"
# Channel names are identifiers (at most 63 bytes) and embed the schema name
# after a 15-byte prefix and before a 7-byte suffix, hence the 41-byte cap.
SCHEMA_NAME_PATTERN = r"^[a-z_][a-z0-9_]{0,40}$"
PRIORITY_RANGE = (-100, 100)
MAX_ATTEMPTS_RANGE = (1, 100)
STATES = ("queued", "running", "succeeded", "failed", "dead", "cancelled")
CLAIMABLE_STATES = ("queued", "failed")

_schema_re = re.compile(SCHEMA_NAME_PATTERN)


def validate_schema_name(schema: str) -> str:
    """Return ``schema`` if it is a safe identifier, else raise ConfigurationError."""
    if not isinstance(schema, str) or not _schema_re.fullmatch(schema):
        raise ConfigurationError(
            f"invalid schema name {schema!r}: must match {SCHEMA_NAME_PATTERN}"
        )
    return schema


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel on which inserts into ``schema``'s jobs announce their queue."""
    return f"pgqueue_{validate_schema_name(schema)}"


def events_channel(schema: str) -> str:
    """The channel for job events: ``done <ids>`` when jobs finish, ``cancel <id>``."""
    return f"pgqueue_{validate_schema_name(schema)}_events"
