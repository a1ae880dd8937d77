"""The worker runtime behind ``pgqueue work``."""

from __future__ import annotations

from pgqueue.worker.config import QueueSpec, WorkerConfig, parse_queues
from pgqueue.worker.runtime import Worker, WorkerStats

__all__ = ["QueueSpec", "Worker", "WorkerConfig", "WorkerStats", "parse_queues"]
