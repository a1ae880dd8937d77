"""One benchmark worker process: ``Worker(...).run()`` on the bench app, then a JSON report.

Run as ``python -m pgqueue.bench.worker_main`` with ``PGQUEUE_DATABASE_URL`` set
(never on the command line, where ``ps`` would show a password). It is the real
runtime, unchanged; only the app (two trivial tasks) is the benchmark's. Being a
plain command it can be wrapped by a profiler: ``py-spy record -- python -m ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from dataclasses import asdict

from pgqueue.bench.tasks import bench_app
from pgqueue.dsn import DSN_ENV_VAR
from pgqueue.logsetup import LEVELS, configure_logging
from pgqueue.worker import Worker
from pgqueue.worker.config import CONCURRENCY_DEFAULT, POLL_INTERVAL_DEFAULT, WorkerConfig

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pgqueue.bench.worker_main")
    parser.add_argument("--schema", default="pgqueue_bench")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY_DEFAULT)
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--no-listen", action="store_true")
    parser.add_argument("--poll-interval", type=float, default=POLL_INTERVAL_DEFAULT)
    parser.add_argument("--loglevel", choices=LEVELS, default="warning")
    return parser


def _peak_rss_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak // 1024 if sys.platform == "darwin" else peak


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.loglevel)
    app = bench_app(os.environ[DSN_ENV_VAR], args.schema)
    config = WorkerConfig(
        concurrency=args.concurrency, burst=args.burst, listen=not args.no_listen,
        poll_interval=args.poll_interval,
    )
    worker = Worker(app, config)
    started = time.time()
    # CPU of the run alone: importing pgqueue (SQLAlchemy, Alembic) costs far more
    # than draining a few hundred jobs and would swamp a per-job figure.
    before = resource.getrusage(resource.RUSAGE_SELF)
    code = worker.run()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "pid": os.getpid(),
        "exit_code": code,
        "started": started,
        "stopped": time.time(),
        "stats": asdict(worker.stats),
        "peak_rss_kib": _peak_rss_kib(),
        "cpu_seconds": (usage.ru_utime + usage.ru_stime) - (before.ru_utime + before.ru_stime),
    }
    print(json.dumps(report), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
