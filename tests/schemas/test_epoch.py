"""`epoch_seconds`: `datetime.timestamp()` with the last answer kept for the same object."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from schemas.epoch import epoch_seconds

# hypothesis takes naive bounds and adds the zones itself
_AWARE = st.datetimes(
    min_value=datetime(1970, 1, 2),  # noqa: DTZ001
    max_value=datetime(2099, 12, 31),  # noqa: DTZ001
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))]),
)


@given(_AWARE)
def test_it_is_the_timestamp(moment: datetime) -> None:
    assert epoch_seconds(moment) == moment.timestamp()
    assert epoch_seconds(moment) == moment.timestamp()  # the kept answer, asked again


def test_equal_moments_of_other_objects_and_other_moments_get_their_own_answer() -> None:
    first = datetime(2022, 1, 21, 0, 0, 1, tzinfo=UTC)
    assert epoch_seconds(first) == 1642723201.0
    later = first + timedelta(microseconds=1)
    assert epoch_seconds(later) == 1642723201.000001
    same_instant = datetime(2022, 1, 20, 19, 0, 1, tzinfo=timezone(timedelta(hours=-5)))
    assert epoch_seconds(same_instant) == 1642723201.0
    assert epoch_seconds(first) == 1642723201.0

