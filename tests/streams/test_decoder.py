"""The decode stage without Kafka: records in, routed items out, never an exception."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from correlators.identity import Identity
from schemas.adapters.base import ParseContext
from schemas.context import Asset, Change, Feedback
from schemas.models import Alert, Domain
from streams.decoder import Decoder, InputRecord, Routed, put_routed, written
from streams.kafka import BatchSender, key_partition
from streams.records import AlertItem, ContextItem, InvalidItem, TickItem, encode_item
from streams.settings import InputSpec
from streams.testing import AckingProducer

ROOT = Path(__file__).resolve().parents[2]
WAZUH = (ROOT / "examples/data/wazuh-ldsv1/ossec_spiral.json").read_bytes().splitlines()
T0 = datetime(2024, 3, 1, tzinfo=UTC)
AITADS_ROW = b"1642723347,Wazuh: ClamAV database update,172.19.130.4,mail,W-Sys-Cav,false_positive,-"


def _decoder(**kw: Any) -> Decoder:
    return Decoder(
        {"soc": InputSpec(format="auto"), "ait": InputSpec(format="aitads")},
        context_topics={"assets": Asset, "changes": Change, "feedback": Feedback},
        identity=kw.pop("identity", Identity()),
        max_record_bytes=kw.pop("max_record_bytes", 4096),
        dlq_max_raw_bytes=kw.pop("dlq_max_raw_bytes", 100),
        **kw,
    )


def _rec(topic: str, value: bytes | None, offset: int = 3, headers: Any = ()) -> InputRecord:
    return InputRecord(topic, 1, offset, 1_700_000_000_000, value, headers)


def test_an_alert_keeps_its_own_id_and_is_keyed_by_canonical_asset() -> None:
    identity = Identity([Asset(id="web-server", aliases=("user-0",))])
    (routed,) = _decoder(identity=identity).decode(_rec("soc", WAZUH[0]))
    assert isinstance(routed.item, AlertItem)
    assert routed.item.alert.id == orjson.loads(WAZUH[0])["id"]
    assert routed.key == b"web-server" and routed.partition is None and not routed.broadcast
    assert routed.item.arrived_ms == 1_700_000_000_000


def test_a_fetch_is_decoded_in_order_with_its_alerts_counted_and_newest_time() -> None:
    """`decode_fetched` (the decode stage's loop, compiled): every record's items in order,
    garbage included; each alert counted by (source, domain) in the metrics' tally, as a
    scrape reads it; the newest alert time for the source's watermark."""
    from datetime import UTC, datetime

    from prometheus_client import CollectorRegistry

    from streams.metrics import Metrics

    class Fetched:  # the attributes of an aiokafka ConsumerRecord the decoder reads
        def __init__(self, offset: int, value: bytes | None) -> None:
            self.topic, self.partition, self.offset, self.timestamp = "ait", 2, offset, 1_700_000_000_000
            self.value, self.headers = value, ()

    later = AITADS_ROW.replace(b"1642723347", b"1642723999")
    records = [Fetched(10, later), Fetched(11, b"not,a,row"), Fetched(12, None), Fetched(13, AITADS_ROW)]
    registry = CollectorRegistry()
    metrics = Metrics.create(registry)
    routed, latest = _decoder().decode_fetched(records, metrics.alerts.counts)
    items = [entry.item for entry in routed]
    assert [type(i) for i in items] == [AlertItem, InvalidItem, InvalidItem, AlertItem]
    assert [i.alert.id for i in items if isinstance(i, AlertItem)] == ["ait:2:10", "ait:2:13"]
    assert latest == datetime.fromtimestamp(1642723999, UTC)
    alert = items[0]
    assert isinstance(alert, AlertItem)
    scraped = registry.get_sample_value(
        "socnoc_alerts_total", {"source": alert.alert.source, "domain": alert.alert.domain.value}
    )
    assert scraped == 2
    counts: dict[tuple[str, ...], int] = {}
    routed, latest = _decoder().decode_fetched([Fetched(1, b""), Fetched(2, b"\xff")], counts)
    assert [type(entry.item) for entry in routed] == [InvalidItem, InvalidItem]
    assert latest is None and counts == {}


def test_an_rfc3164_line_takes_its_year_from_the_kafka_timestamp() -> None:
    """RFC 3164 has no year: a `Dec 31` line received on 1 January is from the old year."""
    from datetime import UTC, datetime

    decoder = Decoder({"sys": InputSpec(format="syslog")}, context_topics={}, identity=Identity())
    line = b"<34>Dec 31 23:59:50 gw01 sshd[7]: Failed password for root"
    new_year = int(datetime(2025, 1, 1, 0, 0, 5, tzinfo=UTC).timestamp() * 1000)
    (routed,) = decoder.decode(InputRecord("sys", 0, 1, new_year, line))
    assert isinstance(routed.item, AlertItem)
    assert routed.item.alert.time == datetime(2024, 12, 31, 23, 59, 50, tzinfo=UTC)
    mid_year = int(datetime(2025, 6, 1, tzinfo=UTC).timestamp() * 1000)
    (routed,) = decoder.decode(InputRecord("sys", 0, 2, mid_year, line.replace(b"Dec 31", b"May 31")))
    assert isinstance(routed.item, AlertItem) and routed.item.alert.time.year == 2025


def test_records_without_ids_take_topic_partition_offset() -> None:
    (routed,) = _decoder().decode(_rec("ait", AITADS_ROW, offset=42))
    assert isinstance(routed.item, AlertItem)
    assert routed.item.alert.id == "ait:1:42"
    assert routed.key == b"mail"


@pytest.mark.parametrize(
    ("value", "error", "fragment"),
    [
        (None, "DecodeError", "tombstone"),
        (b"", "DecodeError", "empty"),
        (b" \n\t", "DecodeError", "empty"),
        (b"\xff\xfe", "DecodeError", ""),
        (b'{"nothing": "known"}', "DecodeError", "no known format"),
        (b"x" * 5000, "RecordTooLarge", "5000 bytes"),
    ],
)
def test_bad_records_become_invalid_items(value: bytes | None, error: str, fragment: str) -> None:
    (routed,) = _decoder().decode(_rec("soc", value))
    item = routed.item
    assert isinstance(item, InvalidItem)
    assert item.alert_id == "soc:1:3" and item.decide
    assert item.error == error and item.reason.startswith(f"{error}: ")
    assert fragment in item.reason
    assert (item.topic, item.partition, item.offset) == ("soc", 1, 3)
    assert routed.key == b"soc:1:3"


def test_a_huge_record_keeps_only_a_head_of_its_raw_bytes() -> None:
    (routed,) = _decoder().decode(_rec("soc", b"y" * 5000))
    assert isinstance(routed.item, InvalidItem)
    assert routed.item.raw == b"y" * 100
    assert "keeps the first 100 of 5000 bytes" in routed.item.reason


def test_a_format_header_overrides_the_topic_format() -> None:
    (good,) = _decoder().decode(_rec("soc", AITADS_ROW, headers=[("socnoc-format", b"aitads")]))
    assert isinstance(good.item, AlertItem)
    (bad,) = _decoder().decode(_rec("soc", WAZUH[0], headers=[("socnoc-format", b"nope")]))
    assert isinstance(bad.item, InvalidItem) and "nope" in bad.item.reason


def test_the_topic_adapter_is_kept_per_topic_and_a_header_overrides_it_per_record() -> None:
    decoder = _decoder()
    first, again = (decoder.decode(_rec("soc", WAZUH[0]))[0] for _ in range(2))
    assert isinstance(first.item, AlertItem) and isinstance(again.item, AlertItem)
    (overridden,) = decoder.decode(_rec("soc", AITADS_ROW, headers=[("socnoc-format", b"aitads")]))
    assert isinstance(overridden.item, AlertItem)
    (plain,) = decoder.decode(_rec("soc", AITADS_ROW))  # the override did not stick to the topic
    assert isinstance(plain.item, InvalidItem)
    (back,) = decoder.decode(_rec("soc", WAZUH[1]))
    assert isinstance(back.item, AlertItem) and back.item.alert.source == first.item.alert.source


def test_an_adapter_bug_is_an_invalid_input_not_a_crash() -> None:
    decoder = _decoder()

    class Broken:
        name = "auto"

        def parse(self, raw: bytes, ctx: ParseContext) -> Any:
            raise ZeroDivisionError("oops")

    decoder._by_topic["soc"] = Broken()  # the topic's adapter (compiled, methods cannot be patched)
    (routed,) = decoder.decode(_rec("soc", WAZUH[0]))
    assert isinstance(routed.item, InvalidItem)
    assert routed.item.reason.startswith("InvalidInput: adapter error: ZeroDivisionError")


def test_context_is_broadcast_and_teaches_routing() -> None:
    decoder = _decoder()
    asset = Asset(id="mail-1", aliases=("mail",))
    (routed,) = decoder.decode(_rec("assets", asset.model_dump_json().encode()))
    assert routed.broadcast and isinstance(routed.item, ContextItem)
    assert routed.item.item == asset
    (alert,) = decoder.decode(_rec("ait", AITADS_ROW))
    assert alert.key == b"mail-1"


def test_bad_or_deleted_context_is_not_an_alert() -> None:
    decoder = _decoder()
    assert decoder.decode(_rec("assets", None)) == []  # a tombstone on a compacted topic
    (bad,) = decoder.decode(_rec("changes", b'{"id": "c1"}'))
    assert isinstance(bad.item, InvalidItem) and not bad.item.decide
    assert bad.item.reason.startswith("DecodeError: not a valid Change")


def test_single_partition_mode_routes_everything_to_partition_0() -> None:
    decoder = _decoder(single_partition=True)
    (alert,) = decoder.decode(_rec("ait", AITADS_ROW))
    (bad,) = decoder.decode(_rec("soc", b"garbage"))
    assert alert.partition == 0 and bad.partition == 0


async def test_routed_items_go_into_batches_in_order_and_come_back_with_their_offsets() -> None:
    """`put_routed` puts a fetch's keyed and placed items up to a broadcast (left to the
    caller) or a record that fills a batch; `written` gives each acknowledged record its
    offset: per partition, the order the items were routed in."""
    producer = AckingProducer(4, batch_size=1200, keep=True)  # (two or three alerts' records a batch)
    sender = BatchSender(producer, tagged=True)

    def alert(i: int) -> AlertItem:
        fields = {"id": f"a{i}", "source": "ids", "domain": Domain.SECURITY, "time": T0, "signature": "s"}
        return AlertItem(Alert(asset=f"h{i % 3}", **fields))

    routed = [Routed(alert(i), f"h{i % 3}".encode()) for i in range(4)]
    routed.append(Routed(TickItem("in:0", 5.0), None, broadcast=True))
    routed += [Routed(alert(4), None, partition=3)] + [Routed(alert(i), f"h{i % 3}".encode()) for i in range(5, 12)]
    order: list[tuple[int, Routed]] = []  # (partition, item) as put
    i, stops, filled = 0, [], 0
    while i < len(routed):
        start = i
        i = put_routed(sender, "internal", 4, routed, i)
        stops.append(i)
        for entry in routed[start:i]:
            keyed = key_partition(entry.key or b"", 4)
            order.append((entry.partition if entry.partition is not None else keyed, entry))
        if sender.queued:  # a batch filled up with the last item put
            filled += 1
            await sender.drain()
        elif i < len(routed):
            assert routed[i].broadcast  # (the caller broadcasts it)
            i += 1
    assert 4 in stops  # stopped at the broadcast, before it
    assert filled and len(producer.requests) == filled  # full batches went out as they filled
    await sender.send()
    local = written(sender.take_sent())
    assert len(local) == len(routed) - 1
    for partition in range(4):
        mine = [entry for p, entry in order if p == partition]
        got = [rec for rec in local if rec.partition == partition]
        assert [rec.item for rec in got] == [entry.item for entry in mine]
        assert [rec.offset for rec in got] == list(range(len(mine)))  # each one's offset in the log
        assert [rec.value for rec in got] == [encode_item(entry.item, key=entry.key).value for entry in mine]
        # what the batches held, read back: the same records at the same offsets
        held = [r for r in producer.produced if r.partition == partition]
        assert [(r.offset, r.value) for r in held] == [(rec.offset, rec.value) for rec in got]


def test_an_item_without_key_partition_or_broadcast_is_refused() -> None:
    sender = BatchSender(AckingProducer(4, batch_size=1200))
    with pytest.raises(ValueError, match="needs a key, a partition or to be broadcast"):
        put_routed(sender, "internal", 4, [Routed(TickItem("in:0", 5.0), None)], 0)
