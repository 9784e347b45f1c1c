"""A partition a correlate stage owns, and how its checkpoints are made from it.

`PartitionState` is the stage's bookkeeping around one partition's engine
(`streams.partition.Processor`): where its log resumes, what a restore found already
published, its hand-off and checkpoint progress. The functions below are the pure parts of a
checkpoint (`CorrelateStage._checkpoint`): the output ends it records, whether its state is
encoded on the event loop, the encoding itself, and when the partition counts as checkpointed.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from schemas.models import IncidentKind
from streams.checkpoints import Checkpoint, MemoryPlan, MemoryRef, encode_segment
from streams.partition import Processor, Snapshotter, pack

__all__ = [
    "PartitionState",
    "phase_kept",
    "checkpoint_spacing",
    "due_partitions",
    "bounded_ends",
    "encode_inline",
    "encode_all",
    "packed",
    "PACK_INLINE_BYTES",
    "segment",
]

# A checkpoint whose partitions last took less CPU than this to encode is encoded on the event
# loop: handed to a thread, it waited for the GIL behind the decode stage (the switch interval
# is 5 ms), which made a pause of ~5 ms out of well under one (`CorrelateStage._checkpoint`).
INLINE_ENCODE_S = 0.001
# States compressed on the event loop up to this size together (~1.5 ms: zlib level 1 took
# ~6 ms a MB here), in a thread beyond
PACK_INLINE_BYTES = 1 << 18


@dataclass
class PartitionState:
    """A partition owned by this worker."""

    partition: int
    processor: Processor
    next_offset: int
    # the identities of outputs a restore found published from offsets up to `suppress_until`:
    # not published again (`streams.outputs`); both are cleared once the partition is past it
    suppress: set[str] = field(default_factory=set)
    suppress_until: int = -1
    # where the restore's scan for those outputs began: a checkpoint taken before the partition
    # is past `suppress_until` records no later output ends (`bounded_ends`)
    scan_from: dict[str, int] | None = None
    dirty: bool = False
    state_bytes: int = 0
    open: dict[str, IncidentKind] = field(default_factory=dict)
    last_checkpoint: float = field(default_factory=time.monotonic)
    # values of the records processed from this process's decode stage (`offer`), until the
    # consumer delivers the same offsets, whose bytes must be equal
    handed: dict[int, bytes] = field(default_factory=dict)
    # `handoff=memory`: not fetched while the records handed over keep up, until `idle_at`
    paused: bool = False
    idle_at: float = 0.0
    # the redelivery memory's segments the last checkpoint refers to, then those sealed since
    # (acknowledged: the next checkpoint refers to them), and the ones no longer needed (with
    # when they were dropped), to delete once no checkpoint in use needs them
    memory: list[MemoryRef] = field(default_factory=list)
    retired: list[tuple[MemoryRef, float]] = field(default_factory=list)
    # the segments being written between checkpoints (`CorrelateStage._seal_filled`)
    sealing: asyncio.Future[list[MemoryRef]] | None = None
    # a checkpoint of it is being written behind (`memory` is updated once it is)
    writing: bool = False
    # CPU seconds its last checkpoint took to encode (inf: none yet)
    encode_s: float = math.inf

    def processed(self, offset: int) -> None:
        """The record at `offset` went through the engine (and its outputs to a sender)."""
        self.next_offset = offset + 1
        self.dirty = True
        if self.suppress_until >= 0 and self.next_offset > self.suppress_until:
            # past every output the restore found: nothing more to skip, nor to scan for
            self.suppress = set()
            self.suppress_until = -1
            self.scan_from = None


def phase_kept(last: float, now: float, interval: float) -> float:
    """When a partition checkpointed at `now` counts as checkpointed: the latest time <= `now`
    on its own grid of intervals from `last`. A checkpoint taken late (the stage was busy
    longer than the interval, and every partition was due in one pause) keeps the partition's
    phase, so the partitions spread by `_stagger` do not stay lined up from then on."""
    if interval <= 0 or now <= last:
        return now
    return last + interval * ((now - last) // interval)


def checkpoint_spacing(
    encode_s: float, interval: float, max_share: float, longest: float, partitions: int = 1
) -> float:
    """How long after its last checkpoint a partition is due again: `interval`, or longer for
    a state whose last encoding took `encode_s` CPU seconds, so that encoding takes at most
    `max_share` of the time (`SOCNOC_CHECKPOINT_MAX_SHARE`), but never longer than `longest`
    (half of what compaction keeps older checkpoints: one to fall back to stays). A partition
    not encoded yet is due after `interval`.

    The share is the stage's, split between the `partitions` it owns: a checkpoint of any of
    them pauses them all. Per partition, eight big ones kept a worker paused 28-30% of a storm
    of 300,000 new assets at a share of 5%."""
    if math.isinf(encode_s):
        return interval
    return max(interval, min(encode_s * max(1, partitions) / max_share, longest))


def due_partitions(
    states: Iterable[PartitionState],
    now: float,
    interval: float,
    spacing: Callable[[PartitionState], float],
    force: bool,
) -> list[PartitionState]:
    """The partitions a checkpoint pause takes: the dirty ones that are due by their
    `spacing` (every dirty one with `force`). Of those whose state is slow to encode (spaced
    past `interval`) only the most overdue: each of them pauses the stage for as long as it
    encodes (seconds, for a big state), and off the stagger's grid several could fall due
    together."""
    dirty: list[PartitionState] = []
    first: PartitionState | None = None
    late = -math.inf
    for st in states:
        if not st.dirty:
            continue
        if force:
            dirty.append(st)
            continue
        wait = spacing(st)
        over = now - st.last_checkpoint - wait  # how long it has been due (< 0: not yet)
        if over < 0:
            continue
        if wait <= interval:
            dirty.append(st)
        elif over > late:
            first, late = st, over
    if first is not None:
        dirty.append(first)
    return dirty


def bounded_ends(st: PartitionState, out_ends: dict[str, int]) -> dict[str, int]:
    """The output ends a checkpoint of `st` records. A partition restored with outputs already
    published past its checkpoint (`suppress`) has not reached them all yet: a checkpoint now
    must keep its restore's scan reaching back to them, or a restore from it would miss those
    published before the last restore and publish them again (155 decisions in one `make soak`
    run). Past `suppress_until` every output so published came from before the checkpoint."""
    if st.scan_from is None or st.next_offset > st.suppress_until:
        return out_ends
    scan_from = st.scan_from
    return {key: min(end, scan_from.get(key, end)) for key, end in out_ends.items()}


def encode_inline(dirty: list[PartitionState], plans: list[MemoryPlan | None]) -> bool:
    """Whether these partitions' checkpoint may be encoded on the event loop: their last ones
    took under `INLINE_ENCODE_S` of CPU together (a partition never encoded goes to the thread,
    and so does a checkpoint that seals memory segments)."""
    if any(plan is not None and plan.seal for plan in plans):
        return False
    return sum(st.encode_s for st in dirty) < INLINE_ENCODE_S


def encode_all(
    dirty: list[PartitionState], plans: list[MemoryPlan | None], snap: Snapshotter
) -> list[tuple[list[tuple[int, int, bytes]], bytes]]:
    """Each partition's new memory segments and its state (not compressed yet: `packed`),
    noting the CPU time each took (`encode_s`)."""
    encoded: list[tuple[list[tuple[int, int, bytes]], bytes]] = []
    for st, plan in zip(dirty, plans, strict=True):
        began = time.thread_time()  # (the thread's own CPU: not its waits for the GIL)
        if plan is None:
            encoded.append(([], st.processor.dump(snap, packed=False)))
        else:
            segments = [(a, b, segment(st, a, b)) for a, b in plan.seal]
            encoded.append((segments, st.processor.dump(snap, plan.memory_from, packed=False)))
        st.encode_s = time.thread_time() - began
    return encoded


def packed(checkpoints: list[Checkpoint]) -> list[Checkpoint]:
    """The checkpoints with their states compressed as `Processor.dump` does (`pack`)."""
    return [c if c.state is None else replace(c, state=pack(c.state)) for c in checkpoints]


def segment(st: PartitionState, start: int, end: int) -> bytes:
    """The record of `st`'s memory segment `[start, end)`: the ids at those positions."""
    correlator: Any = st.processor.correlator
    return encode_segment(st.partition, start, end, correlator.memory_ids(start, end))
