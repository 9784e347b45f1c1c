"""Replaying a bundled dataset (examples/data) through an engine, for tests of what it leaves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from streams.evaluate import DATASETS, default_data_root
from streams.replay import build_engine, format_options, load_context, replay

__all__ = ["replay_bundled"]

T = TypeVar("T")


def replay_bundled(name: str, out: Path, wrap: Callable[[Any], T]) -> T:
    """`wrap(engine)` for the dataset's context, after `socnoc replay` ran it over the dataset
    (its decisions and incidents written to `out`)."""
    dataset = DATASETS[name]
    folder = default_data_root() / dataset.folder
    context = load_context(inventory=folder / dataset.inventory if dataset.inventory else None)
    engine = wrap(build_engine(context))
    files = [folder / f for f in dataset.files]
    replay(files, dataset.fmt, engine, out, options=format_options(dataset.fmt, dataset.map_spec))
    return engine
