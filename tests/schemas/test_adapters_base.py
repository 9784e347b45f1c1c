"""The shared time and field helpers every adapter relies on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from schemas.adapters.base import ParseContext, check_time, epoch_to_datetime
from schemas.adapters.fields import lookup, opt_int, parse_time, str_list
from schemas.errors import BadTimestamp, BadValue

CTX = ParseContext(record_id="x")


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), float("-inf"), -1, -0.5, 4102444800, 10**400, 1e300]
)
def test_absurd_epochs(value: float) -> None:
    with pytest.raises(BadTimestamp):
        epoch_to_datetime(value)


def test_epoch_zero_and_relative_seconds_are_valid() -> None:
    assert epoch_to_datetime(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert epoch_to_datetime(15) == datetime(1970, 1, 1, 0, 0, 15, tzinfo=UTC)
    assert epoch_to_datetime(4102444799.5).year == 2099


def test_a_repeated_epoch_gets_the_same_datetime_and_garbage_between_changes_nothing() -> None:
    first = epoch_to_datetime(1642723201)
    assert epoch_to_datetime(1642723201) is first  # a burst of one second: made once
    assert epoch_to_datetime(1642723201.0) is first  # the same number as a float
    for bad in (float("nan"), -1, 4102444800, 10**400):
        with pytest.raises(BadTimestamp):
            epoch_to_datetime(bad)
        assert epoch_to_datetime(1642723201) is first  # a refused value is not remembered
    assert epoch_to_datetime(1642723201.25) == first + timedelta(seconds=0.25)
    assert epoch_to_datetime(1642723201) == first
    assert epoch_to_datetime(True) == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)  # as before: True is 1


@pytest.mark.parametrize(
    "value",
    [
        datetime(2024, 1, 1),  # noqa: DTZ001 - naive on purpose
        datetime(2100, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_check_time_rejects(value: datetime) -> None:
    with pytest.raises(BadTimestamp):
        check_time(value)


def test_check_time_converts_to_utc() -> None:
    value = check_time(datetime(2024, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))))
    assert value == datetime(2024, 1, 1, tzinfo=UTC) and value.tzinfo is UTC


@pytest.mark.parametrize("value", [None, "", "noon", True, [], {}, "2024-02-30T00:00:00Z"])
def test_parse_time_rejects(value: Any) -> None:
    with pytest.raises(BadTimestamp):
        parse_time(value, CTX, "t")


def test_lookup_nested_flat_and_mixed() -> None:
    doc = {"a.b": 1, "c": {"d": {"e": 2}}, "f": {"g.h": 3}, "i": None}
    assert lookup(doc, "a.b") == 1
    assert lookup(doc, "c.d.e") == 2
    assert lookup(doc, "f.g.h") == 3
    assert lookup(doc, "c.x") is None
    assert lookup(doc, "i") is None


def test_small_converters() -> None:
    assert opt_int("12", "n") == 12 and opt_int(3.0, "n") == 3 and opt_int("", "n") is None
    for bad in (True, 1.5, "x", "9" * 30, [1]):
        with pytest.raises(BadValue):
            opt_int(bad, "n")
    assert str_list(["a", "", "a", "b"], "l") == ("a", "b")
    with pytest.raises(BadValue):
        str_list([1], "l")


def test_a_parse_context_has_its_defaults_and_says_what_it_holds() -> None:
    ctx = ParseContext("topic:0:7")
    assert (ctx.record_id, ctx.transport_time, ctx.default_tz, ctx.max_bytes) == ("topic:0:7", None, UTC, 1024 * 1024)
    assert dict(ctx.options) == {}
    when = datetime(2024, 5, 1, tzinfo=UTC)
    given = ParseContext(record_id="r", transport_time=when, default_tz=UTC, max_bytes=10, options={"k": "v"})
    assert (given.transport_time, given.max_bytes, dict(given.options)) == (when, 10, {"k": "v"})
    assert repr(ctx).startswith("ParseContext(record_id='topic:0:7', transport_time=None")
    # a Kafka timestamp (epoch ms) becomes the transport time when an adapter asks for it
    stamped = ParseContext("t:0:1", transport_ms=1_714_521_600_123)
    assert stamped.transport_time == datetime(2024, 5, 1, 0, 0, 0, 123000, tzinfo=UTC)
    assert stamped.transport_time is stamped.transport_time  # made once
    assert ParseContext("t:0:2", transport_time=when, transport_ms=0).transport_time == when
