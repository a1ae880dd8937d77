"""The reliability harness: real workers, injected faults, and a history checker.

Used by ``tests/reliability`` (short forms, in CI) and by ``pgqueue chaos``
(long forms, for the published figures in docs/reliability.md).

- ``pgqueue.chaos.tasks``: the App and tasks the workers run; each execution
  writes a ledger row.
- ``pgqueue.chaos.supervisor``: ``Supervisor`` (restarts ``pgqueue work``
  processes, kills them on request) and ``BackendKiller``.
- ``pgqueue.chaos.load``: ``Producer`` (steady enqueues, acknowledged ids) and
  ``Monitor`` (backend counts, heartbeat staleness).
- ``pgqueue.chaos.history``: the history tables and ``check_history`` (I1-I7).
- ``pgqueue.chaos.scenarios``: the scenarios that ``pgqueue chaos`` runs.
"""

from __future__ import annotations

from pgqueue.chaos.history import (
    HistoryReport,
    KillRecord,
    check_history,
    install_history,
    record_acks,
    record_kills,
    recorded_kills,
    reset_history,
)
from pgqueue.chaos.load import JobRequest, Monitor, Producer
from pgqueue.chaos.scenarios import SCENARIOS, ChaosConfig, ChaosResult, run_scenario
from pgqueue.chaos.supervisor import CHAOS_APP, BackendKiller, Supervisor

__all__ = [
    "CHAOS_APP",
    "SCENARIOS",
    "BackendKiller",
    "ChaosConfig",
    "ChaosResult",
    "HistoryReport",
    "JobRequest",
    "KillRecord",
    "Monitor",
    "Producer",
    "Supervisor",
    "check_history",
    "install_history",
    "record_acks",
    "record_kills",
    "recorded_kills",
    "reset_history",
    "run_scenario",
]
