"""The byte layouts that cross between Flink's JVM and knflow's Python operator.

Mirrors ``pipelines/java/io/knflow/flink/Packing.java``. Why bytes and batches: PyFlink's
Row coder costs ~20 us to decode and ~12 us to encode a row with a MAP of headers, one
BYTES field well under 1 us, and every call into the Python operator costs more than
routing one event; so the JVM packs each Kafka record into bytes (``PackedRecordDeserializer``),
groups them per source partition (``Batcher``), and the Python operator answers each batch
with one batch of records for the Kafka sink (``Unbatch`` + ``PackedRecordSerializer``).

All integers are big-endian; a length of -1 is a null::

    in record : i32 partition | i64 offset | i64 timestamp | str16 topic | bytes32 key
                | bytes32 value | u16 n | n x (str16 name | bytes32 value)
    out record: str16 topic | bytes32 key | bytes32 value | u16 n | n x (str16 name | bytes32 value)
    batch     : str16 group | i32 count | count x (i32 length | record)
    marker    : str16 group | i32 -1   (the JVM's Batcher, right before a checkpoint barrier)
"""
from __future__ import annotations

import struct
from typing import Iterable, Mapping, NamedTuple

_I32 = struct.Struct(">i")
_U16 = struct.Struct(">H")
_HEAD = struct.Struct(">iqqH")  # partition, offset, timestamp, topic length
_unpack_i32 = _I32.unpack_from
_unpack_u16 = _U16.unpack_from
_pack_i32 = _I32.pack
_pack_u16 = _U16.pack


class InRecord(NamedTuple):
    """One Kafka record as the job's source read it."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # ms since the epoch (Kafka's record timestamp)
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]

    @property
    def origin(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"


def _bytes_at(data: bytes, at: int) -> tuple[bytes | None, int]:
    (length,) = _unpack_i32(data, at)
    at += 4
    if length < 0:
        return None, at
    return data[at:at + length], at + length


def unpack_record(data: bytes) -> InRecord:
    """An ``in record`` -> ``InRecord``. A header repeated in the record keeps its last value
    (the CloudEvents Kafka binding allows one value per attribute); a null header value
    is dropped."""
    partition, offset, timestamp, topic_length = _HEAD.unpack_from(data, 0)
    at = _HEAD.size
    topic = data[at:at + topic_length].decode()
    at += topic_length
    key, at = _bytes_at(data, at)
    value, at = _bytes_at(data, at)
    (count,) = _unpack_u16(data, at)
    at += 2
    headers: dict[str, bytes] = {}
    for _ in range(count):
        (length,) = _unpack_u16(data, at)
        at += 2
        name = data[at:at + length].decode()
        header, at = _bytes_at(data, at + length)
        if header is not None:
            headers[name] = header
    return InRecord(topic, partition, offset, timestamp, key, value, headers)


def pack_record(record: InRecord) -> bytes:
    """``InRecord`` -> ``in record`` bytes (what the JVM's deserializer makes; tests, benchmarks)."""
    topic = record.topic.encode()
    parts = [_HEAD.pack(record.partition, record.offset, record.timestamp, len(topic)), topic,
             _pack_bytes(record.key), _pack_bytes(record.value)]
    _pack_headers(parts, record.headers.items())
    return b"".join(parts)


def _pack_bytes(value: bytes | None) -> bytes:
    return b"\xff\xff\xff\xff" if value is None else _pack_i32(len(value)) + value


def _pack_headers(parts: list[bytes], headers: Iterable[tuple[str, bytes | None]]) -> None:
    items = list(headers)
    parts.append(_pack_u16(len(items)))
    for name, value in items:
        encoded = name.encode()
        parts.append(_pack_u16(len(encoded)))
        parts.append(encoded)
        parts.append(_pack_bytes(value))


def pack_out_record(topic: str, key: bytes | None, value: bytes | None,
                    headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]]) -> bytes:
    """A record for the Kafka sink -> ``out record`` bytes."""
    encoded = topic.encode()
    parts = [_pack_u16(len(encoded)), encoded, _pack_bytes(key), _pack_bytes(value)]
    _pack_headers(parts, headers.items() if isinstance(headers, Mapping) else headers)
    return b"".join(parts)


def unpack_out_record(data: bytes) -> tuple[str, bytes | None, bytes | None, list[tuple[str, bytes | None]]]:
    """``out record`` bytes -> (topic, key, value, headers) (what the JVM's serializer reads; tests)."""
    (length,) = _unpack_u16(data, 0)
    topic = data[2:2 + length].decode()
    key, at = _bytes_at(data, 2 + length)
    value, at = _bytes_at(data, at)
    (count,) = _unpack_u16(data, at)
    at += 2
    headers = []
    for _ in range(count):
        (length,) = _unpack_u16(data, at)
        name = data[at + 2:at + 2 + length].decode()
        header, at = _bytes_at(data, at + 2 + length)
        headers.append((name, header))
    return topic, key, value, headers


def batch_group(batch: bytes) -> str:
    """The group (``"<topic>/<partition>"``) a batch belongs to: the Python operator's key."""
    (length,) = _unpack_u16(batch, 0)
    return batch[2:2 + length].decode()


def is_marker(batch: bytes) -> bool:
    """A checkpoint marker for the batch's group, not a batch (see ``Batcher.java``)."""
    (length,) = _unpack_u16(batch, 0)
    return _unpack_i32(batch, 2 + length)[0] == -1


def pack_marker(group: str) -> bytes:
    encoded = group.encode()
    return _pack_u16(len(encoded)) + encoded + _pack_i32(-1)


def unpack_batch(batch: bytes) -> list[bytes]:
    """A batch -> its records' bytes."""
    (length,) = _unpack_u16(batch, 0)
    at = 2 + length
    (count,) = _unpack_i32(batch, at)
    at += 4
    records = []
    for _ in range(count):
        (size,) = _unpack_i32(batch, at)
        at += 4
        records.append(batch[at:at + size])
        at += size
    return records


def pack_batch(records: list[bytes], group: str = "") -> bytes:
    """Records' bytes -> a batch (the Python operator's output; tests)."""
    encoded = group.encode()
    parts = [_pack_u16(len(encoded)), encoded, _pack_i32(len(records))]
    for record in records:
        parts.append(_pack_i32(len(record)))
        parts.append(record)
    return b"".join(parts)
