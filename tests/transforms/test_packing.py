"""The byte layouts between the JVM and the Python operator (the JVM side is exercised by
every Flink test; these pin the Python side, including the layout the JVM writes)."""
import struct

from hypothesis import given, strategies as st

from transforms.packing import (
    InRecord, batch_group, pack_batch, pack_out_record, pack_record, unpack_batch, unpack_out_record, unpack_record,
)

names = st.text(min_size=1, max_size=20)
blobs = st.one_of(st.none(), st.binary(max_size=300))


@given(topic=names, partition=st.integers(0, 2**31 - 1), offset=st.integers(0, 2**63 - 1),
       timestamp=st.integers(-1, 2**62), key=blobs, value=blobs,
       headers=st.dictionaries(names, st.binary(max_size=50), max_size=8))
def test_in_records_round_trip(topic, partition, offset, timestamp, key, value, headers):
    record = InRecord(topic, partition, offset, timestamp, key, value, headers)
    assert unpack_record(pack_record(record)) == record


def test_the_in_record_layout_is_what_the_jvm_writes():
    # i32 partition | i64 offset | i64 timestamp | str16 topic | bytes32 key | bytes32 value | u16 n | headers
    data = (struct.pack(">iqqH", 3, 42, 1_700_000_000_000, 1) + b"t" + struct.pack(">i", -1)
            + struct.pack(">i", 2) + b"{}" + struct.pack(">H", 2)
            + struct.pack(">H", 5) + b"ce_id" + struct.pack(">i", 2) + b"e1"
            + struct.pack(">H", 1) + b"x" + struct.pack(">i", -1))
    record = unpack_record(data)
    assert record == InRecord("t", 3, 42, 1_700_000_000_000, None, b"{}", {"ce_id": b"e1"})  # a null header is dropped
    assert record.origin == "t/3@42"


@given(topic=names, key=blobs, value=blobs, headers=st.lists(st.tuples(names, st.binary(max_size=50)), max_size=8))
def test_out_records_round_trip(topic, key, value, headers):
    assert unpack_out_record(pack_out_record(topic, key, value, headers)) == (topic, key, value, headers)


@given(records=st.lists(st.binary(max_size=100), max_size=20), group=st.text(max_size=30))
def test_batches_round_trip_and_carry_their_group(records, group):
    batch = pack_batch(records, group)
    assert unpack_batch(batch) == records and batch_group(batch) == group
