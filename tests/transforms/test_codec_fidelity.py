"""An event leaves as it came: attribute texts (``time`` with nanoseconds and any offset),
extension values of every CloudEvents type, unusual but valid header encodings, and
binary payloads (``keep_payload``), through every binding, task records, dead letters."""
from __future__ import annotations

import copy
import json
import pickle
from datetime import datetime, timedelta, timezone

import pytest

from transforms.codec import (
    CodecError,
    Timestamp,
    decode_http,
    decode_kafka,
    decode_structured,
    encode_http,
    encode_kafka,
    encode_structured,
    event_from_dict,
)
from transforms.delivery import DeliveryTask, dead_letter_event, event_record_json

BASE = {"specversion": "1.0", "id": "e-1", "source": "/s", "type": "t"}
HTTP = {"ce-specversion": "1.0", "ce-id": "e-1", "ce-source": "/s", "ce-type": "t"}
KAFKA = [("ce_specversion", b"1.0"), ("ce_id", b"e-1"), ("ce_source", b"/s"), ("ce_type", b"t")]

TIMES = [
    "2026-11-29T10:00:20.123456789Z",  # nanoseconds: datetime keeps microseconds only
    "2026-11-29T10:00:20.123456789+05:45",  # a non-UTC, non-hour offset
    "2026-11-29T10:00:20-00:00",
    "2026-11-29T10:00:20+00:00",
    "2026-11-29t10:00:20.1z",  # lower-case t and z are RFC 3339 too
    "2026-11-29T10:00:20.100000Z",  # trailing zeros
    "2026-11-29T10:00:20.000000001Z",
    "2026-11-29T10:00:20.12345678912Z",  # more digits than nanoseconds
    "2026-11-29T23:59:59.999999999-12:00",
]


def times_everywhere(text: str) -> list[str]:
    """``text`` as ``time`` through every reader and writer, and the texts each wrote."""
    out = []
    readers = [
        event_from_dict({**BASE, "time": text}),
        decode_structured(json.dumps({**BASE, "time": text})),
        decode_http({**HTTP, "ce-time": text}, b"")[0],
        decode_kafka([*KAFKA, ("ce_time", text.encode())], None),
    ]
    for event in readers:
        out.append(json.loads(encode_structured(event))["time"])
        out.append(encode_http(event)[0]["ce-time"])
        out.append(json.loads(encode_http(event, "structured")[1])["time"])
        out.append(dict(encode_kafka(event)[1])["ce_time"].decode())
        out.append(dict(encode_kafka(event, "structured")[1] and [("v", encode_kafka(event, "structured")[2])])["v"]
                   and json.loads(encode_kafka(event, "structured")[2])["time"])
    return out


@pytest.mark.parametrize("text", TIMES)
def test_time_text_survives_every_binding(text):
    assert set(times_everywhere(text)) == {text}


@pytest.mark.parametrize("text", TIMES)
def test_time_is_still_a_datetime(text):
    value = decode_http({**HTTP, "ce-time": text}, b"")[0].get_time()
    assert isinstance(value, datetime) and isinstance(value, Timestamp) and value.text == text
    assert value == datetime.fromisoformat(text.upper())  # the typed value: microseconds
    assert value.utcoffset() is not None


def test_nanoseconds_and_offset_keep_their_instant():
    value = event_from_dict({**BASE, "time": "2026-11-29T10:00:20.123456789+05:45"}).get_time()
    assert value == datetime(2026, 11, 29, 4, 15, 20, 123456, tzinfo=timezone.utc)
    assert value.utcoffset() == timedelta(hours=5, minutes=45)


def test_time_text_survives_pickle_copy_and_task_records():
    text = "2026-11-29T10:00:20.123456789+05:45"
    event = decode_http({**HTTP, "ce-time": text}, b"")[0]
    value = event.get_time()
    for clone in (pickle.loads(pickle.dumps(value)), copy.copy(value), copy.deepcopy(value),
                  pickle.loads(pickle.dumps(event)).get_time()):
        assert type(clone) is Timestamp and clone.text == text and clone == value
    assert json.loads(event_record_json(event))["time"] == text
    task = DeliveryTask.from_bytes(DeliveryTask("ns/tr", event, due_at=1.0).to_bytes())
    assert encode_http(task.event)[0]["ce-time"] == text
    assert encode_http(task.retried(1, 1.0, 2.0).event)[0]["ce-time"] == text
    dead = dead_letter_event(task.event, "http://x", 500, b"boom")
    assert dict(encode_kafka(dead)[1])["ce_time"] == text.encode()


def test_arithmetic_results_are_written_from_their_value():
    value = event_from_dict({**BASE, "time": "2026-11-29T10:00:20.123456789Z"}).get_time()
    later = value + timedelta(seconds=1)
    event = event_from_dict({**BASE, "time": later})
    assert encode_http(event)[0]["ce-time"] == "2026-11-29T10:00:21.123456Z"
    replaced = value.replace(hour=11)
    assert encode_http(event_from_dict({**BASE, "time": replaced}))[0]["ce-time"] == "2026-11-29T11:00:20.123456Z"


# Extension values of every CloudEvents type, in their canonical string form (binary mode)
# and their JSON form (structured mode).
EXTENSIONS = {
    "boolext": True,
    "intext": -2147483648,
    "stringext": "ünïcode \"quoted\" % 100",
    "binaryext": "AQID/w==",  # Binary: base64 string
    "uriext": "https://example.com/a?b=c#d",
    "urirefext": "../relative/ref",
    "timeext": "2026-11-29T10:00:20.123456789+05:45",  # Timestamp extension: kept as its string
}
CANONICAL = {k: ("true" if v is True else str(v)) for k, v in EXTENSIONS.items()}


def test_extension_values_of_every_type_round_trip():
    event = decode_structured(json.dumps({**BASE, **EXTENSIONS}))
    # structured -> structured: JSON types kept
    assert {k: v for k, v in json.loads(encode_structured(event)).items() if k in EXTENSIONS} == EXTENSIONS
    # -> binary HTTP -> decoded: canonical strings, byte for byte
    headers, body = encode_http(event)
    back = decode_http(headers, body)[0].get_attributes()
    assert {k: back[k] for k in EXTENSIONS} == CANONICAL
    # -> Kafka -> decoded -> Kafka: the same header bytes
    _, kafka_headers, value = encode_kafka(event)
    again = encode_kafka(decode_kafka(kafka_headers, value))[1]
    assert again == kafka_headers
    assert {k[3:]: v.decode() for k, v in kafka_headers if k[3:] in EXTENSIONS} == CANONICAL


@pytest.mark.parametrize("header,value,expected", [
    ("ce-subject", "caf%c3%a9 au lait", "café au lait"),  # lower-case percent hex
    ("ce-subject", "caf%C3%A9", "café"),
    ("ce-subject", '"quoted, with comma"', "quoted, with comma"),  # a quoted-string
    ("ce-subject", '"a \\"b\\" c"', 'a "b" c'),
    ("ce-subject", "\t padded \t", "padded"),  # optional whitespace around a value
    ("CE-Subject", "Mixed-Case Name", "Mixed-Case Name"),  # header names are case-insensitive
    ("ce-subject", "50%", "50%"),  # a lone % that is not an escape
    ("ce-myext", "%F0%9F%8E%81 gift", "\U0001f381 gift"),
    ("ce-time", "2026-11-29T10:00:20.123456789%2B05:45", "2026-11-29T10:00:20.123456789+05:45"),
])
def test_unusual_header_encodings_keep_the_value(header, value, expected):
    event = decode_http({**HTTP, header: value}, b"")[0]
    name = header.lower()[3:]
    # Kafka carries the decoded value as UTF-8, exactly
    assert dict(encode_kafka(event)[1])["ce_" + name] == expected.encode()
    # and HTTP delivery writes a header that decodes to the same value
    out = encode_http(decode_kafka(*encode_kafka(event)[1:]))[0]
    got = decode_http(out, b"")[0].get_attributes()[name]
    assert (got.text if isinstance(got, Timestamp) else got) == expected


PAYLOADS = [
    ("application/json", b'{ "price": 1.10, "big": 123456789012345678901234567890, "e": "\\u00e9" }\n'),
    ("application/json", b"[1e400]".replace(b"1e400", b"1E+2")),
    ("application/vnd.x+json; charset=utf-8", b'{"a":\t1}'),
    ("text/plain; charset=latin-1", "caf\u00e9".encode("latin-1")),
    ("application/octet-stream", bytes(range(256))),
]


@pytest.mark.parametrize("content_type,payload", PAYLOADS)
def test_kept_payload_passes_byte_for_byte(content_type, payload):
    [event] = decode_http({**HTTP, "content-type": content_type}, payload, keep_payload=True)
    assert event.get_data() == payload
    _, headers, value = encode_kafka(event)
    assert value == payload and dict(headers)["content-type"] == content_type.encode()
    assert encode_http(event)[1] == payload


@pytest.mark.parametrize("content_type,payload,needle", [
    ("application/json", b"{not json", "not valid JSON"),
    ("application/json", b'{"a": NaN}', "not valid JSON"),
    ("application/json", b'"\xff"', "not valid utf-8"),
    ("text/plain", b"\xff\xfe", "not valid utf-8"),
])
def test_kept_payload_is_still_checked(content_type, payload, needle):
    with pytest.raises(CodecError, match=needle):
        decode_http({**HTTP, "content-type": content_type}, payload, keep_payload=True)


# ---------------------------------------------------------------------------------------
# Filters see ``time`` as its text.
# ---------------------------------------------------------------------------------------


def _router(filters):
    from tests.plans import broker_yaml, plan_from_yaml, trigger_yaml
    from transforms.router import Router

    yaml = broker_yaml("b", "ns") + "".join(trigger_yaml(f"t{i}", "http://x.local/", f) for i, f in enumerate(filters))
    return Router(plan_from_yaml(yaml).brokers[0])


def test_filters_see_time_as_its_text():
    from filters.base import EventView, attribute_string

    for text in TIMES:
        event = decode_http({**HTTP, "ce-time": text}, b"")[0]
        assert attribute_string(event.get_time()) == text
        assert EventView.of(event).string("time") == text
        router = _router([f"[{{exact: {{time: '{text}'}}}}]", f"[{{cesql: \"time = '{text}'\"}}]",
                          f"[{{prefix: {{time: '{text[:-3]}'}}}}]", "[{cel: 'time < timestamp(\"2027-01-01T00:00:00Z\")'}]"])
        assert [t.name for t in router.route(event)] == ["t0", "t1", "t2", "t3"]
    # a datetime made elsewhere (no text) is rendered as before: UTC, Z, microseconds at most
    later = decode_http({**HTTP, "ce-time": TIMES[1]}, b"")[0].get_time() + timedelta(0)
    assert attribute_string(later) == "2026-11-29T04:15:20.123456Z"
