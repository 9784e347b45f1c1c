"""The redelivery memory: ids remembered once, the newest `cap` of them, numbered in order."""

from __future__ import annotations

from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from correlators.redelivery import SHARDS, SeenIds


def test_an_id_is_remembered_once() -> None:
    memory = SeenIds(10)
    assert memory.remember("a") and memory.remember("b")
    assert not memory.remember("a")
    assert (len(memory), memory.span(), memory.ids(0, 2)) == (2, (0, 2), ["a", "b"])


def test_beyond_its_cap_the_oldest_is_forgotten_and_positions_go_on() -> None:
    memory = SeenIds(3)
    for alert_id in "abcde":
        memory.remember(alert_id)
    assert memory.span() == (2, 5)
    assert memory.ids(0, 5) == ["c", "d", "e"] and memory.ids(3, 4) == ["d"] and memory.ids(5, 9) == []
    assert memory.remember("a")  # forgotten: a redelivery this old is decided again


def test_a_restored_memory_continues_where_it_was() -> None:
    memory = SeenIds(5, ["x", "y"], total=40)
    assert memory.span() == (38, 40) and memory.ids(38, 40) == ["x", "y"]
    assert not memory.remember("y") and memory.remember("z")
    assert memory.span() == (38, 41)


@pytest.mark.parametrize(
    ("ids", "total", "cap"), [(["a", "a"], None, 5), (["a", "b", "c"], None, 2), (["a", "b"], 1, 5)]
)
def test_an_impossible_memory_is_refused(ids: list[str], total: int | None, cap: int) -> None:
    with pytest.raises(ValueError):
        SeenIds(cap, ids, total)


def test_many_ids_spread_over_the_shards() -> None:
    memory = SeenIds(100_000)
    for i in range(100_000):
        memory.remember(f"topic:0:{i}")
    sizes = [len(shard) for shard in memory._shards]
    assert len(sizes) == SHARDS and sum(sizes) == 100_000
    assert max(sizes) < 2 * 100_000 / SHARDS  # no shard holds a big share: none grows alone
    # a shard's keys differ in the low bits its dict places them by (probes stay short)
    assert all(len({hash(alert_id) & 63 for alert_id in shard}) == 64 for shard in memory._shards)


@settings(max_examples=300, deadline=None)
@given(cap=st.integers(1, 12), ops=st.lists(st.integers(0, 25), max_size=120))
def test_it_answers_as_one_ordered_table_would(cap: int, ops: list[int]) -> None:
    memory = SeenIds(cap)
    model: OrderedDict[str, None] = OrderedDict()
    total = 0
    for op in ops:
        alert_id = f"id-{op}"
        new = alert_id not in model
        assert memory.remember(alert_id) == new
        if new:
            model[alert_id] = None
            total += 1
            if len(model) > cap:
                model.popitem(last=False)
        assert memory.span() == (total - len(model), total)
    held = list(model)
    assert memory.ids(0, total) == held
    for start in range(total - len(held), total + 1):
        assert memory.ids(start, total) == held[start - (total - len(held)) :]
    assert SeenIds(cap, held, total).ids(0, total) == held
