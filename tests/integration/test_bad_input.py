"""Bad input (research/reliability.md §7.3, B1-B10): refused with the exact message, before SQL.

Every refusal is checked three ways: on pgqueue's own connection (nothing is written), inside a
caller's open transaction (which stays usable and keeps its earlier work), and on an App whose
database cannot be reached (the error is still the validation error: no connection was tried).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus

from pgqueue import (
    App,
    ArgumentError,
    ConfigurationError,
    InvalidOptionError,
    PayloadTooLargeError,
    PgqueueError,
    SchemaNotMigratedError,
    SerializationError,
    Task,
    UnknownTaskError,
)
from pgqueue.cli import main
from pgqueue.payload import dump_result
from pgqueue.schema import QUEUE_NAME_PATTERN
from tests.conftest import count_jobs
from tests.support.pg_provision import TestServer

Conn = psycopg.Connection[Any]

UNREACHABLE_DSN = "postgresql://nobody:pw@127.0.0.1:1/none"
SIGNATURE = "send_email(to: str, subject: str = ...)"
LIMIT = 262_144
# {"data":"<n characters>"} encodes to n + 11 bytes.
ENVELOPE = len(json.dumps({"data": ""}, separators=(",", ":")))


@dataclass(frozen=True)
class Tasks:
    app: App
    send_email: Task[None]
    import_csv: Task[None]


def register(app: App) -> Tasks:
    @app.task(queue="emails")
    def send_email(to: str, subject: str = "hello") -> None:
        pass

    @app.task
    def import_csv(data: str) -> None:
        pass

    return Tasks(app, send_email, import_csv)


def payload_of(size: int) -> str:
    """A ``data`` argument whose args encode to exactly ``size`` bytes."""
    return "x" * (size - ENVELOPE)


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[Tasks, object | None], object]
    error: type[Exception]
    message: str


def _cyclic() -> dict[str, Any]:
    args: dict[str, Any] = {"to": "a@example.com", "loop": []}
    args["loop"].append(args)
    return args


def _enqueue_to_queue(queue: str) -> Callable[[Tasks, object | None], object]:
    return lambda t, c: t.send_email.enqueue("a", queue=queue, connection=c)


NOW = datetime(2025, 1, 1, 12, 0)
BAD_QUEUES = ["default; DROP TABLE pgqueue.jobs", "", "q" * 64, "Ünïcode", "a\x00b"]

CASES = [
    Case(
        "B1-datetime",
        lambda t, c: t.app.enqueue(
            "send_email", {"to": "a@example.com", "when": NOW}, connection=c
        ),
        SerializationError,
        "args for task 'send_email' are not JSON-serializable at $.when: Object of type datetime"
        " is not JSON serializable (pass an ISO-8601 string or register an encoder)",
    ),
    Case(
        "B1-task-kwarg",
        lambda t, c: t.send_email.enqueue("a@example.com", subject=NOW, connection=c),
        SerializationError,
        "args for task 'send_email' are not JSON-serializable at $.subject: Object of type"
        " datetime is not JSON serializable (pass an ISO-8601 string or register an encoder)",
    ),
    Case(
        "B1-nested-path",
        lambda t, c: t.app.enqueue(
            "send_email", {"to": "a", "meta": {"items": [1, {2}]}}, connection=c
        ),
        SerializationError,
        "args for task 'send_email' are not JSON-serializable at $.meta.items[1]: Object of"
        " type set is not JSON serializable (pass an ISO-8601 string or register an encoder)",
    ),
    Case(
        "B1-circular",
        lambda t, c: t.app.enqueue("send_email", _cyclic(), connection=c),
        SerializationError,
        "args for task 'send_email' are not JSON-serializable at $.loop[0]: circular reference"
        " (a container holds itself)",
    ),
    Case(
        "B1b-nan",
        lambda t, c: t.app.enqueue("send_email", {"x": float("nan")}, connection=c),
        SerializationError,
        "args for task 'send_email' are not valid JSON at $.x: NaN/Infinity are not allowed",
    ),
    Case(
        "B1b-infinity",
        lambda t, c: t.send_email.enqueue(float("-inf"), connection=c),
        SerializationError,
        "args for task 'send_email' are not valid JSON at $.to: NaN/Infinity are not allowed",
    ),
    Case(
        "B1c-nul-character",
        lambda t, c: t.send_email.enqueue("a\x00b@example.com", connection=c),
        SerializationError,
        "args for task 'send_email' are not valid JSON at $.to: strings cannot contain the NUL"
        " character (\\u0000); PostgreSQL's jsonb rejects it",
    ),
    Case(
        "B1c-lone-surrogate",
        lambda t, c: t.send_email.enqueue("a@example.com", subject="\ud800", connection=c),
        SerializationError,
        "args for task 'send_email' are not valid JSON at $.subject: strings cannot contain"
        " unpaired surrogates (\\ud800-\\udfff); they are not Unicode text and PostgreSQL's"
        " jsonb rejects them",
    ),
    Case(
        "B2-unexpected-kwarg",
        lambda t, c: t.send_email.enqueue(to="a", too="b", connection=c),
        ArgumentError,
        f"task 'send_email' got an unexpected keyword argument 'too' (signature: {SIGNATURE})",
    ),
    Case(
        "B2-missing-argument",
        lambda t, c: t.send_email.enqueue(subject="x", connection=c),
        ArgumentError,
        f"task 'send_email' missing a required argument: 'to' (signature: {SIGNATURE})",
    ),
    Case(
        "B2-too-many-positional",
        lambda t, c: t.send_email.enqueue("a", "b", "c", connection=c),
        ArgumentError,
        f"task 'send_email' too many positional arguments (signature: {SIGNATURE})",
    ),
    Case(
        "B4-unknown-task",
        lambda t, c: t.app.enqueue("send_emial", {"to": "a"}, connection=c),
        UnknownTaskError,
        "no task named 'send_emial' is registered in this process (did you mean"
        " 'send_email'?). Producers that only enqueue can pass check_task=False.",
    ),
    Case(
        "B5-too-large",
        lambda t, c: t.import_csv.enqueue(payload_of(307_200), connection=c),
        PayloadTooLargeError,
        "args for task 'import_csv' serialize to 307,200 bytes; the limit is 262,144"
        " (max_payload_bytes). Store the data elsewhere and pass a reference.",
    ),
    Case(
        "B5-one-byte-over",
        lambda t, c: t.import_csv.enqueue(payload_of(LIMIT + 1), connection=c),
        PayloadTooLargeError,
        "args for task 'import_csv' serialize to 262,145 bytes; the limit is 262,144"
        " (max_payload_bytes). Store the data elsewhere and pass a reference.",
    ),
    *(
        Case(
            f"B7-queue-{index}",
            _enqueue_to_queue(queue),
            InvalidOptionError,
            f"invalid queue name {queue!r}: must match {QUEUE_NAME_PATTERN}",
        )
        for index, queue in enumerate(BAD_QUEUES)
    ),
    Case(
        "B7-queue-not-a-string",
        lambda t, c: t.app.enqueue("send_email", {}, queue=5, connection=c),
        InvalidOptionError,
        f"invalid queue name 5: must match {QUEUE_NAME_PATTERN}",
    ),
    Case(
        "B10-max-attempts-0",
        lambda t, c: t.send_email.enqueue("a", max_attempts=0, connection=c),
        InvalidOptionError,
        "max_attempts must be between 1 and 100, got 0",
    ),
    Case(
        "B10-max-attempts-101",
        lambda t, c: t.send_email.enqueue("a", max_attempts=101, connection=c),
        InvalidOptionError,
        "max_attempts must be between 1 and 100, got 101",
    ),
    Case(
        "B10-priority-1000",
        lambda t, c: t.send_email.enqueue("a", priority=1000, connection=c),
        InvalidOptionError,
        "priority must be between -100 and 100, got 1000",
    ),
    Case(
        "B10-priority-bool",
        lambda t, c: t.send_email.enqueue("a", priority=True, connection=c),
        InvalidOptionError,
        "priority must be between -100 and 100, got True",
    ),
    Case(
        "B10-naive-run-at",
        lambda t, c: t.send_email.enqueue("a", run_at=datetime(2025, 1, 1), connection=c),
        InvalidOptionError,
        "run_at must be timezone-aware (got naive datetime 2025-01-01 00:00:00)",
    ),
    Case(
        "B10-negative-countdown",
        lambda t, c: t.send_email.enqueue("a", countdown=-5, connection=c),
        InvalidOptionError,
        "countdown must be >= 0 seconds, got -5",
    ),
    Case(
        "B10-nan-countdown",
        lambda t, c: t.send_email.enqueue("a", countdown=float("nan"), connection=c),
        InvalidOptionError,
        "countdown must be >= 0 seconds, got nan",
    ),
    Case(
        "B10-run-at-and-countdown",
        lambda t, c: t.send_email.enqueue(
            "a", run_at=datetime(2030, 1, 1, tzinfo=timezone.utc), countdown=5, connection=c
        ),
        InvalidOptionError,
        "pass either run_at or countdown, not both",
    ),
    Case(
        "enqueue-many-not-a-spec",
        lambda t, c: t.app.enqueue_many(
            [t.send_email.prepare("a@example.com"), "send_email"],  # type: ignore[list-item]
            connection=c,
        ),
        InvalidOptionError,
        "enqueue_many takes JobSpec objects (from task.prepare(...) or app.prepare(...));"
        " item 1 is a str",
    ),
    Case(
        "args-not-a-mapping",
        lambda t, c: t.app.enqueue("send_email", ["a"], connection=c),  # type: ignore[arg-type]
        InvalidOptionError,
        "args for task 'send_email' must be a mapping of argument names to values, got list",
    ),
]


def _raises_exactly(case: Case, tasks: Tasks, connection: object | None) -> None:
    with pytest.raises(case.error) as caught:
        case.call(tasks, connection)
    assert str(caught.value) == case.message
    assert isinstance(caught.value, PgqueueError)


@pytest.fixture
def tasks(app: App) -> Tasks:
    return register(app)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_refused_on_own_connection_and_nothing_written(tasks: Tasks, db: Conn, case: Case) -> None:
    """The bad call raises the exact error and no row is written."""
    _raises_exactly(case, tasks, None)
    assert count_jobs(db) == 0


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_refused_in_callers_transaction_which_stays_usable(
    dsn: str, tasks: Tasks, db: Conn, case: Case
) -> None:
    """Inside a caller's transaction the bad call raises, and the transaction commits normally."""
    with psycopg.connect(dsn) as conn:
        before = tasks.send_email.enqueue("before@example.com", connection=conn)
        _raises_exactly(case, tasks, conn)
        assert conn.info.transaction_status is TransactionStatus.INTRANS
        assert conn.execute("SELECT 1").fetchone() == (1,)
        after = tasks.send_email.enqueue("after@example.com", connection=conn)
        conn.commit()
    ids = {row[0] for row in db.execute("SELECT id FROM pgqueue.jobs")}
    assert ids == {before.id, after.id}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_refused_before_any_connection_is_tried(case: Case) -> None:
    """With an unreachable database the validation error still wins: no SQL was attempted."""
    offline = App(UNREACHABLE_DSN, connect_timeout=1)
    try:
        _raises_exactly(case, register(offline), None)
    finally:
        offline.close()


def test_task_defaults_are_validated_at_registration(app: App) -> None:
    """@app.task with an out-of-range default fails when the task is defined."""
    with pytest.raises(InvalidOptionError) as caught:

        @app.task(queue="default; DROP TABLE pgqueue.jobs")
        def bad_queue() -> None: ...

    assert str(caught.value) == (
        f"invalid queue name 'default; DROP TABLE pgqueue.jobs': must match {QUEUE_NAME_PATTERN}"
    )
    with pytest.raises(InvalidOptionError, match=re.escape("priority must be between")):

        @app.task(priority=1000)
        def bad_priority() -> None: ...

    with pytest.raises(InvalidOptionError, match=re.escape("got 0")):

        @app.task(max_attempts=0)
        def bad_attempts() -> None: ...

    with pytest.raises(InvalidOptionError, match=re.escape("invalid queue name ''")):

        @app.task(queue="")
        def empty_queue() -> None: ...

    assert app.tasks == {}


def _schema_shape(db: Conn) -> list[tuple[Any, ...]]:
    """Every relation and column of every schema, to notice any DDL (a DROP, anywhere)."""
    return db.execute(
        "SELECT n.nspname, c.relname, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0"
        " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
        " ORDER BY 1, 2, 4"
    ).fetchall()


def test_b7_bad_queue_names_leave_rows_and_schema_unchanged(tasks: Tasks, db: Conn) -> None:
    """B7: hostile queue names raise ValueError and change neither the rows nor the schema."""
    tasks.send_email.enqueue("existing@example.com")
    shape = _schema_shape(db)
    for queue in BAD_QUEUES:
        with pytest.raises(ValueError, match=re.escape(f"invalid queue name {queue!r}")):
            tasks.send_email.enqueue("a@example.com", queue=queue)
        with pytest.raises(ValueError, match=re.escape(f"invalid queue name {queue!r}")):
            tasks.app.enqueue("send_email", {"to": "a"}, queue=queue, check_task=False)
    assert count_jobs(db) == 1
    assert _schema_shape(db) == shape


_queue_re = re.compile(QUEUE_NAME_PATTERN)
# No "explain" phase: it trips a DeprecationWarning inside hypothesis, which this suite's
# filterwarnings=error turns into an INTERNALERROR that hides the falsifying example.
FUZZ_PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink]


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=FUZZ_PHASES,
)
@given(
    queue=st.one_of(
        st.text(max_size=70),
        st.text(alphabet="az09_.:-AZ ;'\"\\\n\x00é", max_size=66),
        st.from_regex(QUEUE_NAME_PATTERN, fullmatch=True),
    )
)
def test_b7_fuzz_queue_name_is_rejected_or_round_trips(tasks: Tasks, db: Conn, queue: str) -> None:
    """Every string is either refused with the queue-name message or read back exactly."""
    before = count_jobs(db)
    if not _queue_re.fullmatch(queue):
        with pytest.raises(InvalidOptionError) as caught:
            tasks.app.enqueue("send_email", {"to": "a"}, queue=queue)
        assert str(caught.value) == (
            f"invalid queue name {queue!r}: must match {QUEUE_NAME_PATTERN}"
        )
        assert count_jobs(db) == before
        return
    job = tasks.app.enqueue("send_email", {"to": "a"}, queue=queue)
    assert tasks.app.get_job(job.id).queue == queue
    assert count_jobs(db) == before + 1


_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    # Every code point, surrogates and NUL included.
    st.text(st.characters(codec=None, exclude_categories=()), max_size=12),
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.text(st.characters(exclude_categories=()), max_size=6), inner, max_size=4
        ),
    ),
    max_leaves=12,
)


def _numbers_as_floats(value: Any) -> Any:
    """jsonb stores numbers as numeric; compare them by value, not by Python type."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        return {key: _numbers_as_floats(item) for key, item in value.items()}
    return [_numbers_as_floats(item) for item in value]


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=FUZZ_PHASES,
)
@given(args=st.dictionaries(st.text(max_size=8), _json_values, max_size=4))
def test_fuzz_args_are_refused_before_sql_or_round_trip(
    dsn: str, tasks: Tasks, args: dict[str, Any]
) -> None:
    """Any JSON-shaped args are refused by pgqueue (transaction intact) or read back equal."""
    with psycopg.connect(dsn) as conn:
        try:
            job = tasks.app.enqueue("send_email", args, connection=conn)
        except SerializationError:
            assert conn.info.transaction_status is not TransactionStatus.INERROR
            conn.rollback()
            return
        stored = tasks.app.get_job(job.id, connection=conn).args
        conn.rollback()
    assert _numbers_as_floats(stored) == _numbers_as_floats(args)


def test_b5_boundary_payload_is_accepted_and_stored_whole(tasks: Tasks, db: Conn) -> None:
    """B5: args of exactly 262,144 bytes are accepted and read back unchanged."""
    data = payload_of(LIMIT)
    assert len(json.dumps({"data": data}, separators=(",", ":")).encode()) == LIMIT
    job = tasks.import_csv.enqueue(data)
    assert tasks.app.get_job(job.id).args == {"data": data}
    assert count_jobs(db) == 1


@pytest.fixture
def listener(dsn: str) -> Iterator[Conn]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('LISTEN "pgqueue_pgqueue"')
        yield conn


def test_b5_args_around_notify_limit_enqueue_and_never_ride_in_notify(
    tasks: Tasks, listener: Conn
) -> None:
    """B5: args of 7,999, 8,000 and 8,001 bytes enqueue; each NOTIFY carries only the queue."""
    for size in (7_999, 8_000, 8_001):
        data = payload_of(size)
        job = tasks.import_csv.enqueue(data)
        assert tasks.app.get_job(job.id).args == {"data": data}
        notices = [(n.channel, n.payload) for n in listener.notifies(timeout=5, stop_after=1)]
        assert notices == [("pgqueue_pgqueue", "default")]


def test_custom_max_payload_bytes_is_the_limit(dsn: str, db: Conn) -> None:
    """App(max_payload_bytes=...) moves the boundary and the message names it."""
    small = App(dsn, max_payload_bytes=100)
    try:
        tasks = register(small)
        tasks.import_csv.enqueue(payload_of(100))
        with pytest.raises(PayloadTooLargeError) as caught:
            tasks.import_csv.enqueue(payload_of(101))
    finally:
        small.close()
    assert str(caught.value) == (
        "args for task 'import_csv' serialize to 101 bytes; the limit is 100"
        " (max_payload_bytes). Store the data elsewhere and pass a reference."
    )
    assert count_jobs(db) == 1


def test_result_pgqueue_cannot_store_is_refused_by_dump_result() -> None:
    """A task result jsonb would reject fails as that job's SerializationError, not in SQL."""
    with pytest.raises(SerializationError) as caught:
        dump_result("report", {"rows": ["ok", "bad\x00"]})
    assert str(caught.value) == (
        "result of task 'report' is not valid JSON at $.rows[1]: strings cannot contain the"
        " NUL character (\\u0000); PostgreSQL's jsonb rejects it"
    )


def test_wrong_connection_kind_is_refused_before_sql(dsn: str, tasks: Tasks, db: Conn) -> None:
    """An async connection given to the sync enqueue (or junk) raises ConfigurationError."""

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            with pytest.raises(ConfigurationError) as caught:
                tasks.send_email.enqueue("a@example.com", connection=conn)
            assert str(caught.value) == (
                "AsyncConnection is asynchronous: use the *_async method"
                " (for example `await task.enqueue_async(..., connection=conn)`)"
            )
            assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)

    asyncio.run(main())
    with pytest.raises(ConfigurationError, match=re.escape("cannot use a builtins.str as a")):
        tasks.send_email.enqueue("a@example.com", connection="postgresql://db/app")
    assert count_jobs(db) == 0


# ---------------------------------------------------------------------------- SQL function


SQL_ENQUEUE = (
    "SELECT pgqueue.enqueue(%(task)s, %(args)s::jsonb, queue => %(queue)s,"
    " priority => %(priority)s, max_attempts => %(max_attempts)s)"
)
GOOD_SQL_ARGS: dict[str, Any] = {
    "task": "send_email",
    "args": '{"to": "a"}',
    "queue": "default",
    "priority": 0,
    "max_attempts": 5,
}


@pytest.mark.parametrize(
    ("override", "option"),
    [
        (
            {"queue": "default; DROP TABLE pgqueue.jobs"},
            {"queue": "default; DROP TABLE pgqueue.jobs"},
        ),
        ({"queue": "Ünïcode"}, {"queue": "Ünïcode"}),
        ({"priority": 1000}, {"priority": 1000}),
        ({"priority": -101}, {"priority": -101}),
        ({"max_attempts": 0}, {"max_attempts": 0}),
    ],
    ids=["queue-injection", "queue-unicode", "priority-1000", "priority--101", "max-attempts-0"],
)
def test_sql_function_refuses_bad_options_with_the_python_message(
    tasks: Tasks, db: Conn, override: dict[str, Any], option: dict[str, Any]
) -> None:
    """pgqueue.enqueue() in SQL refuses what the Python producer refuses, with the same text."""
    with pytest.raises(InvalidOptionError) as python_error:
        tasks.app.prepare("send_email", {"to": "a"}, **option)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as sql_error:
        db.execute(SQL_ENQUEUE, {**GOOD_SQL_ARGS, **override})
    assert sql_error.value.diag.message_primary == str(python_error.value)
    assert count_jobs(db) == 0


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        (
            {"args": "[1, 2]"},
            psycopg.errors.InvalidParameterValue,
            "args for task 'send_email' must be a JSON object, got array",
        ),
        (
            {"args": '"text"'},
            psycopg.errors.InvalidParameterValue,
            "args for task 'send_email' must be a JSON object, got string",
        ),
        (
            {"args": None},
            psycopg.errors.InvalidParameterValue,
            "args for task 'send_email' must be a JSON object, got null",
        ),
        (
            {"task": ""},
            psycopg.errors.InvalidParameterValue,
            "invalid task name '': must be 1 to 255 characters",
        ),
        (
            {"args": json.dumps({"data": "x" * 300_000})},
            psycopg.errors.ProgramLimitExceeded,
            "args for task 'send_email' serialize to 300012 bytes; the limit is 262,144",
        ),
    ],
    ids=["array", "string", "null", "empty-task", "too-large"],
)
def test_sql_function_refuses_bad_args_naming_the_value(
    db: Conn, override: dict[str, Any], error: type[Exception], message: str
) -> None:
    """pgqueue.enqueue() in SQL refuses non-object or oversized args and empty task names."""
    with pytest.raises(error) as caught:
        db.execute(SQL_ENQUEUE, {**GOOD_SQL_ARGS, **override})
    assert isinstance(caught.value, psycopg.Error)
    assert caught.value.diag.message_primary == message
    assert count_jobs(db) == 0


# --------------------------------------------------------------------------------- B8: CLI


BAD_PORT_DSN = "postgresql://app:s3cret@db:notaport/app"
BAD_PORT_MESSAGE = (
    "pgqueue: invalid database URL 'postgresql://app:***@db:notaport/app':"
    " invalid port 'notaport'\n"
)
UNRESOLVABLE_DSN = "postgresql://app:s3cret@db.invalid:5432/app"
UNRESOLVABLE_PREFIX = "pgqueue: could not connect to postgresql://app:***@db.invalid:5432/app:"


def test_b8_invalid_port_exits_2_with_password_hidden() -> None:
    """B8: an unparsable URL exits 2 naming it with the password as ***."""
    result = CliRunner().invoke(main, ["--dsn", BAD_PORT_DSN, "migrate"])
    assert result.exit_code == 2
    assert result.stderr == BAD_PORT_MESSAGE
    assert result.stdout == ""
    assert "s3cret" not in result.output


def test_b8_invalid_url_from_environment_is_reported_the_same() -> None:
    """B8: the same URL from PGQUEUE_DATABASE_URL gets the same exit code and message."""
    result = CliRunner(env={"PGQUEUE_DATABASE_URL": BAD_PORT_DSN}).invoke(main, ["migrate"])
    assert (result.exit_code, result.stderr) == (2, BAD_PORT_MESSAGE)


def test_b8_unreachable_host_exits_3_with_password_hidden() -> None:
    """B8b: a host that does not resolve exits 3; the message is redacted."""
    result = CliRunner().invoke(main, ["--dsn", UNRESOLVABLE_DSN, "migrate"])
    assert result.exit_code == 3
    assert result.stderr.startswith(UNRESOLVABLE_PREFIX)
    assert result.stderr.count("\n") == 1
    assert "s3cret" not in result.output


def _pgqueue_command() -> list[str]:
    script = Path(sys.executable).with_name("pgqueue")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pgqueue"]


def test_b8_real_processes_exit_2_and_3_without_the_password() -> None:
    """B8 through the installed `pgqueue` command: exit codes and stderr as documented."""
    runs = {
        dsn: subprocess.Popen(
            [*_pgqueue_command(), "--dsn", dsn, "migrate"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for dsn in (BAD_PORT_DSN, UNRESOLVABLE_DSN)
    }
    outputs = {dsn: (proc.communicate(timeout=60), proc.returncode) for dsn, proc in runs.items()}
    (out, err), code = outputs[BAD_PORT_DSN]
    assert (code, out, err) == (2, "", BAD_PORT_MESSAGE)
    (out, err), code = outputs[UNRESOLVABLE_DSN]
    assert code == 3
    assert out == ""
    assert err.startswith(UNRESOLVABLE_PREFIX)
    assert "s3cret" not in err


def _with_password(dsn: str, password: str) -> str:
    if "://" not in dsn:
        return make_conninfo(dsn, password=password)
    parts = urlsplit(dsn)
    user = parts.username or conninfo_to_dict(dsn).get("user") or "postgres"
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def test_b8_wrong_password_exits_3_with_password_hidden(pg_server: TestServer) -> None:
    """B8c: a refused login exits 3 and never prints the password that was tried."""
    wrong = _with_password(pg_server.admin_dsn, "Wr0ngPassw0rd")
    try:
        psycopg.connect(wrong, connect_timeout=5).close()
    except psycopg.OperationalError:
        pass
    else:
        pytest.skip(f"the {pg_server.origin} test server does not ask for a password (trust auth)")
    result = CliRunner().invoke(main, ["--dsn", wrong, "migrate"])
    assert result.exit_code == 3
    assert result.stderr.startswith("pgqueue: could not connect to ")
    assert "password authentication failed" in result.stderr
    assert "Wr0ngPassw0rd" not in result.output


def test_enqueue_on_an_unmigrated_database_says_to_run_migrate(empty_dsn: str) -> None:
    """A producer pointed at a database nobody migrated gets pgqueue's own error, sync and
    async, in its own transaction or the caller's, and the caller's transaction is intact."""
    app = App(empty_dsn)
    try:
        with pytest.raises(SchemaNotMigratedError, match=r"run 'pgqueue migrate'") as raised:
            app.enqueue("send_email", {"to": "a@example.com"}, check_task=False)
        assert "relation \"pgqueue.jobs\" does not exist" in str(raised.value)

        async def enqueue_async() -> None:
            try:
                await app.enqueue_async("send_email", {}, check_task=False)
            finally:
                await app.aclose()

        with pytest.raises(SchemaNotMigratedError):
            asyncio.run(enqueue_async())
        with psycopg.connect(empty_dsn) as conn:
            with pytest.raises(SchemaNotMigratedError):
                app.enqueue("send_email", {}, check_task=False, connection=conn)
            assert conn.info.transaction_status == TransactionStatus.INERROR
            conn.rollback()
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        app.close()
