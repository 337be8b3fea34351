"""Fetched records into `ConsumerRecord`s, faster than kafka-python does it.

kafka-python (pinned, 3.0.12) turns each fetched record into a `ConsumerRecord` in pure Python:
a `DefaultRecord` first, every header decoded, a dozen property reads. Measured on 5,000-record
batches of the relay's messages: 13.1 µs a record with their six headers, 5.7 with none; the
scoring worker spends about 30 µs of CPU an event in all. `FastRecords` reads the plain batches
(format v2, uncompressed: what our producers send and what Kafka stores them as) with
kafka-python's own `decode_varint` and little else per record, and leaves a record's headers as
bytes until something reads them (the workers read them for a dead letter and a score message's
ids): 3.3 and 2.9 µs; making each record with `tuple.__new__` has since taken records of 900-byte
values without headers from 2.80-3.05 to 2.63 µs. Compressed, control and old-format batches take
kafka-python's own path; so does a consumer with deserializers or `read_committed` (ours have
neither). The records are the same either way (tests/kit/test_records.py compares them), except
`serialized_header_size`, which is -1 (the headers are not measured unless read; nothing of ours
reads that size).

`install(consumer)` swaps it into a consumer's fetcher (kafka-python builds each partition's
records with `self.PartitionRecords(...)`); `group_consumer` does it for every worker.
"""

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord, Fetcher
from kafka.errors import CorruptRecordError
from kafka.protocol.consumer import IsolationLevel
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.util import decode_varint

log = logging.getLogger(__name__)

_PLAIN = 2  # record format v2
_HEADER = DefaultRecordBatch.HEADER_STRUCT.size  # the batch's header, before its first record


class Headers(Sequence):
    """A record's headers, (key, value) pairs as kafka-python gives them, decoded on first use.

    Until then it holds its batch's bytes (a poll's records hold their batches: about as much
    again as their values, for as long as the worker keeps the poll). Malformed headers raise
    CorruptRecordError where they are read, not in the poll; the batch's CRC is checked in the poll.
    """

    __slots__ = ("_buf", "_start", "_end", "_pairs")

    def __init__(self, buf: bytes, start: int, end: int) -> None:
        self._buf, self._start, self._end = buf, start, end
        self._pairs: list[tuple[str, bytes | None]] | None = None

    def _decoded(self) -> list[tuple[str, bytes | None]]:
        if self._pairs is None:
            buf, end = self._buf, self._end
            try:
                count, p = decode_varint(buf, self._start)
                pairs = []
                for _ in range(count):
                    n, p = decode_varint(buf, p)
                    if n < 0:
                        raise CorruptRecordError(f"invalid negative header key size {n}")
                    key = buf[p:p + n].decode()
                    p += n
                    n, p = decode_varint(buf, p)
                    pairs.append((key, buf[p:p + n] if n >= 0 else None))
                    p += max(n, 0)
            except (IndexError, ValueError) as exc:  # (UnicodeDecodeError is a ValueError)
                raise CorruptRecordError(f"invalid record headers: {exc!r}") from exc
            if count < 0 or p != end:
                raise CorruptRecordError(f"invalid record headers: {count} headers, {end - p} bytes left over")
            self._pairs, self._buf = pairs, b""
        return self._pairs

    def __getitem__(self, index):
        return self._decoded()[index]

    def __len__(self) -> int:
        return len(self._decoded())

    def __iter__(self) -> Iterator[tuple[str, bytes | None]]:
        return iter(self._decoded())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Headers, list, tuple)):
            return self._decoded() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # (like the list it stands for)

    def __repr__(self) -> str:
        return repr(self._decoded())


class FastRecords(Fetcher.PartitionRecords):
    """kafka-python's records of one partition's fetch, the plain batches read by `_plain`."""

    def _unpack_records(self, tp, records, key_deserializer, value_deserializer):
        if key_deserializer or value_deserializer or self.isolation_level != IsolationLevel.READ_UNCOMMITTED:
            yield from super()._unpack_records(tp, records, key_deserializer, value_deserializer)
            return
        try:
            batch, last = records.next_batch(), None
            while batch is not None:
                last = batch
                if self.check_crcs and not batch.validate_crc():
                    raise CorruptRecordError(f"Record batch for partition {tp} at offset {batch.base_offset} "
                                             "failed crc check")
                if batch.magic >= _PLAIN:
                    self.leader_epoch = batch.leader_epoch
                    if batch.is_control_batch:  # a transaction's marker: not a record for the consumer
                        self.next_fetch_offset = batch.next_offset
                        batch = records.next_batch()
                        continue
                if batch.magic >= _PLAIN and batch.compression_type == DefaultRecordBatch.CODEC_NONE:
                    yield from self._plain(tp, batch)
                else:
                    yield from self._library(tp, batch)
                batch = records.next_batch()
            if last is not None and last.magic >= _PLAIN:
                self.next_fetch_offset = last.next_offset  # (past records compacted away at its end)
            self.drain()
        except StopIteration:  # (as kafka-python: a StopIteration inside a generator would end it quietly)
            log.exception("StopIteration raised unpacking messageset")
            raise RuntimeError("StopIteration raised unpacking messageset") from None

    def _plain(self, tp, batch: DefaultRecordBatch) -> Iterator[ConsumerRecord]:
        """The records of an uncompressed v2 batch, read straight from its bytes."""
        buf = bytes(batch._buffer)  # noqa: SLF001 - the batch's bytes, as next_batch() sliced them
        topic, partition, epoch = tp.topic, tp.partition, self.leader_epoch
        base, ts_type, first_ts = batch.base_offset, batch.timestamp_type, batch.first_timestamp
        appended = batch.max_timestamp if ts_type == DefaultRecordBatch.LOG_APPEND_TIME else None
        varint, pos, new = decode_varint, _HEADER, tuple.__new__
        try:
            for _ in range(batch.records_count):
                start = pos
                length, p = varint(buf, pos)
                pos = p + length  # the next record; what is left of this one after its value is headers
                ts_delta, p = varint(buf, p + 1)  # (+1: the record's attributes, unused)
                offset_delta, p = varint(buf, p)
                n, p = varint(buf, p)
                key = buf[p:p + n] if n >= 0 else None
                p += max(n, 0)
                n, p = varint(buf, p)
                value = buf[p:p + n] if n >= 0 else None
                p += max(n, 0)
                if p >= pos:
                    raise CorruptRecordError(f"record at {start} is {length} bytes but runs past them")
                headers = [] if buf[p] == 0 and p + 1 == pos else Headers(buf, p, pos)
                offset = base + offset_delta
                stamp = first_ts + ts_delta if appended is None else appended
                self.records_read += 1
                self.bytes_read += length
                self.next_fetch_offset = offset + 1
                # (a named tuple made as a tuple: its class's `__new__` is Python, 0.3 µs against 0.15)
                yield new(ConsumerRecord, (topic, partition, epoch, offset, stamp, ts_type, key, value, headers, None,
                                           -1 if key is None else len(key), -1 if value is None else len(value), -1))
        except (IndexError, ValueError) as exc:  # (a varint past 64 bits: ValueError)
            raise CorruptRecordError(f"Found invalid record structure: {exc!r}") from exc
        if pos != len(buf):
            raise CorruptRecordError(f"{len(buf) - pos} unconsumed bytes after all records consumed")

    def _library(self, tp, batch) -> Iterator[ConsumerRecord]:
        """A batch the way kafka-python reads it (compressed, or an older format)."""
        for record in batch:
            if self.check_crcs and not record.validate_crc():
                raise CorruptRecordError(f"Record for partition {tp} at offset {record.offset} failed crc check")
            key, value, headers = record.key, record.value, record.headers
            self.records_read += 1
            self.bytes_read += record.size_in_bytes
            self.next_fetch_offset = record.offset + 1
            yield ConsumerRecord(
                tp.topic, tp.partition, self.leader_epoch, record.offset, record.timestamp, record.timestamp_type,
                key, value, headers, record.checksum, -1 if key is None else len(key),
                -1 if value is None else len(value),
                sum(len(k.encode()) + (len(v) if v is not None else 0) for k, v in headers) if headers else -1)


def install(consumer: KafkaConsumer) -> bool:
    """Read `consumer`'s fetches with `FastRecords`; False (logged) if this kafka-python has no
    fetcher to put it in, and the consumer reads as before."""
    fetcher: Any = getattr(consumer, "_fetcher", None)
    if not isinstance(fetcher, Fetcher) or not issubclass(getattr(fetcher, "PartitionRecords", object),
                                                         Fetcher.PartitionRecords):
        log.warning("kafka-python's fetcher is not as expected: records are read by kafka-python itself")
        return False
    fetcher.PartitionRecords = FastRecords
    return True
