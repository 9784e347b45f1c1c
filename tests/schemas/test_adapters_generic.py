from datetime import UTC, datetime

import pytest

from schemas.adapters.base import ParseContext
from schemas.adapters.registry import get_adapter
from schemas.errors import BadTimestamp, BadValue, DecodeError, InvalidInput
from schemas.models import Alert, Domain

CTX = ParseContext(record_id="soc.alerts:0:7")


def test_canonical_alert_with_record_id_fallback() -> None:
    raw = b'{"source":"edr","domain":"security","time":"2024-03-01T10:00:00Z","asset":"db-1","signature":"x"}'
    (alert,) = get_adapter("alert").parse(raw, CTX)
    assert isinstance(alert, Alert)
    assert alert.id == "soc.alerts:0:7" and alert.domain is Domain.SECURITY
    assert alert.time == datetime(2024, 3, 1, 10, tzinfo=UTC)
    assert alert.raw == raw.decode()


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"{not json", DecodeError),
        (b"[1,2]", DecodeError),
        (b'{"source":"a","domain":"security","asset":"h","signature":"s"}', BadTimestamp),
        (b'{"source":"a","domain":"nope","time":1,"asset":"h","signature":"s"}', BadValue),
        (b'{"source":"a","domain":"ops","time":1,"asset":"h","signature":"s","raw":"x"}', BadValue),
        (b'{"source":"a","domain":"ops","time":1e300,"asset":"h","signature":"s"}', BadTimestamp),
        (b"\xff\xfe", DecodeError),
    ],
)
def test_garbage_is_a_typed_error(raw: bytes, error: type[InvalidInput]) -> None:
    with pytest.raises(error):
        get_adapter("alert").parse(raw, CTX)
