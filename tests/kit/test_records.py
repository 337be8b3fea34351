"""kit.records: the consumers' faster reading of fetched records gives what kafka-python gives."""

import struct
import uuid

import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

from services.kit import records
from services.kit.consumer import group_consumer
from services.kit.kafka import ensure_topics
from services.kit.records import FastRecords, Headers
from services.kit.settings import Settings

TP = TopicPartition("t", 3)
_ATTRIBUTES, _CRC = DefaultRecordBatch.ATTRIBUTES_OFFSET, DefaultRecordBatch.CRC_OFFSET

record_st = st.tuples(
    st.integers(-2**40, 2**40),  # timestamp delta from the batch's first
    st.none() | st.binary(max_size=40),
    st.none() | st.binary(max_size=300) | st.binary(min_size=8_200, max_size=8_300),  # 1-, 2- and 3-byte lengths
    st.lists(st.tuples(st.text(max_size=12), st.none() | st.binary(max_size=200)), max_size=7),
)


def batch(base_offset: int, items, *, compression: int = 0, first_ts: int = 1_700_000_000_000,
          attributes: int = 0) -> bytes:
    """One v2 batch of `items` (timestamp delta, key, value, headers), offsets from `base_offset`;
    `attributes`: bits set afterwards (control, log-append time), the CRC made again."""
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=False,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=2**30)
    for i, (delta, key, value, headers) in enumerate(items):
        builder.append(i, timestamp=first_ts + delta, key=key, value=value, headers=headers)
    buf = builder.build()
    struct.pack_into(">q", buf, 0, base_offset)
    if attributes:
        (bits,) = struct.unpack_from(">h", buf, _ATTRIBUTES)
        struct.pack_into(">h", buf, _ATTRIBUTES, bits | attributes)
        struct.pack_into(">I", buf, _CRC, crc32c(bytes(buf[_ATTRIBUTES:])))
    return bytes(buf)


def read(cls, data: bytes, fetch_offset: int = 0, n: int | None = None, **kwargs):
    """(records taken, the PartitionRecords after) as `cls` reads `data`."""
    parsed = cls(fetch_offset, TP, MemoryRecords(data), **kwargs)
    return parsed.take(n), parsed


def same(ours, theirs) -> None:
    """Every field but serialized_header_size (ours -1: headers are decoded only when read)."""
    assert [r[:12] for r in ours] == [r[:12] for r in theirs]
    assert [list(r.headers) for r in ours] == [list(r.headers) for r in theirs]
    assert all(r.serialized_header_size == -1 for r in ours)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(record_st, min_size=1, max_size=12), min_size=1, max_size=4), st.data())
def test_plain_batches_read_as_kafka_python_reads_them(batches, data):
    offsets, start = [], 0
    for items in batches:
        offsets.append(start)
        start += len(items) + data.draw(st.integers(0, 3))  # (a gap: records compacted away)
    raw = b"".join(batch(base, items) for base, items in zip(offsets, batches))
    fetch_offset = data.draw(st.integers(0, start))
    take = data.draw(st.none() | st.integers(1, 30))
    ours, after = read(FastRecords, raw, fetch_offset, take)
    theirs, before = read(Fetcher.PartitionRecords, raw, fetch_offset, take)
    same(ours, theirs)
    assert (after.next_fetch_offset, after.records_read, after.bytes_read, after.leader_epoch, bool(after)) == (
        before.next_fetch_offset, before.records_read, before.bytes_read, before.leader_epoch, bool(before))
    if before:  # (a drained one has nothing more to take)
        same(after.take(None), before.take(None))
        assert (after.next_fetch_offset, after.records_read, after.bytes_read) == (
            before.next_fetch_offset, before.records_read, before.bytes_read)


def test_compressed_control_and_log_append_time_batches_too():
    items = [(5, b"k", b"v" * 70, [("event_id", b"e1")]), (-3, None, None, []), (9, b"", b"", [("x", None)])]
    raw = (batch(0, items, compression=DefaultRecordBatch.CODEC_GZIP)  # kafka-python's own path
           + batch(3, items[:1], attributes=DefaultRecordBatch.CONTROL_MASK)  # skipped, as kafka-python does
           + batch(4, items, attributes=DefaultRecordBatch.TIMESTAMP_TYPE_MASK))
    ours, after = read(FastRecords, raw)
    theirs, before = read(Fetcher.PartitionRecords, raw)
    assert [r.offset for r in ours] == [0, 1, 2, 4, 5, 6]
    assert {r.timestamp for r in ours[3:]} == {1_700_000_000_009} and ours[3].timestamp_type == 1  # the max
    assert [r[:12] for r in ours] == [r[:12] for r in theirs]
    # the compressed batch went kafka-python's way: its header sizes are measured
    assert [r.serialized_header_size for r in ours[:3]] == [r.serialized_header_size for r in theirs[:3]] == [10, -1, 1]
    assert after.next_fetch_offset == before.next_fetch_offset == 7


def test_a_record_that_runs_past_its_length_is_refused_as_corrupt():
    raw = bytearray(batch(0, [(0, b"key", b"value", []), (1, b"key", b"value", [])]))
    first = DefaultRecordBatch.HEADER_STRUCT.size
    raw[first] = 2 * 4  # the first record's length (zigzag): 4 bytes, shorter than what it holds
    with pytest.raises(CorruptRecordError):
        read(FastRecords, bytes(raw), check_crcs=False)
    with pytest.raises(CorruptRecordError, match="crc"):  # (by default the CRC finds it first)
        read(FastRecords, bytes(raw))


def test_headers_decode_when_read():
    pairs = [("event_id", b"\x00\xff"), ("request_id", None), ("类型", b"")]
    (record,), _ = read(FastRecords, batch(0, [(0, None, b"{}", pairs)]))
    headers = record.headers
    assert isinstance(headers, Headers) and headers._pairs is None
    assert headers == pairs and list(headers) == pairs and len(headers) == 3 and headers[-1] == ("类型", b"")
    assert headers != pairs[:2] and headers != "event_id"
    assert dict(headers)["event_id"] == b"\x00\xff" and repr(headers) == repr(pairs)
    (bare,), _ = read(FastRecords, batch(0, [(0, None, b"{}", [])]))
    assert bare.headers == [] and type(bare.headers) is list


def test_malformed_headers_are_refused_when_read():
    buf = bytes([2 * 2, 2 * 1]) + b"k" + bytes([2 * 1]) + b"v"  # two headers said, one there
    with pytest.raises(CorruptRecordError):
        list(Headers(buf, 0, len(buf)))
    good = Headers(buf[:1] + bytes([2]) + buf[1:], 1, len(buf) + 1)
    assert list(good) == [("k", b"v")]


def test_install_leaves_a_consumer_without_kafka_pythons_fetcher_as_it_is(caplog):
    class NotAConsumer:
        _fetcher = object()

    assert records.install(NotAConsumer()) is False
    assert "not as expected" in caplog.text


@pytest.mark.broker
def test_a_group_consumer_reads_the_brokers_records_as_kafka_python_does(broker):
    topic = f"records-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap_servers, [topic], 2)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    for i in range(300):
        producer.send(topic, key=f"k{i % 7}".encode(), value=b"x" * (i * 3),
                      headers=[("event_id", str(uuid.uuid4()).encode()), ("n", str(i).encode()), ("empty", b"")])
    producer.flush()
    producer.close()

    settings_ = Settings(kafka_bootstrap_servers=broker.bootstrap_servers)
    ours = group_consumer(settings_, group=f"g-{topic}", topics=[topic], batch=500, on_assigned=lambda parts: None)
    plain = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, enable_auto_commit=False, group_id=None)
    try:
        assert ours._fetcher.PartitionRecords is FastRecords
        assert plain._fetcher.PartitionRecords is Fetcher.PartitionRecords  # (only ours are changed)
        tps = [TopicPartition(topic, p) for p in range(2)]
        ours.unsubscribe()
        for consumer in (ours, plain):
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
        got = {}
        for name, consumer in (("ours", ours), ("plain", plain)):
            seen = []
            for _ in range(50):
                for messages in consumer.poll(timeout_ms=500, max_records=100).values():
                    seen += messages
                if len(seen) >= 300:
                    break
            got[name] = sorted(seen, key=lambda m: (m.partition, m.offset))
        assert len(got["ours"]) == 300
        same(got["ours"], got["plain"])
    finally:
        ours.close()
        plain.close()
