"""The worker's murmur2 picks the partitions Kafka's default partitioner picks."""

from __future__ import annotations

import random

from aiokafka.partitioner import murmur2 as reference

from streams.kafka import key_partition, murmur2


def test_murmur2_equals_the_reference_on_every_length() -> None:
    rng = random.Random(7)
    for length in range(0, 70):
        for _ in range(40):
            data = bytes(rng.randrange(256) for _ in range(length))
            assert murmur2(data) == reference(data)


def test_key_partition_is_the_default_partitioners() -> None:
    for key in (b"", b"a", b"web-01", b"soc.alerts:3:1234", "h\u00f6st".encode()):
        assert key_partition(key, 8) == (reference(key) & 0x7FFFFFFF) % 8
