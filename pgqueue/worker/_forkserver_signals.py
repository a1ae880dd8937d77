"""Imported only inside the process pool's fork server (as a preload module).

A service manager stops a worker by sending SIGTERM to every process of the
unit, and Ctrl-C sends SIGINT to the whole process group. The fork server and
the children it forks must not die of those: the worker drains its running
jobs and kills the children it gives up on itself. Children inherit these
dispositions from the fork server, so a signal that arrives while a child is
still starting is ignored too. Never import this module anywhere else.
"""

from __future__ import annotations

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
