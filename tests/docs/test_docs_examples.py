"""Every example in README.md and docs/*.md runs against the current code.

Each ```python block is executed in a fresh namespace, against the test
database, with ``PGQUEUE_DATABASE_URL`` pointing at it, so examples can write
``app = pgqueue.App()`` exactly as users do. A block whose first line is
``# illustrative`` is skipped (it needs a web framework or a worker running
elsewhere); keep those rare.

A block whose first line names a module file, such as ``# myproject/tasks.py``,
is also written to a temporary directory on ``sys.path`` for every block of the
same page, so later blocks can ``from myproject.tasks import app`` and the
page's ``pgqueue work -A myproject.tasks:app`` is the real thing.

Every ```sql block runs in a transaction that is rolled back, unless its first
line is ``-- illustrative``.

Failures are reported as ``<page>:<line>``, the line where the block starts.
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.dsn import normalize_dsn

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```(?P<lang>[a-z]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
_MODULE_FILE = re.compile(r"^# (?P<path>[A-Za-z_][\w/]*\.py)$")
_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")

ILLUSTRATIVE = {"python": "# illustrative", "sql": "-- illustrative"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    index: int
    source: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def first_line(self) -> str:
        return self.source.splitlines()[0].strip() if self.source.strip() else ""

    @property
    def illustrative(self) -> bool:
        return self.first_line == ILLUSTRATIVE.get(self.lang)

    @property
    def module_path(self) -> str | None:
        match = _MODULE_FILE.match(self.first_line)
        return match.group("path") if match else None


def _blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for index, match in enumerate(_FENCE.finditer(text)):
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(page, line, match.group("lang"), index, match.group("body")))
    return found


ALL_BLOCKS = [block for page in PAGES for block in _blocks(page)]


def _params(lang: str) -> list[Any]:
    params = []
    for block in ALL_BLOCKS:
        if block.lang != lang:
            continue
        marks = [pytest.mark.skip(reason="illustrative")] if block.illustrative else []
        page_id = str(block.page.relative_to(ROOT))
        params.append(pytest.param(block, id=f"{page_id}-block{block.index:02d}", marks=marks))
    return params


def _public_tables(connection: psycopg.Connection[Any]) -> set[str]:
    rows = connection.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    ).fetchall()
    return {row[0] for row in rows}


@pytest.fixture
def example_env(dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """PGQUEUE_DATABASE_URL set; tables the example creates are dropped afterwards."""
    monkeypatch.setenv("PGQUEUE_DATABASE_URL", normalize_dsn(dsn))
    monkeypatch.chdir(tmp_path)
    # shared_task registers process-wide (as in Celery); keep an example's shared
    # tasks out of the apps of later tests.
    monkeypatch.setattr(pgqueue.shared, "_shared", [])
    with psycopg.connect(dsn, autocommit=True) as connection:
        before = _public_tables(connection)
    yield tmp_path
    with psycopg.connect(dsn, autocommit=True) as connection:
        for table in sorted(_public_tables(connection) - before):
            connection.execute(f'DROP TABLE IF EXISTS public."{table}" CASCADE')


def _write_page_modules(page: Path, directory: Path) -> None:
    for block in _blocks(page):
        if block.lang == "python" and block.module_path:
            target = directory / block.module_path
            target.parent.mkdir(parents=True, exist_ok=True)
            for package in target.relative_to(directory).parents:
                if str(package) != ".":
                    init = directory / package / "__init__.py"
                    if not init.exists():
                        init.write_text("")
            target.write_text(block.source, encoding="utf-8")


def _close(value: Any) -> None:
    if isinstance(value, pgqueue.App):
        value.close()
        return
    try:
        from sqlalchemy.engine import Engine
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        return
    if isinstance(value, Engine):
        value.dispose()


@pytest.mark.parametrize("block", _params("python"))
def test_python_example(block: Block, example_env: Path) -> None:
    """The block runs without raising (its own asserts included)."""
    _write_page_modules(block.page, example_env)
    sys.path.insert(0, str(example_env))
    # A real module, so that code looking itself up in sys.modules (SQLAlchemy's
    # annotation resolution, pickling, dataclasses) works as in a script.
    module = types.ModuleType("docs_example")
    sys.modules[module.__name__] = module
    namespace = module.__dict__
    try:
        code = compile(block.source, f"{block.where} (block {block.index})", "exec")
        exec(code, namespace)
    finally:
        sys.path.remove(str(example_env))
        del sys.modules[module.__name__]
        imported = [
            name
            for name, module in sys.modules.items()
            if str(getattr(module, "__file__", "") or "").startswith(str(example_env))
        ]
        for value in namespace.values():
            _close(value)
        for name in imported:
            for value in vars(sys.modules[name]).values():
                _close(value)
            del sys.modules[name]


@pytest.mark.parametrize("block", _params("sql"))
def test_sql_example(block: Block, dsn: str) -> None:
    """The block is valid against the migrated schema (run, then rolled back)."""
    with psycopg.connect(dsn) as connection:
        try:
            connection.execute(block.source.encode())
        except psycopg.errors.InsufficientPrivilege as error:
            # PGQUEUE_TEST_DSN may name a role that can create databases but not roles.
            pytest.skip(f"{block.where} needs more privileges than the test role has: {error}")
        except psycopg.Error as error:
            pytest.fail(f"{block.where}: {type(error).__name__}: {error}")
        finally:
            connection.rollback()


def test_pages_with_python_have_runnable_examples() -> None:
    """A page that shows Python shows at least one example that the tests run."""
    for page in PAGES:
        python = [b for b in _blocks(page) if b.lang == "python"]
        if python:
            assert any(not b.illustrative for b in python), (
                f"{page.relative_to(ROOT)}: every python example is illustrative"
            )


def test_illustrative_blocks_are_rare() -> None:
    """Most examples run; '# illustrative' is the exception."""
    python = [b for b in ALL_BLOCKS if b.lang == "python"]
    skipped = [b.where for b in python if b.illustrative]
    assert len(skipped) * 5 <= len(python), f"too many illustrative blocks: {skipped}"


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of ``page``."""
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    anchors = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, re.M):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return anchors


def test_relative_links_resolve() -> None:
    """Links between pages point at files that exist, and at headings that exist."""
    broken = []
    for page in PAGES:
        text = _FENCE.sub("", page.read_text(encoding="utf-8"))
        for match in _LINK.finditer(text):
            target = match.group("target")
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path) if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{page.relative_to(ROOT)} -> {target} (no such heading)")
    assert not broken, f"broken links: {broken}"


def test_readme_opens_with_the_setup_commands() -> None:
    """The first code block of the README is the two-command setup."""
    first = _blocks(ROOT / "README.md")[0]
    assert first.lang == "bash"
    assert first.source.splitlines() == [
        "pip install -e '.[dev]' && pgqueue demo",
        "pip install -e '.[dev]' && python -m pytest",
    ]
