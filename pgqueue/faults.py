"""Named fault points for the reliability suite.

``PGQUEUE_FAULTPOINT=<name>`` makes a worker exit abruptly (``os._exit(137)``,
like a SIGKILL) at that point. It only works when ``PGQUEUE_TESTING=1`` is set
too, so a stray variable in production does nothing.

Points: ``after_claim`` (jobs are running, nothing started), ``before_ack`` (the
task returned, its completion not yet written), ``after_ack_commit`` (the
completion committed), ``after_complete_in_tx_commit`` (a task's
``complete(connection)`` committed with its own writes).
"""

from __future__ import annotations

import os
import sys

__all__ = ["FAULT_POINTS", "faultpoint"]

FAULT_POINTS = frozenset(
    {"after_claim", "before_ack", "after_ack_commit", "after_complete_in_tx_commit"}
)

_ACTIVE = os.environ.get("PGQUEUE_FAULTPOINT") if os.environ.get("PGQUEUE_TESTING") == "1" else None


def faultpoint(name: str) -> None:
    """Exit the process at once if ``name`` is the armed fault point."""
    if _ACTIVE is not None and name == _ACTIVE:
        sys.stderr.write(f"pgqueue: fault point {name} reached; exiting with 137\n")
        sys.stderr.flush()
        os._exit(137)
