"""The worker's one factory for correlators, and how their state is checkpointed.

`new_correlator` builds exactly what `socnoc replay` builds (`streams.replay.build_engine`),
so the stream and the replay share the core. State goes to checkpoints through the
correlator's own `snapshot()` (or `snapshot_document()`, encoded here with orjson) /
`restore(bytes)`: plain JSON, so a checkpoint record cannot
execute code whoever managed to write it (no pickle).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

import orjson

from correlators.config import EngineConfig
from correlators.types import Correlator, Earlier
from schemas.errors import SnapshotError
from schemas.rules import load_rules
from streams.partition import Snapshotter
from streams.replay import Context, build_engine
from streams.settings import Settings

__all__ = ["new_correlator", "snapshotter", "worker_context"]

log = logging.getLogger(__name__)

RETAIN_MARGIN = timedelta(hours=1)  # resolved incidents kept this long past the reopen window
_OWN = b"S"  # b"P" (pickle) is refused: a checkpoint must not be able to run code


def _fragment(doc: dict[str, Any]) -> orjson.Fragment:
    """A part of a snapshot's document as the JSON orjson embeds as is."""
    return orjson.Fragment(orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS))


def _let_others_run() -> None:
    """Called by a restore every 1,024 items of its work (`correlators.state.PACE`): it runs in
    a thread, and compiled it would hold the interpreter from start to end. Letting go here
    lets the worker's event loop run meanwhile: the decode stage and its consumer group's
    heartbeats, the producers' acknowledgements, the metrics endpoint (the correlate group
    itself waits for `assigned()`, which the restore is part of). Restoring 100,000 assets in
    a thread, a loop ticking every 50 ms waited up to 5.96-6.49 s between two ticks without it,
    0.79-1.16 s with it (the parse, one call, is the longest stretch left)."""
    time.sleep(0)


def worker_context(settings: Settings) -> Context:
    """Rules from the settings; inventory, changes and feedback arrive on the context topics."""
    rules = tuple(rule for path in settings.rules for rule in load_rules(path))
    # a worker's engine lives for weeks: resolved incidents are forgotten an hour after they can
    # no longer reopen (replay keeps them all, to write incidents.jsonl)
    config = replace(
        EngineConfig(),
        update_interval=settings.update_interval,
        reopen_window=settings.reopen_window,
        retain_resolved=settings.reopen_window + RETAIN_MARGIN,
        max_seen_ids=settings.redelivery_memory,
    )
    return Context(rules=rules, default_rules=settings.default_rules, config=config)


def new_correlator(settings: Settings, context: Context) -> Correlator:
    """A fresh correlator for one partition (the same construction as replay)."""
    return build_engine(context, settings.engine)


def snapshotter(settings: Settings, context: Context) -> Snapshotter:
    """Dump/load of this worker's correlator kind."""
    kind = type(new_correlator(settings, context))

    # The engine: its redelivery memory can be left out of a snapshot (memory segments), and
    # it restores with the worker's engine settings; other correlators snapshot whole.
    segmented = callable(getattr(kind, "memory_span", None))
    config = context.config

    def dump(correlator: Correlator, memory_from: int | None) -> bytes:
        args = (memory_from,) if segmented else ()
        document = getattr(correlator, "snapshot_document", None)
        if callable(document):  # the same JSON as snapshot(), encoded by orjson
            try:  # non-string keys become strings, as `json` makes them
                # the engine's windows: each one's JSON kept until it changes (`memo`)
                doc = document(*args, memo=_fragment) if segmented else document(*args)
                return _OWN + orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)
            except TypeError:  # a value orjson cannot encode: the correlator's own encoder
                log.warning("checkpoint state fell back to the standard JSON encoder", exc_info=True)
        own = getattr(correlator, "snapshot", None)
        if callable(own):
            data = own(*args)
            if isinstance(data, bytes):
                return _OWN + data
        raise TypeError(f"{type(correlator).__name__} has no snapshot(): it cannot be checkpointed")

    def load(data: bytes, earlier: Earlier | None) -> Correlator:
        tag, body = data[:1], data[1:]
        if tag == _OWN:
            restore: Any = getattr(kind, "restore", None)
            if restore is None:
                raise ValueError(f"{kind.__name__} cannot restore its own snapshot")
            # the worker's current settings, not those the snapshot was taken with
            if not segmented:
                whole: Correlator = restore(body)
                return whole
            try:  # orjson: 2.35 -> 0.99 s for the 114 MB state of 100,000 assets
                paced: Correlator = restore(body, earlier, config, parse=orjson.loads, pause=_let_others_run)
                return paced
            except SnapshotError:
                # Read again as `json` reads it, which the restore was made for: orjson refuses
                # NaN and lone surrogates, which the fallback encoder writes, and reads an
                # integer past 64 bits (the fallback encoder writes it too) as a float
                exact: Correlator = restore(body, earlier, config, parse=json.loads, pause=_let_others_run)
                return exact
        raise ValueError(f"unknown snapshot tag {tag!r}")

    return Snapshotter(dump, load)
