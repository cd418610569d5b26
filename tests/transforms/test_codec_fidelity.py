"""An event leaves as it came: attribute texts (``time`` with nanoseconds and any offset),
extension values of every CloudEvents type, unusual but valid header encodings, and
binary payloads (``keep_payload``), through every binding, task records, dead letters."""
from __future__ import annotations

import base64
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
    payload_value,
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


@pytest.mark.parametrize("content_type,payload", [
    ("application/json", b"hello"),  # the JavaScript SDK's string data in binary mode
    ("application/json", b"{not json"),
    ("application/json", b'{"a": NaN}'),
    ("application/json; charset=utf-8", b"\x00\x01\x7f\x80\xff"),  # its Uint8Array labelled JSON
    ("text/plain", b"\xff\xfe"),
])
def test_kept_payload_is_not_checked_as_knative_does_not(content_type, payload):
    # Knative's brokers accept any payload under any content type; a filter reading the
    # data then sees the bytes (payload_value never raises), and delivery sends them as is
    [event] = decode_http({**HTTP, "content-type": content_type}, payload, keep_payload=True)
    assert event.get_data() == payload
    assert encode_kafka(event)[2] == payload and encode_http(event)[1] == payload
    assert payload_value(payload, content_type) == payload
    with pytest.raises(CodecError, match="not valid"):  # parsed decoding still refuses it
        decode_http({**HTTP, "content-type": content_type}, payload)


# Structured events at the ingress (decode_http(keep_payload=True)) keep the text of their
# JSON data too: stored in Kafka's binary mode, it is the record's value as it came.
STRUCTURED_HEAD = b'{"specversion": "1.0", "id": "s-1", "source": "/s", "type": "t", '
ODD_DATA = b'{ "v": 1.10, "big": 123456789012345678901234567890, "e": "caf\\u00e9 \xc3\xa9", "k": [1E+2, -0.0] }'


@pytest.mark.parametrize("members,data_text,content_type", [
    (b'"datacontenttype": "application/json", "data": %s}', ODD_DATA, b"application/json"),
    (b'"data":%s}', b'{"v":1.1}', b"application/json"),  # compact: the writer's own text, kept
    (b'"data": %s, "subject": "after"}', b'[2.5e3, {"data": 1.50}]', b"application/json"),  # not last; a nested key
    (b'"subject": "a \\"data\\": 1", "data": %s}', b'{"v": 1.10}', b"application/json"),  # a key-like text before it
    (b'"datacontenttype": "application/vnd.x+json", "data" :\n %s\n}', b'"caf\\u00e9"', b"application/vnd.x+json"),
])
def test_structured_json_data_is_stored_as_its_text(members, data_text, content_type):
    body = STRUCTURED_HEAD + members % data_text
    [event] = decode_http({"content-type": "application/cloudevents+json"}, body, keep_payload=True)
    _, headers, value = encode_kafka(event)
    assert value == data_text and dict(headers)["content-type"] == content_type
    assert payload_value(event.get_data(), event.get_attributes()["datacontenttype"]) == json.loads(data_text)
    # without keep_payload (the job, tools), data is the parsed value, as before
    [parsed] = decode_http({"content-type": "application/cloudevents+json"}, body)
    assert parsed.get_data() == json.loads(data_text)


def test_batch_json_data_is_stored_as_its_text_event_by_event():
    docs = [STRUCTURED_HEAD + b'"data": {"v": 1.10}}', STRUCTURED_HEAD + b'"subject": "no data"}',
            STRUCTURED_HEAD + b'"data":{"v":1.1}}', STRUCTURED_HEAD + b'"data": null}',
            STRUCTURED_HEAD + b'"datacontenttype": "text/plain", "data": "plain \\"data\\": text"}',
            STRUCTURED_HEAD + b'"data" : 7.0 }']
    events = decode_http({"content-type": "application/cloudevents-batch+json"}, b"[" + b",\n".join(docs) + b"]",
                         keep_payload=True)
    assert [encode_kafka(e)[2] for e in events] == [
        b'{"v": 1.10}', None, b'{"v":1.1}', None, b'plain "data": text', b"7.0"]


def test_structured_data_whose_text_is_not_found_is_written_out_again():
    # an escaped "data" key: the first "data" key in the document is inside the data
    body = STRUCTURED_HEAD + b'"d\\u0061ta": {"data": {"x": 1.10}}}'
    [event] = decode_http({"content-type": "application/cloudevents+json"}, body, keep_payload=True)
    assert event.get_data() == {"data": {"x": 1.1}}
    assert encode_kafka(event)[2] == b'{"data":{"x":1.1}}'


# ---------------------------------------------------------------------------------------
# The job's intake keeps the record's payload (decode_kafka(keep_payload=True)): it leaves
# byte for byte, filters see it parsed (once, when one reads it), structured delivery
# embeds it as is.
# ---------------------------------------------------------------------------------------

ODD_JSON = b'{ "v": 1.10, "big": 123456789012345678901234567890, "e": "caf\\u00e9 \xc3\xa9", "k": [1E+2, -0.0] }\n'


def kafka_record(payload, content_type="application/json", **headers):
    record = [*KAFKA, *((f"ce_{k}", v.encode()) for k, v in headers.items())]
    if content_type is not None:
        record.append(("content-type", content_type.encode()))
    return record, payload


@pytest.mark.parametrize("content_type,payload", [*PAYLOADS, ("application/json", ODD_JSON)])
def test_intake_keeps_the_payload_byte_for_byte(content_type, payload):
    event = decode_kafka(*kafka_record(payload, content_type), keep_payload=True)
    assert event.get_data() == payload
    assert encode_http(event)[1] == payload and encode_http(event)[0]["Content-Type"] == content_type
    assert encode_kafka(event)[2] == payload


def test_intake_does_not_check_the_payload():
    # A record is not parsed at intake; it passes on as is, as Knative's broker passes it.
    for payload in (b"{not json", b'{"a": NaN}', b'"\xff"'):
        event = decode_kafka(*kafka_record(payload), keep_payload=True)
        assert event.get_data() == payload and encode_http(event)[1] == payload
    with pytest.raises(CodecError, match="not valid JSON"):
        decode_kafka(*kafka_record(b"{not json"))  # parse-at-decode still refuses it
    # no payload is no data in both modes; a structured record is decoded as before
    assert decode_kafka(*kafka_record(b""), keep_payload=True).get_data() is None
    doc = json.dumps({**BASE, "data": {"v": 1}}).encode()
    assert decode_kafka([("content-type", b"application/cloudevents+json")], doc, keep_payload=True).get_data() == {"v": 1}


def test_the_general_decode_path_keeps_the_payload_too():
    headers, payload = kafka_record(ODD_JSON, subject="s")
    headers = dict(headers)  # a mapping with a str value: not the fast path's shape
    headers["ce_subject"] = "s"
    event = decode_kafka(headers, payload, keep_payload=True)
    assert event.get_data() == ODD_JSON and event.get_subject() == "s"


PAYLOAD_VALUES = [
    ("application/json", ODD_JSON),
    ("application/json", b'{"n": 9223372036854775807, "m": -9223372036854775809, "u": 18446744073709551615}'),
    ("application/json", b'"\\ud800 lone surrogate escape"'),
    ("application/json", b"1e400"),
    ("application/json", b"null"),
    ("application/json", b' [ ] '),
    ("application/json", b'{"a": 1, "a": 2}'),
    ("application/json; charset=latin-1", '{"caf\u00e9": 1}'.encode("latin-1")),
    ("application/vnd.x+json", b'{"id": "12345678901234567890123"}'),
    ("text/plain", "café".encode()),
    ("text/csv; charset=latin-1", "caf\u00e9".encode("latin-1")),
    ("application/octet-stream", b"\x00\x01"),
    ("image/png", b"{}"),
]


@pytest.mark.parametrize("content_type,payload", PAYLOAD_VALUES)
def test_payload_value_is_what_parse_at_decode_gives(content_type, payload):
    from transforms.codec import payload_value

    parsed = decode_kafka(*kafka_record(payload, content_type)).get_data()
    value = payload_value(payload, content_type)
    assert value == parsed and type(value) is type(parsed)
    assert json.dumps(value, sort_keys=True, default=repr) == json.dumps(parsed, sort_keys=True, default=repr)


@pytest.mark.parametrize("content_type,payload", [
    ("application/json", b"{not json"),
    ("application/json", b'{"a": NaN}'),
    ("application/json", b'"\xff"'),
    ("application/json", b"\xef\xbb\xbf{}"),  # a BOM
    ("application/json; charset=x-unknown", b"{}"),
    ("text/plain", b"\xff\xfe"),
])
def test_payload_value_of_what_does_not_decode_is_the_bytes(content_type, payload):
    from transforms.codec import payload_value

    assert payload_value(payload, content_type) == payload


def test_payload_value_agrees_with_json_on_random_documents():
    import random

    from transforms.codec import payload_value

    rng = random.Random(10)

    def value(depth=0):
        kind = rng.randrange(8 if depth < 3 else 5)
        if kind == 0:
            return rng.choice([0, -1, 2**31, -(2**63), 2**63 - 1, 2**64 - 1, 10**30, -(10**19)]) + rng.randrange(3)
        if kind == 1:
            return rng.choice([0.1, 1.10, 1e-320, 5e-324, 1.7976931348623157e308, -0.0, 123456.789e10]) * rng.choice([1, -1])
        if kind == 2:
            return "".join(rng.choice(["a", "é", "\u2028", "\U0001f381", "\\", '"', "\x00", "\ud7ff"]) for _ in range(rng.randrange(6)))
        if kind == 3:
            return rng.choice([True, False, None])
        if kind == 4:
            return rng.randrange(-(10**25), 10**25)
        if kind in (5, 6):
            return {f"k{rng.randrange(5)}": value(depth + 1) for _ in range(rng.randrange(4))}
        return [value(depth + 1) for _ in range(rng.randrange(4))]

    for _ in range(2000):
        doc = value()
        text = json.dumps(doc, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1])).encode()
        got = payload_value(text, "application/json")
        assert repr(got) == repr(json.loads(text)), text


def test_structured_delivery_embeds_a_kept_json_payload_as_is():
    event = decode_kafka(*kafka_record(ODD_JSON, time=TIMES[1]), keep_payload=True)
    for body in (encode_structured(event), encode_http(event, "structured")[1], encode_kafka(event, "structured")[2]):
        assert body.endswith(b',"data":' + ODD_JSON + b"}")
        doc = json.loads(body)
        assert doc["time"] == TIMES[1] and doc["data"]["big"] == 123456789012345678901234567890
        assert "data_base64" not in doc
        assert decode_structured(body).get_data() == json.loads(ODD_JSON)
    # the general path (an attribute type the fast path leaves to it) embeds it the same way
    from transforms.codec import _new_event

    odd = _new_event({**event.get_attributes(), "bin": b"\x01"}, ODD_JSON)
    assert encode_structured(odd).endswith(b',"data":' + ODD_JSON + b"}")
    assert json.loads(encode_structured(odd))["bin"] == "AQ=="


@pytest.mark.parametrize("content_type,payload,expected", [
    ("application/json", b"{not json", {"data_base64": "e25vdCBqc29u"}),  # not JSON: as bytes
    ("application/json; charset=latin-1", '{"caf\u00e9": 1.10}'.encode("latin-1"), None),  # transcoded
    ("text/plain", "café".encode(), {"data": "café"}),
    ("text/plain; charset=latin-1", "café".encode("latin-1"), {"data": "café"}),
    ("text/plain", b"\xff", {"data_base64": "/w=="}),
    ("application/octet-stream", b"\x00{}", {"data_base64": "AHt9"}),
])
def test_structured_delivery_of_other_kept_payloads(content_type, payload, expected):
    event = decode_kafka(*kafka_record(payload, content_type), keep_payload=True)
    body = encode_structured(event)
    doc = json.loads(body)
    if expected is None:  # JSON in another charset: the same text, in the document's UTF-8
        assert body.endswith(b',"data":' + '{"caf\u00e9": 1.10}'.encode() + b"}")
        assert doc["data"] == {"caf\u00e9": 1.1}
    else:
        assert {k: doc[k] for k in ("data", "data_base64") if k in doc} == expected
    # binary mode writes the structured document's event as the same bytes
    again = decode_structured(body)
    if expected is not None:
        assert encode_http(again)[1] == payload


def test_kept_payload_through_task_records_dead_letters_and_replies():
    from transforms.codec import event_to_dict
    from transforms.delivery import Replied, decide
    from transforms.kafka_plane import Outbox, Topics
    from transforms.records import DeadLetter
    from tests.plans import broker_yaml, plan_from_yaml, trigger_yaml

    event = decode_kafka(*kafka_record(ODD_JSON, time=TIMES[1], knativebrokerttl="5"), keep_payload=True)
    # a retry's task record: the same bytes, the same request
    task = DeliveryTask("ns/t", event, due_at=1.0)
    again = DeliveryTask.from_bytes(task.retried(1, 1.0, 2.0).to_bytes())
    assert again.event.get_data() == ODD_JSON and encode_http(again.event)[1] == ODD_JSON
    assert encode_http(again.event)[0]["ce-time"] == TIMES[1]
    # a dead letter to a deadLetterSink (HTTP) and to a KafkaSink: the same bytes
    dead = dead_letter_event(again.event, "http://x", 500, b"boom")
    assert encode_http(dead)[1] == ODD_JSON and encode_kafka(dead)[2] == ODD_JSON
    assert encode_structured(dead).endswith(b',"data":' + ODD_JSON + b"}")
    # the job's own dead-letter record: the event's dict form, data_base64 of the very bytes
    doc = json.loads(DeadLetter(reason="r", event=event_to_dict(dead)).to_json())
    assert base64_bytes(doc["event"]["data_base64"]) == ODD_JSON and doc["event"]["time"] == TIMES[1]
    # a reply: its payload goes to the broker topic as the subscriber sent it
    plan = plan_from_yaml(broker_yaml("b", "ns") + trigger_yaml("t", "http://t.local/"))
    reply_headers = {"ce-specversion": "1.0", "ce-id": "r", "ce-source": "/r", "ce-type": "t.r",
                     "ce-time": TIMES[0], "content-type": "application/json"}
    outcome = decide(DeliveryTask("ns/t", event), plan.brokers[0].triggers[0].delivery, 1.0, 200,
                     reply_headers, ODD_JSON, url="http://t.local/")
    assert isinstance(outcome, Replied) and outcome.reply.get_data() == ODD_JSON
    [record] = [r for r in Outbox(plan, Topics.for_job("j")).records(outcome)[0] if r.topic == plan.brokers[0].topic]
    assert record.value == ODD_JSON and record.headers["ce_time"] == TIMES[0].encode()
    assert record.headers["ce_knativebrokerttl"] == b"4"


def base64_bytes(text: str) -> bytes:
    import base64

    return base64.b64decode(text)


# ---------------------------------------------------------------------------------------
# Filters see a kept payload as parsed, parse it once and only when one reads it, and
# see ``time`` as its text.
# ---------------------------------------------------------------------------------------

FILTERS = [
    "[{exact: {type: t}}]",
    "[{cel: 'data.v == 1.1 && data.big > 1.0e29'}]",
    "[{cel: 'data.e.startsWith(\"café\")'}]",
    "[{cel: 'has(data.k) && size(data.k) == 2 && data.k[0] == 100.0'}]",
    "[{cel: 'type == \"t\" && data.v > 2.0'}]",
    "[{cel: 'data == b\"\"'}]",
    "[{cel: 'data == \"café\"'}]",
    "[{cel: 'size(data) > 0'}]",
    "[{cesql: \"type = 't' AND EXISTS subject\"}]",
    "[{cesql: \"time LIKE '%.123456789+05:45'\"}]",
    "[{exact: {time: '2026-11-29T10:00:20.123456789+05:45'}}]",
    "[{prefix: {time: '2026-11-29T10:00:20.1234567'}}]",
    "[{suffix: {time: '9+05:45'}}]",
    "[{cel: 'time == timestamp(\"2026-11-29T04:15:20.123456789Z\") && time != timestamp(\"2026-11-29T04:15:20.123456Z\")'}]",
    "[{not: {cel: 'data.v == 1.1'}}]",
    "[{any: [{cel: 'data.nope == 1'}, {exact: {subject: café}}]}]",
]


def _router(filters):
    from tests.plans import broker_yaml, plan_from_yaml, trigger_yaml
    from transforms.router import Router

    yaml = broker_yaml("b", "ns") + "".join(trigger_yaml(f"t{i}", "http://x.local/", f) for i, f in enumerate(filters))
    return Router(plan_from_yaml(yaml).brokers[0])


@pytest.mark.parametrize("content_type,payload", [
    ("application/json", ODD_JSON),
    ("application/json", b"null"),
    ("application/json", b'"caf\\u00e9"'),
    ("application/json", b"{not json"),
    ("text/plain", "café".encode()),
    ("application/octet-stream", b"\x00"),
    ("application/json", b""),
    (None, b"caf\xc3\xa9"),
])
def test_filters_match_a_kept_payload_as_a_parsed_one(content_type, payload):
    record = kafka_record(payload, content_type, time=TIMES[1], subject="café")
    kept = decode_kafka(*record, keep_payload=True)
    try:
        parsed = decode_kafka(*record)
    except CodecError:  # not JSON: what parse-at-decode refused, filters see as bytes
        parsed = event_from_dict({**BASE, "time": TIMES[1], "subject": "café", "datacontenttype": content_type,
                                  "data_base64": base64.b64encode(payload).decode()})
    expected = [t.name for t in _router(FILTERS).route(parsed)]
    assert [t.name for t in _router(FILTERS).route(kept)] == expected
    if content_type == "application/json" and payload == ODD_JSON:
        assert expected == ["t0", "t1", "t2", "t3", "t7", "t8", "t9", "t10", "t11", "t12", "t13", "t15"]


def test_a_kept_payload_is_parsed_once_and_only_when_a_filter_reads_it():
    from filters.base import EventView
    from transforms.codec import payload_value

    event = decode_kafka(*kafka_record(ODD_JSON), keep_payload=True)
    calls = []

    def decode(payload, content_type):
        calls.append(payload)
        return payload_value(payload, content_type)

    def view():
        return EventView(event.get_attributes(), event.get_data(), decode)

    # Knative dialects and CESQL (which has no access to data) never read it
    no_data = _router([f for f in FILTERS if "data" not in f and "cel" not in f])
    assert [t.name for t in no_data.route_view(view())]
    assert no_data.index.match_all(view()) and calls == []  # every filter ran: none read data
    # nor do CEL filters on attributes alone (the compiled code reads data when it is used)
    cel_attributes = _router([f for f in FILTERS if "cel" in f and "data" not in f] + ["[{cel: 'type == \"t\"'}]"])
    assert [t.name for t in cel_attributes.route_view(view())] == ["t1"] and calls == []
    reads_data = _router(FILTERS)
    reads_data.route_view(view())
    assert calls == [ODD_JSON]  # several filters read it: parsed once
    calls.clear()
    reads_data.index.match_all(view())
    assert calls == [ODD_JSON]


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
