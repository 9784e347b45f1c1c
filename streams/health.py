"""What `/health` reports: is Kafka reachable, and is each stage consuming."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from streams.metrics import Metrics

__all__ = ["Health", "StageHealth"]


@dataclass
class StageHealth:
    """One consuming stage (decode or correlate)."""

    running: bool = False
    partitions: list[str] = field(default_factory=list)
    last_batch_at: float | None = None
    records: int = 0
    from_memory: int = 0  # correlate: records taken from this process's decode stage
    read_back: int = 0  # correlate: records fetched again after being taken from memory
    paused: int = 0  # correlate: partitions not fetched while their records come from memory
    resumed: int = 0  # correlate: times a partition fed from memory was fetched again
    errors: int = 0
    last_error: str | None = None

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "running": self.running,
            "partitions": self.partitions,
            "seconds_since_batch": None
            if self.last_batch_at is None
            else round(now - self.last_batch_at, 3),
            "records": self.records,
            "from_memory": self.from_memory,
            "read_back": self.read_back,
            "paused": self.paused,
            "resumed": self.resumed,
            "errors": self.errors,
            "last_error": self.last_error,
        }


@dataclass
class Health:
    """Shared by the stages and the web endpoint; mirrors `socnoc_broker_up`."""

    metrics: Metrics | None = None
    broker_up: bool = False
    broker_error: str | None = None
    stages: dict[str, StageHealth] = field(default_factory=dict)

    def stage(self, name: str) -> StageHealth:
        return self.stages.setdefault(name, StageHealth())

    def up(self) -> None:
        """Kafka answered."""
        self.broker_up = True
        self.broker_error = None
        if self.metrics is not None:
            self.metrics.set_broker_up(True)

    def down(self, exc: BaseException) -> None:
        """Kafka did not answer (or failed a request)."""
        self.broker_up = False
        self.broker_error = f"{type(exc).__name__}: {exc}"[:300]
        if self.metrics is not None:
            self.metrics.set_broker_up(False)

    @property
    def ok(self) -> bool:
        return self.broker_up and all(s.running for s in self.stages.values())

    def as_dict(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "status": "ok" if self.ok else "degraded",
            "broker": "up" if self.broker_up else f"unreachable: {self.broker_error or 'not yet'}",
            "stages": {name: s.as_dict(now) for name, s in sorted(self.stages.items())},
        }
