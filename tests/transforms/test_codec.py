"""Unit tests of the CloudEvents codec: every rule, every error message, round trips."""
from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from cloudevents.core.v03.event import CloudEvent as CloudEventV03
from cloudevents.core.v1.event import CloudEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filters.errors import KnflowError
from transforms.codec import (
    CE_BATCH_CONTENT_TYPE,
    CE_JSON_CONTENT_TYPE,
    CodecError,
    _new_event,
    decode_http,
    decode_kafka,
    decode_structured,
    encode_http,
    encode_kafka,
    encode_structured,
    event_from_dict,
    event_to_dict,
    is_http_cloudevent,
)

UTC = timezone.utc
T0 = datetime(2018, 4, 5, 3, 56, 24, tzinfo=UTC)
BASE = {"specversion": "1.0", "id": "1234", "source": "/src", "type": "com.example.t"}
HTTP_BASE = {"ce-specversion": "1.0", "ce-id": "1234", "ce-source": "/src", "ce-type": "com.example.t"}
KAFKA_BASE = [("ce_specversion", b"1.0"), ("ce_id", b"1234"), ("ce_source", b"/src"), ("ce_type", b"com.example.t")]


def raises(message: str):
    """pytest.raises(CodecError) whose str() contains ``message`` literally."""
    return pytest.raises(CodecError, match=re.escape(message))


def event(data=None, **attributes) -> CloudEvent:
    """An SDK-built event; without ``time`` (the SDK would invent one) built like decoded ones."""
    attributes = {**BASE, **attributes}
    if "time" in attributes:
        return CloudEvent(attributes, data)
    return _new_event(attributes, data)


def http_one(headers, body=b""):
    events = decode_http(headers, body)
    assert len(events) == 1
    return events[0]


def same(got: CloudEvent, attributes: dict, data) -> None:
    assert got.get_attributes() == attributes
    assert type(got.get_data()) is type(data)
    assert got.get_data() == data


# --------------------------------------------------------------------------------------
# CodecError
# --------------------------------------------------------------------------------------


def test_codec_error_is_a_knflow_value_error_with_location():
    err = CodecError("must not be empty", "attribute 'id'")
    assert isinstance(err, KnflowError) and isinstance(err, ValueError)
    assert str(err) == "attribute 'id': must not be empty"
    assert (err.where, err.message) == ("attribute 'id'", "must not be empty")
    assert str(CodecError("plain")) == "plain"
    assert str(err.within("batch event [2]")) == "batch event [2], attribute 'id': must not be empty"
    assert str(CodecError("x").within("batch event [0]")) == "batch event [0]: x"


def test_new_event_bypasses_defaults_but_reads_like_a_cloudevent():
    # CloudEvent.__init__ would invent a time (and id); decoded events must not get one.
    got = _new_event({**BASE}, {"a": 1})
    assert isinstance(got, CloudEvent)
    assert got.get_time() is None
    assert got.get_id() == "1234" and got.get_source() == "/src" and got.get_type() == "com.example.t"
    assert got.get_specversion() == "1.0" and got.get_data() == {"a": 1}
    assert got.get_attributes() == BASE
    assert event_from_dict(BASE).get_time() is None


# --------------------------------------------------------------------------------------
# event_from_dict: required attributes and specversion
# --------------------------------------------------------------------------------------


def test_event_from_dict_minimal():
    got = event_from_dict(BASE)
    same(got, BASE, None)


@pytest.mark.parametrize("version", ["0.3", "1", "2.0", ""])
def test_only_specversion_1_0(version):
    with raises(f"attribute 'specversion': unsupported specversion {version!r} (only '1.0' is supported)"):
        event_from_dict({**BASE, "specversion": version})


def test_specversion_number_is_rejected():
    with raises("unsupported specversion 1.0 (only '1.0' is supported)"):
        event_from_dict({**BASE, "specversion": 1.0})


def test_missing_specversion():
    obj = dict(BASE)
    del obj["specversion"]
    with raises("attribute 'specversion': missing required attribute 'specversion'"):
        event_from_dict(obj)


@pytest.mark.parametrize("name", ["id", "source", "type"])
def test_missing_required_attribute(name):
    obj = {k: v for k, v in BASE.items() if k != name}
    with raises(f"missing required attribute {name!r}"):
        event_from_dict(obj)


@pytest.mark.parametrize("name", ["id", "source", "type"])
def test_null_required_attribute_is_missing(name):
    with raises(f"missing required attribute {name!r}"):
        event_from_dict({**BASE, name: None})


@pytest.mark.parametrize("name", ["id", "source", "type", "subject", "dataschema", "datacontenttype"])
def test_empty_string_attribute(name):
    with raises(f"attribute {name!r}: must not be empty"):
        event_from_dict({**BASE, name: ""})


@pytest.mark.parametrize(
    "name, value, json_type",
    [("id", 5, "number"), ("source", ["/a"], "array"), ("type", True, "boolean"), ("subject", {}, "object")],
)
def test_core_attribute_must_be_string(name, value, json_type):
    with raises(f"attribute {name!r}: must be a string, got {json_type}"):
        event_from_dict({**BASE, name: value})


def test_null_optional_attributes_are_unset():
    got = event_from_dict({**BASE, "subject": None, "time": None, "myext": None, "datacontenttype": None})
    assert got.get_attributes() == BASE


def test_not_an_object():
    with raises("a structured event must be a JSON object, got array"):
        event_from_dict([BASE])
    with raises("a structured event must be a JSON object, got string"):
        event_from_dict("x")


# --------------------------------------------------------------------------------------
# extensions
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Foo", "foo_bar", "foo-bar", "ümlaut", "a b", ""])
def test_bad_extension_names(name):
    with raises(f"attribute {name!r}: invalid attribute name {name!r}"):
        event_from_dict({**BASE, name: "x"})


def test_extension_values_keep_json_types():
    obj = {**BASE, "count": 5, "flag": True, "off": False, "name": "x", "neg": -(2**31), "empty": ""}
    got = event_from_dict(obj)
    assert got.get_attributes() == obj
    assert type(got.get_extension("count")) is int and type(got.get_extension("flag")) is bool


@pytest.mark.parametrize(
    "value, json_type", [(1.5, "number"), ([1], "array"), ({"a": 1}, "object")]
)
def test_extension_value_types(value, json_type):
    with raises(f"attribute 'myext': extension values must be a string, integer or boolean, got {json_type}"):
        event_from_dict({**BASE, "myext": value})


@pytest.mark.parametrize("value", [2**31, -(2**31) - 1])
def test_extension_integer_range(value):
    with raises(f"attribute 'big': integer {value} is outside the 32-bit range of CloudEvents Integer"):
        event_from_dict({**BASE, "big": value})


# --------------------------------------------------------------------------------------
# time
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2018-04-05T03:56:24Z", T0),
        ("2018-04-05t03:56:24z", T0),
        ("2018-04-05T05:56:24+02:00", T0),
        ("2018-04-05T03:56:24.5Z", T0.replace(microsecond=500000)),
        ("2018-04-05T03:56:24.123456789Z", T0.replace(microsecond=123456)),
        ("2018-04-04T22:26:24-05:30", T0),
    ],
)
def test_time_parsed_timezone_aware(text, expected):
    got = event_from_dict({**BASE, "time": text}).get_time()
    assert got == expected and got.utcoffset() is not None


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "2018-04-05",
        "2018-04-05T03:56:24",  # no offset
        "2018-04-05 03:56:24Z",  # RFC 3339 ABNF wants T
        "2018-04-05T03:56Z",
        "2018-4-5T03:56:24Z",
        "2018-04-05T03:56:24+0200",
        "２０１８-04-05T03:56:24Z",  # non-ASCII digits
    ],
)
def test_time_invalid_shape(text):
    with raises(f"attribute 'time': invalid RFC 3339 timestamp {text!r}"):
        event_from_dict({**BASE, "time": text})


@pytest.mark.parametrize(
    "text, reason",
    [("2018-13-05T03:56:24Z", "month must be in 1..12"), ("2018-04-05T03:56:60Z", "second must be in 0..59")],
)
def test_time_invalid_value(text, reason):
    with raises(f"attribute 'time': invalid RFC 3339 timestamp {text!r}: {reason}"):
        event_from_dict({**BASE, "time": text})


def test_time_wrong_type():
    with raises("attribute 'time': time must be an RFC 3339 string, got int"):
        event_from_dict({**BASE, "time": 5})


def test_time_aware_datetime_accepted_in_dict():
    assert event_from_dict({**BASE, "time": T0}).get_time() == T0


@pytest.mark.parametrize(
    "value, text",
    [
        (T0, "2018-04-05T03:56:24Z"),
        (T0.replace(microsecond=120000), "2018-04-05T03:56:24.120000Z"),
        (datetime(2018, 4, 5, 5, 56, 24, tzinfo=timezone(timedelta(hours=2))), "2018-04-05T05:56:24+02:00"),
        (datetime(2018, 4, 5, 3, 56, 24, tzinfo=timezone(timedelta(hours=-5, minutes=-30))), "2018-04-05T03:56:24-05:30"),
        # offsets with seconds are not RFC 3339: written in UTC
        (datetime(2018, 4, 5, 4, 57, 25, tzinfo=timezone(timedelta(hours=1, minutes=1, seconds=1))), "2018-04-05T03:56:24Z"),
    ],
)
def test_time_written_rfc3339(value, text):
    assert event_to_dict(event(time=value))["time"] == text
    headers, _ = encode_http(event(time=value))
    assert headers["ce-time"] == text


def test_naive_time_cannot_be_written():
    naive = _new_event({**BASE, "time": datetime(2018, 4, 5)}, None)
    with raises("attribute 'time': time must be timezone-aware"):
        event_to_dict(naive)
    with raises("attribute 'time': time must be timezone-aware"):
        encode_kafka(naive)


# --------------------------------------------------------------------------------------
# structured data
# --------------------------------------------------------------------------------------


def test_data_kept_as_json_value():
    assert event_from_dict({**BASE, "data": {"a": [1, 2]}}).get_data() == {"a": [1, 2]}
    # a JSON string stays a string, it is not parsed again
    got = event_from_dict({**BASE, "datacontenttype": "application/json", "data": '{"a":1}'})
    assert got.get_data() == '{"a":1}'
    assert event_from_dict({**BASE, "datacontenttype": "text/xml", "data": "<a/>"}).get_data() == "<a/>"
    assert event_from_dict({**BASE, "data": None}).get_data() is None


def test_data_base64_to_bytes():
    got = event_from_dict({**BASE, "data_base64": base64.b64encode(b"\x00\xffabc").decode()})
    assert got.get_data() == b"\x00\xffabc"
    assert "data_base64" not in got.get_attributes()


def test_data_and_data_base64_exclusive():
    with raises("both 'data' and 'data_base64' are present (they are mutually exclusive)"):
        event_from_dict({**BASE, "data": "x", "data_base64": "eA=="})


def test_data_base64_invalid():
    with raises("'data_base64': invalid base64"):
        event_from_dict({**BASE, "data_base64": "not base64!"})
    with raises("'data_base64': must be a base64 string, got number"):
        event_from_dict({**BASE, "data_base64": 12})


def test_event_to_dict_data_forms():
    assert event_to_dict(event(b"\x01\x02"))["data_base64"] == "AQI="
    assert "data" not in event_to_dict(event(b"\x01\x02"))
    assert event_to_dict(event({"a": 1}))["data"] == {"a": 1}
    assert event_to_dict(event("hi", datacontenttype="text/plain"))["data"] == "hi"
    assert "data" not in event_to_dict(event()) and "data_base64" not in event_to_dict(event())


def test_event_to_dict_non_string_data_for_non_json_type():
    with raises("data of type dict cannot be written as 'text/plain' (expected str or bytes for a non-JSON content type)"):
        event_to_dict(event({"a": 1}, datacontenttype="text/plain"))


def test_event_to_dict_extension_forms():
    out = event_to_dict(event(ext1=5, ext2=True, ext3=b"\x01", ext4=T0, ext5="s"))
    assert (out["ext1"], out["ext2"], out["ext3"], out["ext4"], out["ext5"]) == (5, True, "AQ==", "2018-04-05T03:56:24Z", "s")
    json.dumps(out)


@pytest.mark.parametrize("value, type_name", [(1.5, "float"), ([1], "list"), (object(), "object")])
def test_unsupported_extension_type_cannot_be_written(value, type_name):
    message = f"attribute 'bad': unsupported attribute value type {type_name} (expected str, int, bool, bytes or datetime)"
    with raises(message):
        event_to_dict(event(bad=value))
    with raises(message):
        encode_http(event(bad=value))
    with raises(message):
        encode_kafka(event(bad=value))


def test_out_of_range_int_cannot_be_written():
    with raises("attribute 'big': integer 4294967296 is outside the 32-bit range"):
        event_to_dict(event(big=2**32))
    with raises("attribute 'big': integer 4294967296 is outside the 32-bit range"):
        encode_kafka(event(big=2**32))


def test_not_an_event_cannot_be_written():
    with raises("expected a CloudEvent, got dict"):
        event_to_dict({"id": "x"})


def test_v03_event_cannot_be_written():
    old = CloudEventV03({"id": "1", "source": "/s", "type": "t", "specversion": "0.3"})
    for write in (event_to_dict, encode_structured, encode_http, encode_kafka):
        with raises("attribute 'specversion': unsupported specversion '0.3' (only '1.0' is supported)"):
            write(old)


# --------------------------------------------------------------------------------------
# structured documents
# --------------------------------------------------------------------------------------


def test_decode_structured_bytes_and_str():
    doc = {**BASE, "time": "2018-04-05T03:56:24Z", "ext": 1, "data": {"a": "ü"}}
    for body in (json.dumps(doc).encode(), json.dumps(doc), json.dumps(doc, ensure_ascii=False).encode()):
        got = decode_structured(body)
        same(got, {**BASE, "time": T0, "ext": 1}, {"a": "ü"})


def test_encode_structured_is_compact_utf8():
    body = encode_structured(event({"a": "ü"}, time=T0))
    assert body == (
        '{"specversion":"1.0","id":"1234","source":"/src","type":"com.example.t",'
        '"time":"2018-04-05T03:56:24Z","data":{"a":"ü"}}'
    ).encode()


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{", "structured event is not valid JSON: Expecting property name enclosed in double quotes"),
        (b"", "structured event is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
        (b'{"a": 1} x', "structured event is not valid JSON: Extra data"),
        (b'{"specversion": "1.0", "x": NaN}', "structured event is not valid JSON: NaN is not valid JSON"),
        (b"\xff{}", "structured event is not valid UTF-8: invalid start byte at byte 0"),
        (b"[1]", "a structured event must be a JSON object, got array"),
        (b"[" * 100000 + b"]" * 100000, "structured event is nested too deeply"),
    ],
)
def test_decode_structured_malformed(body, message):
    with raises(message):
        decode_structured(body)


def test_decode_structured_wrong_type():
    with raises("structured event must be bytes, got int"):
        decode_structured(5)


@pytest.mark.parametrize(
    "data, message",
    [
        ({1, 2}, "event is not JSON-serializable: Object of type set is not JSON serializable"),
        (float("nan"), "event is not JSON-serializable: Out of range float values are not JSON compliant"),
        ("\ud800", "event contains text that is not valid Unicode"),
    ],
)
def test_encode_structured_unserializable(data, message):
    with raises(message):
        encode_structured(event(data))


# --------------------------------------------------------------------------------------
# HTTP binary mode
# --------------------------------------------------------------------------------------


def test_http_binary_basic():
    headers = {
        **HTTP_BASE,
        "ce-time": "2018-04-05T03:56:24Z",
        "ce-myext": "5",
        "Content-Type": "application/json",
        "Host": "example.com",
    }
    got = http_one(headers, b'{"message": "Hello"}')
    same(got, {**BASE, "time": T0, "myext": "5", "datacontenttype": "application/json"}, {"message": "Hello"})


def test_http_header_names_case_insensitive():
    got = http_one({"CE-SpecVersion": "1.0", "Ce-Id": "1", "ce-SOURCE": "/s", "cE-type": "t", "content-TYPE": "text/plain"}, b"hi")
    same(got, {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "datacontenttype": "text/plain"}, "hi")


@pytest.mark.parametrize(
    "raw, value",
    [
        ("Euro%20%E2%82%AC%20%F0%9F%98%80", "Euro € 😀"),  # the spec's example
        ("%e2%82%ac", "€"),  # lower-case hex accepted
        ("%41%42c", "ABc"),  # unnecessarily encoded
        ("a%22b%25c", 'a"b%c'),
        ('"quoted value"', "quoted value"),
        ('"with \\"escapes\\" and \\\\"', 'with "escapes" and \\'),
        ('pre"fix"post', "prefixpost"),
        ('"%20"', " "),  # unquote first, then percent-decode
        ("  padded\t", "padded"),  # optional whitespace around the value
        ("100%", "100%"),  # malformed sequences are kept literally
        ("%zz", "%zz"),
        ("plain-€", "plain-€"),  # raw non-ASCII is taken as is
    ],
)
def test_http_header_value_decoding(raw, value):
    assert http_one({**HTTP_BASE, "ce-myext": raw}).get_extension("myext") == value


@pytest.mark.parametrize("raw", ["%C0%A0", "%FF", "%E2%82"])
def test_http_header_value_invalid_utf8_rejected(raw):
    with raises(f"header 'ce-myext': percent-encoded value {raw!r} is not valid UTF-8"):
        http_one({**HTTP_BASE, "ce-myext": raw})


def test_http_header_value_lone_surrogate_rejected():
    with raises("header 'ce-myext': percent-encoded value"):
        http_one({**HTTP_BASE, "ce-myext": "\udcff%20"})


def test_http_header_value_unterminated_quote():
    with raises("""header 'ce-myext': unterminated quoted string in '"abc'"""):
        http_one({**HTTP_BASE, "ce-myext": '"abc'})


def test_http_percent_encoding_on_write():
    headers, _ = encode_http(event(myext='Euro € 😀 "q" 100% \t\n', other="a/b?c=d&e#f:g;h@i~j_k.l-m!n*o'p(q)r[s]t"))
    assert headers["ce-myext"] == "Euro%20%E2%82%AC%20%F0%9F%98%80%20%22q%22%20100%25%20%09%0A"
    assert headers["ce-other"] == "a/b?c=d&e#f:g;h@i~j_k.l-m!n*o'p(q)r[s]t"
    assert all(value.isascii() and value.isprintable() and " " not in value for value in headers.values())


def test_http_write_lone_surrogate():
    with raises("attribute 'myext': value is not valid Unicode (lone surrogate)"):
        encode_http(event(myext="\ud800"))


@pytest.mark.parametrize(
    "content_type, body, data",
    [
        ("application/json", b'{"a": 1}', {"a": 1}),
        ("application/json; charset=utf-8", b'"str"', "str"),
        ("application/JSON", b"[1, 2]", [1, 2]),
        ("text/json", b"true", True),
        ("application/vnd.example+json", b"1.5", 1.5),
        ("application/json", b"null", None),
        ("text/plain", "héllo".encode(), "héllo"),
        ("text/plain; charset=utf-8", "héllo".encode(), "héllo"),
        ("text/plain; charset=ISO-8859-1", "héllo".encode("latin-1"), "héllo"),
        ('text/html; charset="us-ascii"', b"<p/>", "<p/>"),
        ("application/xml", b"<a/>", b"<a/>"),
        ("application/octet-stream", b"\x00\xff", b"\x00\xff"),
        ("image/png", b"\x89PNG", b"\x89PNG"),
        ("application/json", b"", None),  # empty body: no data
        ("text/plain", b"", None),
    ],
)
def test_http_binary_data_by_content_type(content_type, body, data):
    got = http_one({**HTTP_BASE, "Content-Type": content_type}, body)
    assert got.get_datacontenttype() == content_type
    assert type(got.get_data()) is type(data) and got.get_data() == data


def test_http_binary_no_content_type_is_bytes():
    got = http_one(HTTP_BASE, b'{"a": 1}')
    assert got.get_data() == b'{"a": 1}' and got.get_datacontenttype() is None
    assert http_one(HTTP_BASE, b"").get_data() is None


@pytest.mark.parametrize(
    "content_type, body, message",
    [
        ("application/json", b"{x", "data: payload with content type 'application/json' is not valid JSON: Expecting property name"),
        ("application/json", b"NaN", "data: payload with content type 'application/json' is not valid JSON: NaN is not valid JSON"),
        ("application/json", b'"\xff"', "data: data is not valid utf-8: invalid start byte at byte 1"),
        ("text/plain", b"\xff", "data: data is not valid utf-8: invalid start byte at byte 0"),
        ("text/plain; charset=us-ascii", "é".encode(), "data: data is not valid us-ascii"),
        ("text/plain; charset=klingon", b"x", "data: unknown charset 'klingon'"),
    ],
)
def test_http_binary_bad_data(content_type, body, message):
    with raises(message):
        http_one({**HTTP_BASE, "Content-Type": content_type}, body)


def test_http_binary_time():
    assert http_one({**HTTP_BASE, "ce-time": "2018-04-05T03:56:24Z"}).get_time() == T0
    with raises("header 'ce-time': invalid RFC 3339 timestamp 'now'"):
        http_one({**HTTP_BASE, "ce-time": "now"})


def test_http_binary_0_3_rejected():
    with raises("header 'ce-specversion': unsupported specversion '0.3' (only '1.0' is supported)"):
        http_one({**HTTP_BASE, "ce-specversion": "0.3"})


@pytest.mark.parametrize("name", ["id", "source", "type"])
def test_http_binary_missing_required(name):
    headers = {k: v for k, v in HTTP_BASE.items() if k != f"ce-{name}"}
    with raises(f"missing required attribute {name!r} (no 'ce-{name}' header)"):
        http_one(headers)


@pytest.mark.parametrize("name", ["id", "source", "type", "subject", "dataschema"])
def test_http_binary_empty_attribute(name):
    with raises(f"header 'ce-{name}': attribute {name!r} must not be empty"):
        http_one({**HTTP_BASE, f"ce-{name}": ""})


@pytest.mark.parametrize("header, name", [("ce-my_ext", "my_ext"), ("ce-my.ext", "my.ext"), ("ce-", "")])
def test_http_binary_bad_attribute_name(header, name):
    with raises(f"header {header!r}: invalid attribute name {name!r}"):
        http_one({**HTTP_BASE, header: "x"})


def test_http_binary_data_is_reserved():
    with raises("header 'ce-data': 'data' is reserved and cannot be an attribute name"):
        http_one({**HTTP_BASE, "ce-data": "x"})


def test_http_binary_duplicate_headers():
    with raises("header 'Ce-Id': duplicate header for attribute 'id'"):
        http_one({**HTTP_BASE, "Ce-Id": "other"})
    with raises("header 'Content-Type': duplicate header"):
        http_one({**HTTP_BASE, "content-type": "text/plain", "Content-Type": "text/plain"})


def test_http_ce_datacontenttype_header():
    # the binding carries datacontenttype in Content-Type; a ce- header is used only without one
    got = http_one({**HTTP_BASE, "ce-datacontenttype": "text/plain"}, b"hi")
    assert (got.get_datacontenttype(), got.get_data()) == ("text/plain", "hi")
    got = http_one({**HTTP_BASE, "ce-datacontenttype": "text/plain", "Content-Type": "application/json"}, b"1")
    assert (got.get_datacontenttype(), got.get_data()) == ("application/json", 1)


def test_http_not_a_cloudevent():
    with raises("not a CloudEvent: no ce-specversion header and no content type"):
        decode_http({"Host": "x"}, b"")
    with raises("not a CloudEvent: no ce-specversion header and content type 'application/json' is not a CloudEvents format"):
        decode_http({"Content-Type": "application/json"}, b"{}")


def test_http_malformed_inputs():
    with raises("headers must be a mapping, got list"):
        decode_http([("ce-id", "x")], b"")
    with raises("header 'ce-id': header names and values must be strings, got str: bytes"):
        decode_http({**HTTP_BASE, "ce-id": b"x"}, b"")
    with raises("HTTP body must be bytes, got int"):
        decode_http(HTTP_BASE, 5)
    assert http_one(HTTP_BASE, bytearray(b"x")).get_data() == b"x"


# --------------------------------------------------------------------------------------
# HTTP structured and batched modes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["application/cloudevents+json", "application/cloudevents+json; charset=utf-8", "Application/CloudEvents+JSON"],
)
def test_http_structured(content_type):
    body = json.dumps({**BASE, "data": {"a": 1}}).encode()
    # ce- headers next to a structured body are ignored: the body is the event
    got = http_one({"Content-Type": content_type, "ce-specversion": "0.3", "ce-id": "other"}, body)
    same(got, BASE, {"a": 1})


def test_http_structured_errors():
    with raises("structured event is not valid JSON"):
        decode_http({"content-type": "application/cloudevents+json"}, b"{")
    with raises("attribute 'specversion': unsupported specversion '0.3'"):
        decode_http({"content-type": "application/cloudevents+json"}, json.dumps({**BASE, "specversion": "0.3"}).encode())


def test_http_batch():
    docs = [{**BASE, "id": "1"}, {**BASE, "id": "2", "data_base64": "AQ=="}]
    got = decode_http({"Content-Type": CE_BATCH_CONTENT_TYPE}, json.dumps(docs).encode())
    assert [e.get_id() for e in got] == ["1", "2"]
    assert got[1].get_data() == b"\x01"
    assert decode_http({"Content-Type": "application/cloudevents-batch+json"}, b"[]") == []


def test_http_batch_errors_name_the_index():
    docs = [BASE, {**BASE, "time": "bad"}]
    with raises("batch event [1], attribute 'time': invalid RFC 3339 timestamp 'bad'"):
        decode_http({"Content-Type": "application/cloudevents-batch+json"}, json.dumps(docs).encode())
    with raises("batch event [0]: missing required attribute 'id'"):
        decode_http({"Content-Type": "application/cloudevents-batch+json"}, b'[{"specversion":"1.0"}]')
    with raises("batch event [0]: a structured event must be a JSON object, got number"):
        decode_http({"Content-Type": "application/cloudevents-batch+json"}, b"[1]")
    with raises("a batch must be a JSON array, got object"):
        decode_http({"Content-Type": "application/cloudevents-batch+json"}, b"{}")
    with raises("batch is not valid JSON"):
        decode_http({"Content-Type": "application/cloudevents-batch+json"}, b"[")


def test_http_unsupported_event_format():
    with raises("header 'content-type': unsupported event format 'application/cloudevents+avro' (only JSON is supported)"):
        decode_http({**HTTP_BASE, "Content-Type": "application/cloudevents+avro"}, b"x")


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"ce-specversion": "1.0"}, True),
        ({"Ce-SpecVersion": "1.0"}, True),
        ({"Content-Type": "application/cloudevents+json"}, True),
        ({"content-type": "Application/CloudEvents+json; charset=utf-8"}, True),
        ({"Content-Type": "application/cloudevents-batch+json"}, True),
        ({"Content-Type": "application/json"}, False),
        ({"ce-id": "1"}, False),
        ({}, False),
        ([], False),
        ({1: 2}, False),
    ],
)
def test_is_http_cloudevent(headers, expected):
    assert is_http_cloudevent(headers) is expected


# --------------------------------------------------------------------------------------
# HTTP encoding
# --------------------------------------------------------------------------------------


def test_encode_http_binary():
    headers, body = encode_http(
        event({"a": 1}, time=T0, datacontenttype="application/json", count=5, flag=True, raw=b"\x01")
    )
    assert headers == {
        "ce-specversion": "1.0",
        "ce-id": "1234",
        "ce-source": "/src",
        "ce-type": "com.example.t",
        "ce-time": "2018-04-05T03:56:24Z",
        "ce-count": "5",
        "ce-flag": "true",
        "ce-raw": "AQ==",
        "Content-Type": "application/json",
    }
    assert body == b'{"a":1}'


def test_encode_http_data_forms():
    # JSON content type: data is a JSON value, a str is written quoted
    assert encode_http(event("hi", datacontenttype="application/json"))[1] == b'"hi"'
    # no datacontenttype: non-binary data is JSON (implied application/json), put on the wire
    headers, body = encode_http(event("hi"))
    assert (headers["Content-Type"], body) == ("application/json", b'"hi"')
    headers, body = encode_http(event({"a": [1, "é"]}))
    assert (headers["Content-Type"], body) == ("application/json", '{"a":[1,"é"]}'.encode())
    # bytes without a content type stay raw and unlabelled
    headers, body = encode_http(event(b"\x00\x01"))
    assert "Content-Type" not in headers and body == b"\x00\x01"
    # text with a charset
    assert encode_http(event("é", datacontenttype="text/plain; charset=latin-1"))[1] == b"\xe9"
    # no data
    headers, body = encode_http(event(datacontenttype="text/plain"))
    assert body == b"" and headers["Content-Type"] == "text/plain"


@pytest.mark.parametrize(
    "data, content_type, message",
    [
        ({"a": 1}, "text/plain", "data of type dict cannot be written as 'text/plain' (expected str or bytes for a non-JSON content type)"),
        ({1}, "application/json", "data is not JSON-serializable: Object of type set is not JSON serializable"),
        (float("inf"), None, "data is not JSON-serializable: Out of range float values are not JSON compliant"),
        ("é", "text/plain; charset=us-ascii", "data cannot be encoded as us-ascii"),
        ("x", "text/plain; charset=klingon", "unknown charset 'klingon' in datacontenttype 'text/plain; charset=klingon'"),
        ("x", "application/cloudevents+json", "datacontenttype 'application/cloudevents+json' is a CloudEvents format; binary mode cannot carry it"),
    ],
)
def test_encode_binary_data_errors(data, content_type, message):
    attrs = {} if content_type is None else {"datacontenttype": content_type}
    with raises(message):
        encode_http(event(data, **attrs))
    with raises(message):
        encode_kafka(event(data, **attrs))


def test_encode_http_content_type_header_injection():
    with raises("datacontenttype 'text/plain\\r\\nX-Evil: 1' cannot be an HTTP header"):
        encode_http(event("x", datacontenttype="text/plain\r\nX-Evil: 1"))


def test_encode_http_structured():
    headers, body = encode_http(event({"a": 1}, time=T0), "structured")
    assert headers == {"Content-Type": CE_JSON_CONTENT_TYPE}
    assert json.loads(body) == {**BASE, "time": "2018-04-05T03:56:24Z", "data": {"a": 1}}
    assert is_http_cloudevent(headers)


def test_encode_unknown_mode():
    with raises("unknown content mode 'batch' (expected 'binary' or 'structured')"):
        encode_http(event(), "batch")
    with raises("unknown content mode 'text' (expected 'binary' or 'structured')"):
        encode_kafka(event(), "text")


# --------------------------------------------------------------------------------------
# Kafka binding
# --------------------------------------------------------------------------------------


def test_kafka_binary_basic():
    headers = [*KAFKA_BASE, ("ce_time", b"2018-04-05T03:56:24Z"), ("ce_myext", "€ x".encode()), ("content-type", b"application/json")]
    got = decode_kafka(headers, b'{"a": 1}')
    same(got, {**BASE, "time": T0, "myext": "€ x", "datacontenttype": "application/json"}, {"a": 1})


def test_kafka_headers_as_mapping_and_str_values():
    got = decode_kafka({"ce_specversion": b"1.0", "ce_id": "1", "ce_source": b"/s", "ce_type": b"t", "Content-Type": b"text/plain"}, b"hi")
    same(got, {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "datacontenttype": "text/plain"}, "hi")


def test_kafka_no_percent_decoding():
    assert decode_kafka([*KAFKA_BASE, ("ce_x", b"a%20b")], None).get_extension("x") == "a%20b"


def test_kafka_binary_value_none_and_empty():
    assert decode_kafka(KAFKA_BASE, None).get_data() is None
    assert decode_kafka(KAFKA_BASE, b"").get_data() is None
    assert decode_kafka(KAFKA_BASE, b"\x00").get_data() == b"\x00"


@pytest.mark.parametrize("content_type", ["application/cloudevents+json", "application/cloudevents+json; charset=UTF-8"])
def test_kafka_structured(content_type):
    value = json.dumps({**BASE, "partitionkey": "k", "data": [1]}).encode()
    got = decode_kafka([("content-type", content_type.encode()), ("ce_specversion", b"0.3")], value)
    same(got, {**BASE, "partitionkey": "k"}, [1])


def test_kafka_structured_errors():
    with raises("structured record has no value"):
        decode_kafka([("content-type", b"application/cloudevents+json")], None)
    with raises("structured event is not valid JSON"):
        decode_kafka([("content-type", b"application/cloudevents+json")], b"{")
    with raises("header 'content-type': unsupported event format 'application/cloudevents+avro'"):
        decode_kafka([*KAFKA_BASE, ("content-type", b"application/cloudevents+avro")], b"x")


def test_kafka_not_a_cloudevent():
    with raises("not a CloudEvent: no ce_specversion header and no content-type header"):
        decode_kafka([("ce_id", b"1")], b"x")
    with raises("not a CloudEvent: no ce_specversion header and content-type 'application/json' is not application/cloudevents+json"):
        decode_kafka([("content-type", b"application/json")], b"{}")
    with raises("not a CloudEvent: no ce_specversion header and no content-type header"):
        decode_kafka(None, None)


def test_kafka_errors():
    with raises("header 'ce_specversion': unsupported specversion '0.3' (only '1.0' is supported)"):
        decode_kafka([("ce_specversion", b"0.3"), ("ce_id", b"1")], None)
    with raises("missing required attribute 'type' (no 'ce_type' header)"):
        decode_kafka(KAFKA_BASE[:3], None)
    with raises("header 'ce_id': value is not valid UTF-8: invalid start byte at byte 0"):
        decode_kafka([*KAFKA_BASE[:1], ("ce_id", b"\xff"), *KAFKA_BASE[2:]], None)
    with raises("header 'content-type': value is not valid UTF-8"):
        decode_kafka([*KAFKA_BASE, ("content-type", b"\xff")], None)
    with raises("header 'ce_id': value must be bytes, got NoneType"):
        decode_kafka([*KAFKA_BASE[:1], ("ce_id", None), *KAFKA_BASE[2:]], None)
    with raises("header 'ce_Type': invalid attribute name 'Type'"):
        decode_kafka([*KAFKA_BASE, ("ce_Type", b"x")], None)
    with raises("header 'ce_id': duplicate header for attribute 'id'"):
        decode_kafka([*KAFKA_BASE, ("ce_id", b"2")], None)
    with raises("header 'content-type': duplicate header"):
        decode_kafka([*KAFKA_BASE, ("content-type", b"a/b"), ("content-type", b"a/b")], None)
    with raises("header 'ce_time': invalid RFC 3339 timestamp 'x'"):
        decode_kafka([*KAFKA_BASE, ("ce_time", b"x")], None)
    with raises("data: payload with content type 'application/json' is not valid JSON"):
        decode_kafka([*KAFKA_BASE, ("content-type", b"application/json")], b"{")
    with raises("headers must be (name, value) pairs or a mapping of names to values"):
        decode_kafka([("ce_id", b"1", b"x")], None)
    with raises("headers must be (name, value) pairs or a mapping of names to values"):
        decode_kafka(5, None)
    with raises("header 5: header names must be strings, got int"):
        decode_kafka([(5, b"x")], None)
    with raises("record value must be bytes, got int"):
        decode_kafka(KAFKA_BASE, 5)


def test_encode_kafka_binary():
    key, headers, value = encode_kafka(
        event({"a": 1}, time=T0, datacontenttype="application/json", count=5, flag=False, raw=b"\x01", partitionkey="pk-1")
    )
    assert key == b"pk-1"
    assert headers == [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"1234"),
        ("ce_source", b"/src"),
        ("ce_type", b"com.example.t"),
        ("ce_time", b"2018-04-05T03:56:24Z"),
        ("ce_count", b"5"),
        ("ce_flag", b"false"),
        ("ce_raw", b"AQ=="),
        ("ce_partitionkey", b"pk-1"),
        ("content-type", b"application/json"),
    ]
    assert value == b'{"a":1}'


def test_encode_kafka_value_forms():
    assert encode_kafka(event())[0] is None
    assert encode_kafka(event())[2] is None  # no data: a record without value
    assert encode_kafka(event(partitionkey=7))[0] == b"7"
    assert encode_kafka(event("é", datacontenttype="text/plain"))[2] == "é".encode()
    assert encode_kafka(event(b"\x00"))[2] == b"\x00"
    key, headers, value = encode_kafka(event([1, 2]))
    assert ("content-type", b"application/json") in headers and value == b"[1,2]"


def test_encode_kafka_structured():
    key, headers, value = encode_kafka(event({"a": 1}, partitionkey="k"), "structured")
    assert key == b"k"
    assert headers == [("content-type", b"application/cloudevents+json; charset=utf-8")]
    assert json.loads(value) == {**BASE, "partitionkey": "k", "data": {"a": 1}}


def test_encode_kafka_lone_surrogate():
    with raises("attribute value is not valid Unicode"):
        encode_kafka(event(x="\ud800"))


# --------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------

_RESERVED = {"specversion", "id", "source", "type", "datacontenttype", "dataschema", "subject", "time", "data"}
names = st.from_regex(r"\A[a-z0-9]{1,12}\Z").filter(lambda n: n not in _RESERVED)
text = st.text(min_size=1, max_size=20)
offsets = st.sampled_from(
    [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30)), timezone(timedelta(hours=1, seconds=7))]
)
times = st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9000, 1, 1), timezones=offsets)
ext_values = st.one_of(text, st.text(max_size=5), st.booleans(), st.integers(-(2**31), 2**31 - 1))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10,
)
TEXT_TYPES = {
    "text/plain": st.text(min_size=1, max_size=30),
    "text/plain; charset=utf-8": st.text(min_size=1, max_size=30),
    "text/csv; charset=utf-16": st.text(min_size=1, max_size=30),
    "text/html; charset=latin-1": st.text(st.characters(max_codepoint=255), min_size=1, max_size=30),
}
JSON_TYPES = ["application/json", "application/json; charset=utf-8", "text/json", "application/vnd.knflow+json"]
BINARY_TYPES = [None, "application/octet-stream", "image/png; q=1"]


@st.composite
def data_and_type(draw):
    """(datacontenttype, data) that every mode carries without loss."""
    kind = draw(st.sampled_from(["json", "text", "bytes", "none"]))
    if kind == "json":
        return draw(st.sampled_from(JSON_TYPES)), draw(json_values)
    if kind == "text":
        content_type = draw(st.sampled_from(sorted(TEXT_TYPES)))
        return content_type, draw(TEXT_TYPES[content_type])
    if kind == "bytes":
        return draw(st.sampled_from(BINARY_TYPES)), draw(st.binary(min_size=1, max_size=30))
    return draw(st.sampled_from([None, "text/plain", "application/json"])), None


@st.composite
def events(draw):
    attributes = {"specversion": "1.0", "id": draw(text), "source": draw(text), "type": draw(text)}
    for name in ("subject", "dataschema"):
        if draw(st.booleans()):
            attributes[name] = draw(text)
    if draw(st.booleans()):
        attributes["time"] = draw(times)
    attributes.update(draw(st.dictionaries(names, ext_values, max_size=4)))
    content_type, data = draw(data_and_type())
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    return CloudEvent(attributes, data) if "time" in attributes else _new_event(attributes, data)


def _as_strings(attributes: dict) -> dict:
    """Binary mode: extension values come back as their canonical strings (the spec)."""
    out = {}
    for name, value in attributes.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int):
            value = str(value)
        out[name] = value
    return out


ROUND_TRIP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@ROUND_TRIP
@given(events())
def test_round_trip_structured(original):
    attributes, data = original.get_attributes(), original.get_data()
    same(event_from_dict(event_to_dict(original)), attributes, data)
    same(event_from_dict(json.loads(json.dumps(event_to_dict(original)))), attributes, data)
    same(decode_structured(encode_structured(original)), attributes, data)
    [got] = decode_http(*encode_http(original, "structured"))
    same(got, attributes, data)
    key, headers, value = encode_kafka(original, "structured")
    same(decode_kafka(headers, value), attributes, data)


@ROUND_TRIP
@given(events())
def test_round_trip_http_binary(original):
    headers, body = encode_http(original)
    assert all(v.isascii() and v.isprintable() for v in headers.values())
    [got] = decode_http(headers, body)
    same(got, _as_strings(original.get_attributes()), original.get_data())


@ROUND_TRIP
@given(events())
def test_round_trip_kafka_binary(original):
    key, headers, value = encode_kafka(original)
    same(decode_kafka(headers, value), _as_strings(original.get_attributes()), original.get_data())
    partition_key = original.get_extension("partitionkey")
    assert key == (None if partition_key is None else _as_strings({"k": partition_key})["k"].encode())


@ROUND_TRIP
@given(st.one_of(json_values.filter(lambda v: v is not None), st.text(max_size=10)))
def test_binary_without_content_type_implies_json(data):
    # JSON format: no datacontenttype means application/json; binary mode makes it explicit.
    original = event(data)
    [got] = decode_http(*encode_http(original))
    same(got, {**BASE, "datacontenttype": "application/json"}, data)
    same(decode_kafka(*encode_kafka(original)[1:]), {**BASE, "datacontenttype": "application/json"}, data)
    same(decode_structured(encode_structured(original)), BASE, data)


def test_binary_empty_data_comes_back_as_none():
    for data, content_type in ((b"", None), ("", "text/plain")):
        original = event(data, **({"datacontenttype": content_type} if content_type else {}))
        assert decode_http(*encode_http(original))[0].get_data() is None
        assert decode_kafka(*encode_kafka(original)[1:]).get_data() is None
        assert decode_structured(encode_structured(original)).get_data() == data  # structured keeps it


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=6), st.binary(max_size=20))
def test_http_garbage_only_raises_codec_error(headers, body):
    headers.setdefault("ce-specversion", "1.0")
    try:
        decode_http(headers, body)
    except CodecError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type", "ce_x"]), st.binary(max_size=8)), max_size=8), st.none() | st.binary(max_size=20))
def test_kafka_garbage_only_raises_codec_error(headers, value):
    try:
        decode_kafka(headers, value)
    except CodecError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60) | json_values.map(lambda v: json.dumps(v).encode()))
def test_structured_garbage_only_raises_codec_error(body):
    try:
        decode_structured(body)
    except CodecError:
        pass


# --------------------------------------------------------------------------------------
# interoperability with the SDK's own JSON format
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, attributes",
    [
        ({"a": [1, "é"]}, {"datacontenttype": "application/json"}),
        ("plain", {"datacontenttype": "text/plain"}),
        (b"\x00\xff", {"datacontenttype": "application/octet-stream"}),
        (None, {"subject": "s", "ext": "v"}),
        ([1, 2], {}),
    ],
)
def test_sdk_json_format_reads_ours_and_we_read_its(data, attributes):
    from cloudevents.core.formats.json import JSONFormat

    original = CloudEvent({**BASE, "time": T0, **attributes}, data)
    sdk = JSONFormat()
    theirs = sdk.read(CloudEvent, encode_structured(original))
    assert theirs.get_attributes() == original.get_attributes() and theirs.get_data() == data
    ours = decode_structured(sdk.write(original))
    same(ours, original.get_attributes(), data)


@pytest.mark.parametrize("data", [
    {"a": float("nan")}, {"a": [1.0, float("inf")]}, {"t": datetime(2020, 1, 1)},
])
def test_json_data_orjson_would_write_differently_is_refused_as_json_refuses_it(data):
    """JSON data is encoded with orjson, but NaN and infinities (orjson writes null) and
    values json cannot write (a datetime) are refused with a reason, as before."""
    event = CloudEvent(attributes={"specversion": "1.0", "id": "x", "source": "/s", "type": "t",
                                   "datacontenttype": "application/json"}, data=data)
    with pytest.raises(CodecError):
        encode_kafka(event, "binary")


@pytest.mark.parametrize("data,written", [
    ({"big": 2 ** 70, "n": None}, b'{"big":1180591620717411303424,"n":null}'),  # over 64 bits: json writes it
    ({1: "k", "s": "null"}, b'{"1":"k","s":"null"}'),  # a non-str key, as json writes it
    ({"x": 1.5, "s": "\u00e9"}, '{"x":1.5,"s":"\u00e9"}'.encode()),  # UTF-8, not \\u escapes
])
def test_json_data_is_written_as_json_writes_it(data, written):
    event = CloudEvent(attributes={"specversion": "1.0", "id": "x", "source": "/s", "type": "t",
                                   "datacontenttype": "application/json"}, data=data)
    _, _, value = encode_kafka(event, "binary")
    assert value == written
