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

# Nothing is imported here: worker processes import pgqueue.bench.tasks and must
# not pay for (or break on) the runner. Use pgqueue.bench.runner and .report.
__all__: list[str] = []
