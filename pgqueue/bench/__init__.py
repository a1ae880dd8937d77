"""``pgqueue bench``: pgqueue's throughput and latency on this machine and database.

Every figure is measured beside a floor taken in the same run (the same SQL in
a bare psycopg loop), so a ratio says what pgqueue's own code costs. The
benchmark writes only to schemas of its own (``pgqueue_bench`` and, for the
claim-cost phase, ``pgqueue_bench_1m``), truncated between phases.

Modules: ``runner`` (phases x runs), ``enqueue``, ``drain``, ``latency``,
``claimcost`` (the phases), ``workers`` and ``worker_main`` (worker
processes), ``dbenv`` (database and machine facts), ``stats``, ``report``.
"""

from __future__ import annotations

from pgqueue.bench.common import BenchConfig
from pgqueue.bench.report import format_report
from pgqueue.bench.runner import BenchReport, run_bench

__all__ = ["BenchConfig", "BenchReport", "format_report", "run_bench"]
