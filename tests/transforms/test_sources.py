"""Pure source conversions: Kafka records and RocketMQ messages to CloudEvents, cron ticks."""
from __future__ import annotations

import base64
import json
import pickle
import struct
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from transforms.codec import encode_kafka, event_from_dict, event_to_dict
from transforms.sources import (
    CronError, KafkaSourceRecord, RocketMQSourceMessage, decode_key, due_ticks, java_float_text,
    kafka_record_to_event, parse_schedule, ping_event, rocketmq_message_to_event, sanitize_name,
)

UTC = timezone.utc
TS = 1700000000123  # 2023-11-14T22:13:20.123Z


def record(**fields) -> KafkaSourceRecord:
    base = {"topic": "interactions", "partition": 3, "offset": 42, "timestamp_ms": TS, "value": b'{"coins": 5}'}
    base.update(fields)
    return KafkaSourceRecord(**base)


def wrap(rec: KafkaSourceRecord, **kwargs) -> dict:
    return event_to_dict(kafka_record_to_event(rec, namespace="streaming", name="src", **kwargs))


def test_plain_record_is_wrapped_as_knative_does():
    rec = record(key=b"room-7", headers=[("Room-Id", b"r7"), ("X_Trace.ID", b"abc"), ("content-type", b"Application/JSON")])
    assert wrap(rec) == {
        "specversion": "1.0",
        "id": "partition:3/offset:42",
        "time": "2023-11-14T22:13:20.123Z",
        "type": "dev.knative.kafka.event",
        "source": "/apis/v1/namespaces/streaming/kafkasources/src#interactions",
        "subject": "partition:3#42",
        "partitionkey": "room-7",
        "key": "room-7",
        "kafkaheaderroomid": "r7",
        "kafkaheaderxtraceid": "abc",
        "datacontenttype": "application/json",
        "knativekafkapartition": 3,
        "knativekafkaoffset": 42,
        "data_base64": base64.b64encode(b'{"coins": 5}').decode(),
    }


def test_no_key_no_headers_no_value():
    doc = wrap(record(value=None))
    assert "key" not in doc and "partitionkey" not in doc and "datacontenttype" not in doc and "data_base64" not in doc
    assert "key" not in wrap(record(key=b""))  # an empty key is no key (KeyDeserializer)


@pytest.mark.parametrize(("key_type", "key", "expected"), [
    ("string", "héllo".encode(), "héllo"),
    ("string", b"\xff", "\ufffd"),
    ("int", struct.pack(">i", -5), -5),
    ("int", b"12345", "12345"),                        # not 4 bytes: falls back to text
    ("float", struct.pack(">f", 1.5), "1.5"),
    ("float", struct.pack(">f", 0.1), "0.1"),          # float32 shortest digits, as Float.toString
    ("float", struct.pack(">d", 1e10), "1.0E10"),
    ("float", b"1.25", "1.25"),                        # 4 bytes are a float32, not text...
    ("float", b"abc", "abc"),                          # ...other lengths fall back to text
    ("byte-array", b"\x00\x01\xfe", base64.b64encode(b"\x00\x01\xfe").decode()),
])
def test_key_types(key_type, key, expected):
    if key == b"1.25":
        expected = java_float_text(struct.unpack(">f", key)[0], single=True)
    assert decode_key(key, key_type) == expected
    doc = wrap(record(key=key), key_type=key_type)
    assert doc["key"] == expected and doc["partitionkey"] == expected


def test_java_float_text():
    assert [java_float_text(v) for v in (1.0, 100.0, 1234567.0, 1e7, 0.001, 1e-4, -2.5, float("nan"), -0.0)] == \
        ["1.0", "100.0", "1234567.0", "1.0E7", "0.001", "1.0E-4", "-2.5", "NaN", "-0.0"]
    assert java_float_text(struct.unpack(">f", struct.pack(">f", 3.3))[0], single=True) == "3.3"


def test_header_names_sanitised_and_last_wins():
    assert sanitize_name("X-Request_ID.v2") == "xrequestidv2"
    doc = wrap(record(headers=[("Trace", b"1"), ("trace", b"2"), ("odd", b"\xc3\xa9\xff"), ("empty", None)]))
    assert doc["kafkaheadertrace"] == "2" and doc["kafkaheaderodd"] == "é\ufffd" and doc["kafkaheaderempty"] == ""


def test_cloudevent_records_pass_through_both_modes():
    event = event_from_dict({"specversion": "1.0", "id": "e1", "source": "/app", "type": "com.live.gift",
                             "time": "2026-01-02T03:04:05Z", "room": "r1", "datacontenttype": "application/json",
                             "data": {"coins": 100}})
    key, headers, value = encode_kafka(event, "binary")
    binary = wrap(record(key=key, headers=headers, value=value), ce_overrides={"platform": "live"})
    key, headers, value = encode_kafka(event, "structured")
    structured = wrap(record(key=key, headers=headers, value=value), ce_overrides={"platform": "live"})
    expected = dict(event_to_dict(event), knativekafkapartition=3, knativekafkaoffset=42, platform="live")
    assert binary == expected and structured == expected


def test_broken_cloudevent_is_wrapped_not_dropped():
    # ce_specversion but no id: Knative's deserializer fails and the record is wrapped
    doc = wrap(record(headers=[("ce_specversion", b"1.0"), ("ce_type", b"t")], value=b"x"))
    assert doc["type"] == "dev.knative.kafka.event" and doc["kafkaheadercespecversion"] == "1.0"
    assert base64.b64decode(doc["data_base64"]) == b"x"


def test_overrides_replace_extensions_and_large_offsets():
    doc = wrap(record(offset=2**40, headers=[("team", b"a")]), ce_overrides={"kafkaheaderteam": "b", "team": "c"})
    assert doc["kafkaheaderteam"] == "b" and doc["team"] == "c"
    assert doc["knativekafkaoffset"] == str(2**40) and doc["id"] == f"partition:3/offset:{2**40}"


def rmq(**fields) -> RocketMQSourceMessage:
    base = {"topic": "gifts", "message_id": "0102FC00000001", "body": b'{"coins": 100}', "born_timestamp_ms": TS,
            "tag": "gift", "keys": ("k2", "k1"), "properties": {"Room-Id": "r1", "lang": "en"}}
    base.update(fields)
    return RocketMQSourceMessage(**base)


def test_rocketmq_message_is_wrapped():
    doc = event_to_dict(rocketmq_message_to_event(rmq(), namespace="streaming", name="gifts-src",
                                                  ce_overrides={"platform": "live"}))
    assert doc == {
        "specversion": "1.0", "id": "0102FC00000001", "time": "2023-11-14T22:13:20.123Z",
        "type": "dev.knative.rocketmq.event", "source": "/apis/v1/namespaces/streaming/rocketmqsources/gifts-src#gifts",
        "rocketmqtag": "gift", "rocketmqkeys": "k1 k2", "rocketmqpropertyroomid": "r1", "rocketmqpropertylang": "en",
        "platform": "live", "data_base64": base64.b64encode(b'{"coins": 100}').decode(),
    }
    bare = event_to_dict(rocketmq_message_to_event(rmq(tag=None, keys=(), properties={}), namespace="n", name="s"))
    assert not any(k.startswith("rocketmq") for k in bare)


def test_rocketmq_cloudevent_binding_passes_through():
    binary = rmq(body=b'{"coins": 1}', properties={"CE_specversion": "1.0", "CE_id": "e9", "CE_source": "/app",
                                                   "CE_type": "com.live.like", "CE_contenttype": "application/json",
                                                   "CE_room": "r2"})
    doc = event_to_dict(rocketmq_message_to_event(binary, namespace="n", name="s"))
    assert doc == {"specversion": "1.0", "id": "e9", "source": "/app", "type": "com.live.like",
                   "datacontenttype": "application/json", "room": "r2", "data": {"coins": 1}}
    structured = rmq(body=json.dumps({"specversion": "1.0", "id": "e8", "source": "/a", "type": "t"}).encode(),
                     properties={"CE_contenttype": "application/cloudevents+json"})
    assert event_to_dict(rocketmq_message_to_event(structured, namespace="n", name="s"))["id"] == "e8"
    empty = rmq(body=b"\0", properties={"CE_specversion": "1.0", "CE_id": "e7", "CE_source": "/a", "CE_type": "t"})
    assert "data" not in event_to_dict(rocketmq_message_to_event(empty, namespace="n", name="s"))


# --------------------------------------------------------------------------- PingSource


def at(*args, tz=UTC) -> datetime:
    return datetime(*args, tzinfo=tz)


def test_schedule_forms():
    s = parse_schedule("*/15 * * * *")
    assert list(s.ticks(at(2026, 1, 1, 0, 0), at(2026, 1, 1, 1, 0))) == [at(2026, 1, 1, 0, m) for m in (15, 30, 45)] + [at(2026, 1, 1, 1, 0)]
    assert parse_schedule("@hourly").next_after(at(2026, 1, 1, 0, 30)) == at(2026, 1, 1, 1, 0)
    assert parse_schedule("@daily").next_after(at(2026, 1, 1, 0, 0)) == at(2026, 1, 2)
    assert parse_schedule("0 9 * JAN MON-FRI").next_after(at(2026, 1, 3)) == at(2026, 1, 5, 9)  # a Monday
    assert parse_schedule("0 0 ? * *").next_after(at(2026, 1, 1)) == at(2026, 1, 2)
    every = parse_schedule("@every 1m30s")
    assert every.every == 90 and every.next_after(at(2026, 1, 1, 0, 0, 1)) == at(2026, 1, 1, 0, 1, 30)
    assert parse_schedule("@every 1500ms").every == 1   # whole seconds, as robfig/cron rounds
    assert pickle.loads(pickle.dumps(every)) == every


def test_timezone_and_dst():
    paris = ZoneInfo("Europe/Paris")
    s = parse_schedule("30 2 * * *", "Europe/Paris")
    # 2026-03-29: clocks jump 02:00 -> 03:00 in Paris; the 02:30 tick that day fires once,
    # when the gap ends (croniter's rule)
    ticks = list(s.ticks(at(2026, 3, 28, 12, tz=paris), at(2026, 3, 31, 12, tz=paris)))
    assert [t.astimezone(paris).strftime("%d %H:%M") for t in ticks] == ["29 03:00", "30 02:30", "31 02:30"]
    assert all(t.tzinfo == UTC for t in ticks)
    assert parse_schedule("CRON_TZ=Asia/Tokyo 0 9 * * *").next_after(at(2025, 12, 31, 12)) == at(2026, 1, 1, 0)


@pytest.mark.parametrize(("spec", "tz", "field", "fragment"), [
    ("* * * *", None, "schedule", "expected exactly 5 fields"),
    ("* * * * * *", None, "schedule", "expected exactly 5 fields"),
    ("0 0 L * *", None, "schedule", "'L' is not allowed"),
    ("0 0 * * 1#2", None, "schedule", "invalid day of week field"),
    ("0 0 * * 7", None, "schedule", "days of the week are 0-6"),
    ("@reboot", None, "schedule", "unrecognized descriptor"),
    ("@every 0s", None, "schedule", "at least 1s"),
    ("@every soon", None, "schedule", "invalid duration"),
    ("0 * * * *", "Nowhere/City", "timezone", "unknown time zone"),
    ("CRON_TZ=UTC 0 * * * *", "UTC", "schedule", "both set a time zone"),
])
def test_bad_schedules(spec, tz, field, fragment):
    with pytest.raises(CronError) as info:
        parse_schedule(spec, tz)
    assert info.value.field == field and fragment in info.value.message


def test_due_ticks_on_time_and_restart():
    s = parse_schedule("@every 2s")
    created = at(2026, 1, 1, 0, 0, 0, 500000)
    # polled often: each tick once, in order, the cursor carried from call to call
    emitted, cursor = [], created
    for step in range(1, 41):
        decision = due_ticks(s, cursor, created + timedelta(seconds=step * 0.25))
        emitted.extend(decision.emit)
        cursor = decision.cursor
    assert emitted == [at(2026, 1, 1, 0, 0, 2 * n) for n in range(1, 6)]
    # a restart from a checkpoint taken at `cursor`: replaying the same calls gives the same ticks
    again = due_ticks(s, cursor, cursor + timedelta(seconds=2.1))
    assert again.emit == (at(2026, 1, 1, 0, 0, 12),) and again.skipped == 0
    assert due_ticks(s, again.cursor, again.cursor).emit == ()     # nothing twice


def test_missed_ticks_are_skipped_as_knative_does_or_caught_up():
    s = parse_schedule("@every 2s")
    cursor, now = at(2026, 1, 1, 0, 0, 0), at(2026, 1, 1, 0, 1, 0)   # stopped for a minute
    skip = due_ticks(s, cursor, now, grace=timedelta(seconds=3))
    assert skip.emit == (at(2026, 1, 1, 0, 0, 58), at(2026, 1, 1, 0, 1, 0)) and skip.skipped == 28
    assert skip.cursor == now and skip.next_tick == at(2026, 1, 1, 0, 1, 2)
    late = due_ticks(s, cursor, now, catch_up=True)
    assert len(late.emit) == 30 and late.skipped == 0 and late.emit[0] == at(2026, 1, 1, 0, 0, 2)
    assert len(due_ticks(s, cursor, now, catch_up=True, limit=5).emit) == 5


def test_ping_event():
    tick = at(2026, 1, 1, 12, 0)
    event = ping_event(tick, namespace="streaming", name="beat", content_type="application/json", data={"beat": 1},
                       ce_overrides={"platform": "live"})
    doc = event_to_dict(event)
    assert doc == {"platform": "live", "specversion": "1.0", "id": doc["id"],
                   "source": "/apis/v1/namespaces/streaming/pingsources/beat", "type": "dev.knative.sources.ping",
                   "time": "2026-01-01T12:00:00Z", "datacontenttype": "application/json", "data": {"beat": 1}}
    same = ping_event(tick, namespace="streaming", name="beat")
    other = ping_event(tick + timedelta(minutes=1), namespace="streaming", name="beat")
    assert same.get_id() == event.get_id() != other.get_id()          # one id per (source, tick)
    assert event_to_dict(ping_event(tick, namespace="n", name="p", data=b"\x00\x01"))["data_base64"] == "AAE="
