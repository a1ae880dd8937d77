"""Settings: PGQUEUE, and Django's database settings as a libpq URL."""

from __future__ import annotations

import psycopg.conninfo
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from pgqueue.contrib.django.app import DjangoApp
from pgqueue.contrib.django.conf import (
    database_from_url,
    dsn_from_database_settings,
    pgqueue_settings,
)
from pgqueue.errors import DatabaseUnavailableError

BASE = {"ENGINE": "django.db.backends.postgresql", "NAME": "shop", "USER": "app"}


def parsed(url: str) -> dict[str, str]:
    return {k: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(url).items()}


def test_tcp_settings_become_a_url_with_the_password_quoted() -> None:
    url = dsn_from_database_settings(
        {**BASE, "PASSWORD": "p@ss:w/rd %", "HOST": "db.internal", "PORT": 6432}
    )
    assert url.startswith("postgresql://app:")
    assert parsed(url) == {
        "user": "app",
        "password": "p@ss:w/rd %",
        "host": "db.internal",
        "port": "6432",
        "dbname": "shop",
    }


def test_socket_directories_ipv6_and_options() -> None:
    socket = dsn_from_database_settings({**BASE, "HOST": "/var/run/postgresql", "PORT": "5433"})
    assert parsed(socket)["host"] == "/var/run/postgresql"
    assert parsed(socket)["port"] == "5433"
    ipv6 = dsn_from_database_settings({**BASE, "HOST": "::1", "PORT": "5432"})
    assert parsed(ipv6)["host"] == "::1"
    with_options = dsn_from_database_settings(
        {
            **BASE,
            "OPTIONS": {
                "sslmode": "require",
                "options": "-c statement_timeout=5s",
                "isolation_level": 3,  # Django's, not libpq's: dropped
                "server_side_binding": True,
            },
        }
    )
    assert parsed(with_options)["sslmode"] == "require"
    assert parsed(with_options)["options"] == "-c statement_timeout=5s"
    assert "isolation_level" not in with_options
    assert "server_side_binding" not in with_options


def test_only_postgresql_databases_can_hold_pgqueue() -> None:
    with pytest.raises(ImproperlyConfigured, match="needs a PostgreSQL database"):
        dsn_from_database_settings({"ENGINE": "django.db.backends.sqlite3", "NAME": "x"})


def test_database_from_url_round_trips() -> None:
    url = "postgresql://app:s%40cret@db:5433/shop?sslmode=require"
    entry = database_from_url(url, CONN_MAX_AGE=60)
    assert entry["ENGINE"] == "django.db.backends.postgresql"
    assert (entry["NAME"], entry["USER"], entry["PASSWORD"]) == ("shop", "app", "s@cret")
    assert (entry["HOST"], entry["PORT"], entry["CONN_MAX_AGE"]) == ("db", "5433", 60)
    assert entry["OPTIONS"] == {"sslmode": "require"}
    assert parsed(dsn_from_database_settings(entry)) == parsed(url)
    with pytest.raises(ImproperlyConfigured, match="invalid database URL"):
        database_from_url("postgresql://app:secret@db:notaport/x?bogus_param=1")


def test_pgqueue_setting_defaults_and_errors() -> None:
    with override_settings(PGQUEUE=None):
        conf = pgqueue_settings()
    assert (conf.database, conf.schema, conf.queues) == ("default", "pgqueue", ("default",))
    with override_settings(PGQUEUE={"QUEUES": "high, low", "POOL_SIZE": 2, "SCHEMA": "jobs"}):
        conf = pgqueue_settings()
    assert conf.queues == ("high", "low")
    assert conf.schema == "jobs"
    assert conf.app_options == {"pool_size": 2}
    for bad, message in (
        ({"WORKERS": 3}, "unknown key 'WORKERS'"),
        ({"DATABASE": "missing"}, "not in DATABASES"),
        ({"SCHEMA": "Bad-Schema"}, "invalid schema name"),
        ({"QUEUES": ["OK?"]}, "invalid queue name"),
        ({"QUEUES": []}, "empty"),
    ):
        with override_settings(PGQUEUE=bad), pytest.raises(ImproperlyConfigured, match=message):
            pgqueue_settings()


def test_the_password_is_never_shown() -> None:
    app = DjangoApp(database="default", connect_timeout=1)
    app.use_database("postgresql://app:hunter2@127.0.0.1:1/shop")
    assert "hunter2" not in repr(app)
    with pytest.raises(DatabaseUnavailableError) as raised:
        app.connect()
    assert "hunter2" not in str(raised.value)
    assert "***" in str(raised.value)
