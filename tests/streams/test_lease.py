"""The group lease's arithmetic and what counts as the coordinator accepting the member
(the broker side is in tests/integration/test_fencing.py)."""

from __future__ import annotations

import math

import pytest

from streams.lease import GroupLease, LeaseLost, accepted


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_only_accepted_group_requests_renew() -> None:
    heartbeat, join, sync, commit, fetch = 12, 11, 14, 8, 1
    assert accepted(heartbeat, 0) and accepted(join, 0) and accepted(sync, 0)
    assert accepted(heartbeat, 27), "rebalancing: the coordinator still holds the member"
    assert not accepted(join, 27) and not accepted(sync, 27)
    for code in (16, 22, 25, 15, 7, None):  # not coordinator, illegal generation, unknown member, ...
        assert not accepted(heartbeat, code)
    assert not accepted(commit, 0) and not accepted(fetch, 0) and not accepted(None, 0)


def test_the_lease_counts_from_the_send_time_of_the_newest_accepted_request() -> None:
    clock = Clock()
    lease = GroupLease(10.0, clock=clock)
    assert lease.renewed_at == -math.inf and not lease.valid()
    lease.renew(100.0)
    assert lease.valid_until == 105.0 and lease.fence_at == 108.0
    clock.now = 104.9
    assert lease.valid()
    clock.now = 105.0
    assert not lease.valid()
    lease.renew(99.0)  # a slower, older request answered late does not move it back
    assert lease.renewed_at == 100.0
    lease.renew(104.0)
    assert lease.valid() and lease.fence_at == 112.0


async def test_gate_raises_after_a_session_without_renewal_and_passes_once_renewed() -> None:
    lease = GroupLease(0.2)
    with pytest.raises(LeaseLost, match="has not accepted this member"):
        await lease.gate()
    lease.renew(lease._clock())
    await lease.gate()


def test_a_session_must_be_positive() -> None:
    with pytest.raises(ValueError):
        GroupLease(0)
