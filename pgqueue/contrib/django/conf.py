"""The ``PGQUEUE`` setting, and Django database settings as a libpq URL (and back).

``PGQUEUE`` is optional; every key has a default::

    PGQUEUE = {
        "DATABASE": "default",      # the DATABASES alias that holds pgqueue's schema
        "SCHEMA": "pgqueue",        # pgqueue's schema in that database
        "QUEUES": ["default"],      # what `manage.py pgqueue_work` serves without -Q
        "AUTODISCOVER": True,       # import each installed app's tasks.py when Django starts
        # any pgqueue.App option, upper-cased: MAX_PAYLOAD_BYTES, POOL_SIZE,
        # CONNECT_TIMEOUT, TASK_ROUTES, JSON_DEFAULT
    }

The database's connection settings (``DATABASES[alias]``) become pgqueue's
DSN, so there is one place to configure the database. The password is part of
that DSN and is never logged: pgqueue shows DSNs redacted (``***``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import psycopg.conninfo
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from pgqueue.dsn import error_summary
from pgqueue.errors import PgqueueError
from pgqueue.schema import DEFAULT_SCHEMA, validate_schema_name
from pgqueue.tasks import QUEUE_DEFAULT, validate_queue

__all__ = [
    "PgqueueSettings",
    "database_from_url",
    "dsn_from_database_settings",
    "pgqueue_settings",
]

POSTGRES_ENGINES = frozenset(
    {
        "django.db.backends.postgresql",
        "django.db.backends.postgresql_psycopg2",
        "django.contrib.gis.db.backends.postgis",
    }
)

# App() keyword arguments that PGQUEUE may set (upper-cased there, as Django settings are).
APP_OPTIONS = frozenset(
    {"max_payload_bytes", "json_default", "pool_size", "connect_timeout", "task_routes"}
)
OWN_KEYS = frozenset({"DATABASE", "SCHEMA", "QUEUES", "AUTODISCOVER"})

# Connection parameters libpq understands. Django's OPTIONS may also hold Django-only
# keys (isolation_level, server_side_binding, pool, assume_role...): those must not
# reach libpq, which rejects any parameter it does not know.
LIBPQ_PARAMETERS = frozenset(
    {
        "application_name", "channel_binding", "client_encoding", "connect_timeout",
        "fallback_application_name", "gssdelegation", "gssencmode", "gsslib", "hostaddr",
        "keepalives", "keepalives_count", "keepalives_idle", "keepalives_interval",
        "krbsrvname", "load_balance_hosts", "max_protocol_version", "min_protocol_version",
        "options", "passfile", "replication", "require_auth", "requirepeer", "requiressl",
        "service", "ssl_max_protocol_version", "ssl_min_protocol_version", "sslcert",
        "sslcertmode", "sslcompression", "sslcrl", "sslcrldir", "sslkey", "sslkeylogfile",
        "sslmode", "sslnegotiation", "sslpassword", "sslrootcert", "sslsni",
        "target_session_attrs", "tcp_user_timeout",
    }
)  # fmt: skip


@dataclass(frozen=True)
class PgqueueSettings:
    """``settings.PGQUEUE``, validated, with defaults filled in."""

    database: str = "default"
    schema: str = DEFAULT_SCHEMA
    queues: tuple[str, ...] = (QUEUE_DEFAULT,)
    autodiscover: bool = True
    app_options: Mapping[str, Any] = field(default_factory=dict)


def pgqueue_settings() -> PgqueueSettings:
    """Read and check ``settings.PGQUEUE``.

    Raises:
        ImproperlyConfigured: an unknown key, a bad schema or queue name, or a
            DATABASE alias missing from ``DATABASES``.
    """
    raw = getattr(settings, "PGQUEUE", None) or {}
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(f"PGQUEUE must be a dict, got {type(raw).__name__}")
    app_options: dict[str, Any] = {}
    for key, value in raw.items():
        if key in OWN_KEYS:
            continue
        if not isinstance(key, str) or key.lower() not in APP_OPTIONS:
            known = sorted(OWN_KEYS | {name.upper() for name in APP_OPTIONS})
            raise ImproperlyConfigured(
                f"PGQUEUE has an unknown key {key!r}; known keys: {', '.join(known)}"
            )
        app_options[key.lower()] = value
    database = raw.get("DATABASE", "default")
    if database not in settings.DATABASES:
        raise ImproperlyConfigured(
            f"PGQUEUE['DATABASE'] is {database!r}, which is not in DATABASES"
            f" ({', '.join(sorted(settings.DATABASES))})"
        )
    schema = raw.get("SCHEMA", DEFAULT_SCHEMA)
    queues = raw.get("QUEUES", [QUEUE_DEFAULT])
    if isinstance(queues, str):
        queues = [part.strip() for part in queues.split(",") if part.strip()]
    try:
        validate_schema_name(schema)
        checked_queues = tuple(validate_queue(queue) for queue in queues)
    except (ValueError, PgqueueError) as error:
        raise ImproperlyConfigured(f"PGQUEUE: {error}") from None
    if not checked_queues:
        raise ImproperlyConfigured("PGQUEUE['QUEUES'] is empty; list at least one queue")
    return PgqueueSettings(
        database=database,
        schema=schema,
        queues=checked_queues,
        autodiscover=bool(raw.get("AUTODISCOVER", True)),
        app_options=app_options,
    )


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def dsn_from_database_settings(database: Mapping[str, Any], alias: str = "default") -> str:
    """A libpq URL for one ``DATABASES`` entry (a connection's ``settings_dict``).

    A socket directory (``HOST`` starting with ``/``) and the port go in the query
    string, where libpq reads them; OPTIONS keys libpq knows are kept, Django-only
    ones dropped.

    Raises:
        ImproperlyConfigured: the database is not PostgreSQL.
    """
    engine = database.get("ENGINE", "")
    if engine not in POSTGRES_ENGINES:
        raise ImproperlyConfigured(
            f"pgqueue needs a PostgreSQL database, but DATABASES[{alias!r}] uses {engine!r};"
            " point PGQUEUE['DATABASE'] at a database using django.db.backends.postgresql"
        )
    user = _text(database.get("USER") or "")
    password = _text(database.get("PASSWORD") or "")
    host = _text(database.get("HOST") or "")
    port = _text(database.get("PORT") or "")
    name = _text(database.get("NAME") or "")
    query: dict[str, str] = {}
    options = database.get("OPTIONS") or {}
    for key, value in options.items():
        if key in LIBPQ_PARAMETERS and value is not None:
            query[key] = _text(value)
    netloc = ""
    if user:
        netloc = quote(user, safe="")
        if password:
            netloc += ":" + quote(password, safe="")
        netloc += "@"
    if host.startswith("/") or "," in host:
        query["host"] = host  # socket directory or several hosts: libpq reads them here
        if port:
            query["port"] = port
    else:
        if ":" in host:
            host = f"[{host}]"  # IPv6 literal
        netloc += host + (f":{port}" if port else "")
    url = f"postgresql://{netloc}/{quote(name, safe='')}"
    if query:
        url += "?" + urlencode(query, quote_via=quote)
    return url


def database_from_url(url: str, **extra: Any) -> dict[str, Any]:
    """A ``DATABASES`` entry for a PostgreSQL URL (or key=value DSN).

    ``extra`` keys (``CONN_MAX_AGE``, ``TEST``...) are added as given. Connection
    parameters other than host, port, user, password and dbname go to OPTIONS.

    Raises:
        ImproperlyConfigured: the URL does not parse (the message hides the password).
    """
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as error:
        reason = error_summary(error)
        raise ImproperlyConfigured(f"invalid database URL: {reason}") from None
    params = {key: _text(value) for key, value in params.items() if value is not None}
    entry: dict[str, Any] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params.pop("dbname", ""),
        "USER": params.pop("user", ""),
        "PASSWORD": params.pop("password", ""),
        "HOST": params.pop("host", ""),
        "PORT": params.pop("port", ""),
        "OPTIONS": params,
    }
    entry.update(extra)
    return entry
