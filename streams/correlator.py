"""The worker's one factory for correlators, and how their state is checkpointed.

`new_correlator` builds exactly what `socnoc replay` builds (`streams.replay.build_engine`),
so the stream and the replay share the core. State goes to checkpoints through the
correlator's own `snapshot()` / `restore(bytes)` when it offers them; until then through
pickle, which is only safe because the checkpoint topic is written by socnoc alone (keep
its ACLs to the workers).
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import replace
from typing import Any

from correlators.config import EngineConfig
from correlators.types import Correlator
from schemas.rules import load_rules
from streams.partition import Snapshotter
from streams.replay import Context, build_engine
from streams.settings import Settings

__all__ = ["new_correlator", "snapshotter", "worker_context"]

log = logging.getLogger(__name__)

_OWN = b"S"
_PICKLE = b"P"


def worker_context(settings: Settings) -> Context:
    """Rules from the settings; inventory, changes and feedback arrive on the context topics."""
    rules = tuple(rule for path in settings.rules for rule in load_rules(path))
    config = replace(EngineConfig(), update_interval=settings.update_interval, reopen_window=settings.reopen_window)
    return Context(rules=rules, default_rules=settings.default_rules, config=config)


def new_correlator(settings: Settings, context: Context) -> Correlator:
    """A fresh correlator for one partition (the same construction as replay)."""
    return build_engine(context, settings.engine)


def snapshotter(settings: Settings, context: Context) -> Snapshotter:
    """Dump/load of this worker's correlator kind."""
    kind = type(new_correlator(settings, context))

    def dump(correlator: Correlator) -> bytes:
        own = getattr(correlator, "snapshot", None)
        if callable(own):
            data = own()
            if isinstance(data, bytes):
                return _OWN + data
        return _PICKLE + pickle.dumps(correlator, protocol=pickle.HIGHEST_PROTOCOL)

    def load(data: bytes) -> Correlator:
        tag, body = data[:1], data[1:]
        if tag == _OWN:
            restore: Any = getattr(kind, "restore", None)
            if restore is None:
                raise ValueError(f"{kind.__name__} cannot restore its own snapshot")
            restored: Correlator = restore(body)
            return restored
        if tag == _PICKLE:
            loaded: Correlator = pickle.loads(body)  # our own checkpoint topic only
            return loaded
        raise ValueError(f"unknown snapshot tag {tag!r}")

    return Snapshotter(dump, load)
