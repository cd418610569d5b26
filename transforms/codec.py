"""CloudEvents 1.0 codec: JSON event format, HTTP and Kafka protocol bindings.

Events are ``cloudevents.core.v1.event.CloudEvent`` objects. Everything that enters here
from the wire is validated exactly once, and every failure is a :class:`CodecError` whose
message says what is wrong and where (header name, attribute, batch index): the pipeline
turns it into a dead letter reason, it never crashes on a bad record.

Decoded attribute values:

- ``time`` is a :class:`Timestamp`: a timezone-aware ``datetime`` that also keeps the exact
  RFC 3339 text it was decoded from (nanoseconds, ``+05:45``, lower-case ``t``/``z``), and
  every writer writes that text back: an event leaves as it came. A ``datetime`` made
  elsewhere is written in RFC 3339, with ``Z`` for UTC.
- In structured mode extension values keep their JSON types (str, int, bool). In binary
  mode (HTTP ``ce-`` headers, Kafka ``ce_`` headers) every extension value is a string:
  headers carry the canonical string form and the binding has no type information, so an
  int extension ``5`` comes back as ``"5"`` (CloudEvents spec, "Type System").
- Other core attributes are strings.

Data:

- Structured mode: ``data`` is the JSON value as is; ``data_base64`` becomes ``bytes``.
- Binary mode: a JSON content type (``*/json``, ``*/*+json``) is parsed to a Python value,
  ``text/*`` becomes ``str`` (``charset`` parameter honoured, default UTF-8), anything
  else (or no content type) stays ``bytes``. An empty payload is ``None``.
- Kept payloads (``keep_payload=True``: the ingress, replies, the job's intake): a
  binary-mode payload is the data as ``bytes``, exactly as received and not checked, as
  Knative's brokers pass it (a payload that does not parse as its content type is the
  filters' problem, not the sender's); ``payload_value`` gives what parsing would have
  given, for filters, when they first read the data. A structured or batched event's JSON
  ``data`` is kept the same way by ``decode_http``, as the text of its ``data`` member
  (``_keep_data_texts``): stored in Kafka's binary mode, that text is the record's value.
- Writing: for a JSON content type the data is a JSON *value* (a ``str`` is written as a
  JSON string, quoted), as in the JSON format spec; with no ``datacontenttype`` non-binary
  data is written as ``application/json`` (the type the JSON format implies), so binary
  mode then sets that content type on the wire. ``bytes`` data is always written as is in
  binary mode. In a structured document (``encode_structured``) ``bytes`` data with a JSON
  content type that holds valid JSON is embedded as that very JSON text (``1.10`` stays
  ``1.10``), ``text/*`` that decodes in its charset becomes a JSON string, anything else
  is ``data_base64``; ``event_to_dict`` gives ``data_base64`` for any ``bytes`` (a dict
  cannot hold JSON text as is; task records read it back to the same bytes).

Choices where the specs leave room:

- HTTP header values: double-quoted strings are unquoted, then one round of percent
  decoding; invalid UTF-8 (``%C0%A0``) is rejected, a ``%`` not followed by two hex digits
  is kept literally (older senders do not encode ``%``). Kafka header values are raw UTF-8.
- Binary mode: the Content-Type header is the datacontenttype; a ``ce-datacontenttype``
  header is used only when there is no Content-Type. An empty Content-Type is none.
- Extension integers must fit the 32-bit CloudEvents Integer (in and out); floats,
  arrays and objects are not attribute values. Leap seconds (``:60``) are rejected.
- Only the JSON event format: ``application/cloudevents+<other>`` is a CodecError, so is
  a JSON-format datacontenttype in binary mode on write. The charset parameter of
  ``application/cloudevents+json`` is ignored (JSON is UTF-8).
- String attribute values are not scanned for control characters or surrogates on
  decode (lean); writers percent-encode or fail with a CodecError.

``CloudEvent.__init__`` invents ``id`` and ``time`` when absent and re-validates every
attribute; decoded events are built with :func:`_new_event` instead, which sets the two
fields the class reads (``_attributes``, ``_data``) after our own, single validation.

Speed (the codec runs once per record and once per (event, trigger) delivery): each public
function first tries a fast path for the common case (``bytes`` payloads, ``str``/``int``/
``bool``/``datetime`` attributes, UTF-8 JSON or text data, no quoted header values). The
fast path gives up (returns ``None``) on anything else, including every error, and the
general path, which defines the behaviour and every error message, runs from the start; so
both paths always agree. Small bounded caches (emptied when full) keep repeated work out:
extension names already validated, header names, and the minutes of recent ``time``
values (the pattern check is then skipped). A decoded ``time`` carries its text, so no
writer formats it again (``isoformat`` is costly).

There is no memo of encoded events. The Flink job serializes each (trigger, event) task on
its own, so ``encode_http`` never sees the same event object twice there (nor in
``bench/delivery.py``); and a memo that cannot go stale (the attribute values checked one
by one, JSON data encoded again as it may change in place) costs about a quarter of an
encode on every miss, more than it saves for an event delivered to two triggers in process.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from json.encoder import c_make_encoder as _c_make_encoder
from json.encoder import encode_basestring as _encode_basestring
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from cloudevents.core.v1.event import CloudEvent
from orjson import OPT_PASSTHROUGH_DATACLASS, OPT_PASSTHROUGH_DATETIME, OPT_PASSTHROUGH_SUBCLASS
from orjson import dumps as _orjson_dumps, loads as _orjson_loads

from filters.errors import KnflowError

__all__ = [
    "CodecError",
    "Timestamp",
    "CE_JSON_CONTENT_TYPE",
    "CE_BATCH_CONTENT_TYPE",
    "event_from_dict",
    "event_to_dict",
    "decode_structured",
    "encode_structured",
    "decode_http",
    "encode_http",
    "is_http_cloudevent",
    "decode_kafka",
    "encode_kafka",
    "payload_value",
]

CE_JSON_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
CE_BATCH_CONTENT_TYPE = "application/cloudevents-batch+json; charset=utf-8"
_CE_JSON_CONTENT_TYPE_BYTES = CE_JSON_CONTENT_TYPE.encode("ascii")
_SPECVERSION = "1.0"
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_UTC = timezone.utc


class CodecError(KnflowError, ValueError):
    """A message is not a valid CloudEvent (or an event cannot be written).

    ``where`` names the place at fault (``header 'ce-time'``, ``attribute 'id'``,
    ``batch event [2], attribute 'type'``, ...) and may be empty; ``message`` says what
    is wrong. ``str(error)`` is ``"<where>: <message>"``.
    """

    def __init__(self, message: str, where: str = "") -> None:
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)

    def within(self, outer: str) -> CodecError:
        """The same error, located inside ``outer`` (e.g. a batch index)."""
        return CodecError(self.message, f"{outer}, {self.where}" if self.where else outer)


# ---------------------------------------------------------------------------------------
# attributes
# ---------------------------------------------------------------------------------------

# Core attributes other than specversion and time: string valued, never empty.
_CORE_STRINGS = frozenset(("id", "source", "type", "datacontenttype", "dataschema", "subject"))
_REQUIRED = ("id", "source", "type")  # specversion is checked first, on its own
_valid_name = re.compile(r"[a-z0-9]+\Z").match
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})\Z"
).match


def _new_event(attributes: dict[str, Any], data: Any) -> CloudEvent:
    """A CloudEvent from attributes we validated ourselves (see the module docstring)."""
    event = CloudEvent.__new__(CloudEvent)
    event._attributes = attributes
    event._data = data
    return event


# Bounded caches: when full they are emptied, not evicted one by one (cheap, thread-safe;
# they serve a stream whose recent items are the ones that repeat).
_CACHE_MAX = 1024


class Timestamp(datetime):
    """A decoded ``time``: the ``datetime`` (microseconds, its own offset) plus ``text``,
    exactly the RFC 3339 text it was decoded from.

    Python's ``datetime`` stops at microseconds, and an event's ``time`` may carry
    nanoseconds (``2026-11-29T10:00:20.123456789Z``) or any offset (``+05:45``): every
    writer here writes ``text`` back, so the broker never alters what it does not need to.
    It is a ``datetime`` everywhere else (comparisons, filters, the SDK's ``get_time``).
    Results of arithmetic or ``replace`` carry no ``text`` and are written from their value.
    Pickling and copying keep the text.
    """

    __slots__ = ("text",)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, tuple[str]]:
        return _timestamp_from_text, (self.text,)

    def __copy__(self) -> "Timestamp":
        return self  # immutable

    def __deepcopy__(self, memo: Any) -> "Timestamp":
        return self


def _timestamp_from_text(text: str) -> Timestamp:
    return _parse_time(text, "")  # type: ignore[return-value]


def _new_timestamp(text: str, iso: str) -> Timestamp:
    """A Timestamp for ``text`` (``iso``: the same in the form fromisoformat reads)."""
    value = Timestamp.fromisoformat(iso)
    value.text = text
    return value


def _time_text(value: datetime) -> str | None:
    """The text a decoded time came with (None: not a decoded time)."""
    if type(value) is Timestamp:
        try:
            return value.text
        except AttributeError:  # made by arithmetic or replace(), not decoded
            return None
    return None


def _utc_text(value: datetime) -> str | None:
    """``_format_time(value)`` for a decoded or UTC ``datetime``; None for anything else."""
    text = _time_text(value)
    if text is not None:
        return text
    if value.tzinfo is timezone.utc:  # what the SDK stamps: half the time of isoformat(), no offset to format
        return f"{value.date().isoformat()}T{value.time().isoformat()}Z"
    text = value.isoformat()
    if text.endswith("+00:00"):
        return text[:-6] + "Z"
    return None


# "2026-11-28T20:00:": minutes of recent times (``T``, ``Z``, no or 1-9 fraction digits)
# that the full path below accepted. Another time of such a minute in that form needs no
# pattern match: fromisoformat reads its seconds and fraction as ASCII digits or fails (a
# stream's times share their minute).
_minutes: set[str] = set()


def _parse_time(value: Any, where: str) -> datetime:
    if type(value) is str:
        size = len(value)
        if (20 < size <= 30 and value[19] == "." or size == 20) and value[-1] == "Z" and value[:17] in _minutes:
            try:
                return _new_timestamp(value, value)
            except ValueError:
                pass  # the full path says why
    if isinstance(value, str):
        if _RFC3339(value):
            # the only letters the pattern allows are [Tt] and [Zz]: upper() them if needed
            iso = value if value[10] == "T" and value[-1] != "z" else value.upper()
            try:
                parsed = _new_timestamp(str(value), iso)
            except ValueError as exc:  # e.g. month 13, second 60
                raise CodecError(f"invalid RFC 3339 timestamp {value!r}: {exc}", where) from None
            size = len(value)
            if (
                (20 < size <= 30 and value[19] == "." or size == 20)
                and value[-1] == "Z" and value[10] == "T" and value[11:13] != "24"  # 24:00 is the next day
                and type(value) is str and value.isascii()
            ):
                if len(_minutes) >= _CACHE_MAX:
                    _minutes.clear()
                _minutes.add(value[:17])
            return parsed
        raise CodecError(f"invalid RFC 3339 timestamp {value!r}", where)
    if isinstance(value, datetime) and value.utcoffset() is not None:
        return value
    raise CodecError(f"time must be an RFC 3339 string, got {type(value).__name__}", where)


def _format_time(value: datetime, where: str) -> str:
    text = _time_text(value)
    if text is not None:
        return text
    text = value.isoformat()
    if text.endswith("+00:00"):
        return text[:-6] + "Z"
    offset = value.utcoffset()
    if offset is None:
        raise CodecError("time must be timezone-aware", where)
    if offset.seconds % 60 or offset.microseconds:  # RFC 3339 offsets are whole minutes: use UTC
        try:
            return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z"
        except OverflowError:
            raise CodecError(f"time {text} cannot be written in UTC (out of range)", where) from None
    return text


def _check_specversion(value: Any, where: str) -> None:
    if value != _SPECVERSION:
        if value is None:
            raise CodecError("missing required attribute 'specversion'", where)
        raise CodecError(f"unsupported specversion {value!r} (only '1.0' is supported)", where)


def _check_extension_name(name: str, where: str) -> None:
    if not _valid_name(name):
        raise CodecError(
            f"invalid attribute name {name!r} (attribute names are lowercase letters a-z and digits 0-9)",
            where,
        )
    if name == "data":
        raise CodecError("'data' is reserved and cannot be an attribute name", where)


# Extension names that passed _check_extension_name (a stream repeats a few names).
_known_extensions: set[str] = set()


def _learn_extension(name: str) -> None:
    if len(_known_extensions) >= _CACHE_MAX:
        _known_extensions.clear()
    _known_extensions.add(name)


def _check_required(attributes: dict[str, Any], label: str) -> None:
    for name in _REQUIRED:
        if name not in attributes:
            raise CodecError(f"missing required attribute {name!r}{label.format(name)}")


def _canonical(name: str, value: Any) -> str:
    """The canonical string form of an attribute value (CloudEvents type system)."""
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        if _INT32_MIN <= value <= _INT32_MAX:
            return str(value)
        raise CodecError(f"integer {value} is outside the 32-bit range of CloudEvents Integer", f"attribute {name!r}")
    if isinstance(value, datetime):
        return _format_time(value, f"attribute {name!r}")
    if isinstance(value, int):  # int subclasses (IntEnum); bool was handled above
        return _canonical(name, int(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, str):
        return str(value)
    raise CodecError(
        f"unsupported attribute value type {kind.__name__} (expected str, int, bool, bytes or datetime)",
        f"attribute {name!r}",
    )


def _attributes_of(event: CloudEvent) -> dict[str, Any]:
    try:
        attributes = event.get_attributes()
    except AttributeError:
        raise CodecError(f"expected a CloudEvent, got {type(event).__name__}") from None
    _check_specversion(attributes.get("specversion"), "attribute 'specversion'")
    return attributes


# ---------------------------------------------------------------------------------------
# content types and data
# ---------------------------------------------------------------------------------------

_OTHER, _TEXT, _JSON, _CE_JSON, _CE_BATCH, _CE_OTHER = range(6)
_JSON_KINDS = (_JSON, _CE_JSON, _CE_BATCH)
_UTF8_JSON = (_JSON, "utf-8")  # what _media says of application/json


@lru_cache(maxsize=512)
def _media(content_type: str) -> tuple[int, str]:
    """(kind, charset) of a content type; cached, content types repeat per stream."""
    media_type, _, params = content_type.partition(";")
    media_type = media_type.strip().lower()
    top, slash, sub = media_type.partition("/")
    if media_type.startswith("application/cloudevents"):
        if media_type == "application/cloudevents+json":
            kind = _CE_JSON
        elif media_type == "application/cloudevents-batch+json":
            kind = _CE_BATCH
        else:
            kind = _CE_OTHER
    elif slash and (sub == "json" or sub.endswith("+json")):
        kind = _JSON
    elif slash and top == "text":
        kind = _TEXT
    else:
        kind = _OTHER
    charset = "utf-8"
    if params:
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "charset" and value.strip():
                charset = value.strip().strip('"').lower()
    return kind, charset


def _decode_text(body: bytes, charset: str, where: str) -> str:
    try:
        return body.decode(charset)
    except LookupError:
        raise CodecError(f"unknown charset {charset!r}", where) from None
    except UnicodeDecodeError as exc:
        raise CodecError(f"data is not valid {charset}: {exc.reason} at byte {exc.start}", where) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_json_decoder = json.JSONDecoder(parse_constant=_reject_constant)
_json_decode = _json_decoder.decode
_json_scan = _json_decoder.scan_once  # what _json_decode runs after skipping whitespace
_json_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_json_encode = _json_encoder.encode
# The C encoder _json_encode builds on every call, built once. Without cycle markers (the
# only difference): a cycle ends in RecursionError, and _dumps then lets _json_encode
# report it as usual.
_c_encode = (
    None
    if _c_make_encoder is None
    else _c_make_encoder(None, _json_encoder.default, _encode_basestring, None, ":", ",", False, False, False)
)


def _loads(text: str, what: str, where: str) -> Any:
    """``what`` starts the message: "<what> is not valid JSON: ..."."""
    try:  # fast path: a value filling the whole text (no surrounding whitespace)
        value, end = _json_scan(text, 0)
        if end == len(text):
            return value
    except (StopIteration, ValueError, RecursionError):
        pass  # the full decoder below says what is wrong
    try:
        return _json_decode(text)
    except ValueError as exc:  # JSONDecodeError included
        raise CodecError(f"{what} is not valid JSON: {exc}", where) from None
    except RecursionError:
        raise CodecError(f"{what} is nested too deeply", where) from None


def _dumps(value: Any, what: str) -> str:
    if _c_encode is not None:
        try:
            return "".join(_c_encode(value, 0))
        except (TypeError, ValueError, RecursionError):
            pass  # _json_encode below gives the usual error
    try:
        return _json_encode(value)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"{what} is not JSON-serializable: {exc}") from None
    except RecursionError:
        raise CodecError(f"{what} is nested too deeply") from None


def _as_bytes(payload: Any, what: str) -> bytes:
    if type(payload) is bytes:
        return payload
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode("utf-8", "surrogatepass")
    raise CodecError(f"{what} must be bytes, got {type(payload).__name__}")


# How a decoder treats the payload: parse a binary-mode payload into data (the default),
# or keep it as received, unchecked (decode_kafka(keep_payload=True)), and, for
# decode_http(keep_payload=True), keep a structured event's JSON data as its text too.
_PARSE, _KEEP_TEXTS, _KEEP = 0, 1, 2


def _decode_data(body: bytes, content_type: str | None, where: str, keep: int = _PARSE) -> Any:
    """Binary-mode payload -> data, per the content type (see the module docstring); any
    ``keep`` mode: the payload itself (``bytes``), unchecked."""
    if not body:
        return None
    if content_type is None or keep:
        return body
    kind, charset = _media(content_type)
    if kind in _JSON_KINDS:
        return _loads(_decode_text(body, charset, where), f"payload with content type {content_type!r}", where)
    if kind == _TEXT:
        return _decode_text(body, charset, where)
    return body


_DIGITS_AS_ZERO = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
_NINETEEN_DIGITS = b"0" * 19


def _long_digits(data: bytes) -> bool:
    """A run of 19 digits: a number orjson may read differently from json (an integer beyond
    64 bits becomes a float there), or a long string of digits; json decides then.

    Every digit made ``0``, everything else a space, then one substring search: ~1.2 us for
    1 KB of chat text where the regex ``[0-9]{19}`` took ~10 us (it tries the repeat at every
    digit)."""
    return _NINETEEN_DIGITS in data.translate(_DIGITS_AS_ZERO)


def payload_value(payload: Any, content_type: Any) -> Any:
    """The data a binary-mode payload kept as ``bytes`` stands for: what decoding it without
    ``keep_payload`` gives (a JSON value for a JSON content type, ``str`` for ``text/*``
    in its charset, else the bytes themselves); the bytes themselves too when they do not
    decode (``decode_kafka(keep_payload=True)`` does not check them). Never raises.

    Filters read an event's data through this, on first use (``transforms.router``): the
    payload is parsed only for a filter that reads it. orjson parses (about twice as fast as
    json, same values) unless the payload holds a run of 19 digits (a number orjson would
    read as a float) or orjson refuses it; then json decides, as the decoders do."""
    if type(payload) is not bytes or not payload or type(content_type) is not str:
        return payload
    try:
        kind, charset = _media(content_type)
    except Exception:  # noqa: BLE001 - never raises: an odd content type leaves the bytes
        return payload
    if kind in _JSON_KINDS:
        if charset == "utf-8":
            if not _long_digits(payload):
                try:
                    return _orjson_loads(payload)
                except ValueError:  # NaN, 1e400, lone surrogates...: json below decides
                    pass
        try:
            return _loads(payload.decode(charset), "payload", "data")
        except (CodecError, LookupError, UnicodeError):
            return payload
    if kind == _TEXT:
        try:
            return payload.decode(charset)
        except (LookupError, UnicodeError):
            return payload
    return payload


def _encode_data(data: Any, content_type: str | None) -> tuple[bytes | None, str | None]:
    """data -> (binary-mode payload, content type to put on the wire)."""
    if data is None:
        return None, content_type
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data), content_type
    if content_type is None:
        content_type = "application/json"  # what the JSON format implies for non-binary data
    kind, charset = _media(content_type)
    if kind == _CE_JSON or kind == _CE_BATCH or kind == _CE_OTHER:
        raise CodecError(
            f"datacontenttype {content_type!r} is a CloudEvents format; binary mode cannot carry it "
            "(the receiver would read the payload as a structured event)"
        )
    if kind == _JSON:
        text = _dumps(data, "data")
    elif isinstance(data, str):
        text = data
    else:
        raise CodecError(
            f"data of type {type(data).__name__} cannot be written as {content_type!r} "
            "(expected str or bytes for a non-JSON content type)"
        )
    try:
        return text.encode(charset), content_type
    except LookupError:
        raise CodecError(f"unknown charset {charset!r} in datacontenttype {content_type!r}") from None
    except UnicodeEncodeError as exc:
        raise CodecError(f"data cannot be encoded as {charset}: {exc.reason} at index {exc.start}") from None


#: orjson leaves to json what json would write differently or refuse (datetimes, dataclasses,
#: subclasses of str, int, dict, list): they raise TypeError, and json decides.
_ORJSON_AS_JSON = OPT_PASSTHROUGH_DATACLASS | OPT_PASSTHROUGH_DATETIME | OPT_PASSTHROUGH_SUBCLASS


def _encode_data_fast(data: Any, content_type: Any) -> tuple[bytes | None, Any] | None:
    """_encode_data for None, bytes, and UTF-8 JSON or text data; None: use _encode_data."""
    if data is None:
        return None, content_type
    if type(data) is bytes:
        return data, content_type
    if content_type is None:
        content_type = "application/json"
    elif type(content_type) is not str:
        return None
    media = _media(content_type)
    if media == _UTF8_JSON and _c_encode is not None:  # the most common case first
        try:  # orjson: ~16x json's encoder on a 1 KB object (the ingress's batch mode re-encodes each event's data)
            encoded = _orjson_dumps(data, option=_ORJSON_AS_JSON)
            # orjson writes NaN and infinities as null and refuses integers over 64 bits and
            # non-str keys; json (allow_nan=False) refuses the first and writes the others:
            # an output with a null is checked by json, as is whatever orjson refused
            if b"null" not in encoded:
                return encoded, content_type
        except TypeError:
            pass
        try:
            return "".join(_c_encode(data, 0)).encode("utf-8"), content_type
        except (TypeError, ValueError, RecursionError, UnicodeEncodeError):
            return None
    kind, charset = media
    if charset != "utf-8" or _c_encode is None:
        return None
    if kind == _JSON:
        try:
            text = "".join(_c_encode(data, 0))
        except (TypeError, ValueError, RecursionError):
            return None
    elif kind == _TEXT and type(data) is str:
        text = data
    else:
        return None
    try:
        return text.encode("utf-8"), content_type
    except UnicodeEncodeError:
        return None


# ---------------------------------------------------------------------------------------
# JSON event format (structured mode)
# ---------------------------------------------------------------------------------------


def event_from_dict(obj: Mapping[str, Any]) -> CloudEvent:
    """A structured-mode JSON object (already parsed) -> event."""
    if type(obj) is not dict and not isinstance(obj, Mapping):
        raise CodecError(f"a structured event must be a JSON object, got {_json_type(obj)}")
    _check_specversion(obj.get("specversion"), "attribute 'specversion'")
    attributes: dict[str, Any] = {}
    data: Any = None
    has_data = False
    data_base64: Any = None
    for name, value in obj.items():
        if name == "data":
            data = value
            has_data = True
            continue
        if name == "data_base64":
            data_base64 = value
            continue
        if value is None:  # JSON format: null means unset
            continue
        if name in _CORE_STRINGS:
            if type(value) is not str:
                raise CodecError(f"must be a string, got {_json_type(value)}", f"attribute {name!r}")
            if not value:
                raise CodecError("must not be empty", f"attribute {name!r}")
        elif name == "time":
            value = _parse_time(value, "attribute 'time'")
        elif name != "specversion":
            if type(name) is not str or name not in _known_extensions:
                if not isinstance(name, str):
                    raise CodecError(f"attribute names must be strings, got {type(name).__name__}")
                _check_extension_name(name, f"attribute {name!r}")
                if type(name) is str:
                    _learn_extension(name)
            kind = type(value)
            if kind is int:
                if not _INT32_MIN <= value <= _INT32_MAX:
                    raise CodecError(
                        f"integer {value} is outside the 32-bit range of CloudEvents Integer", f"attribute {name!r}"
                    )
            elif kind is not str and kind is not bool:
                raise CodecError(
                    f"extension values must be a string, integer or boolean, got {_json_type(value)}",
                    f"attribute {name!r}",
                )
        attributes[name] = value
    _check_required(attributes, "")
    if data_base64 is not None:
        if has_data:
            raise CodecError("both 'data' and 'data_base64' are present (they are mutually exclusive)")
        if type(data_base64) is not str:
            raise CodecError(f"must be a base64 string, got {_json_type(data_base64)}", "'data_base64'")
        try:
            data = base64.b64decode(data_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CodecError(f"invalid base64: {exc}", "'data_base64'") from None
    return _new_event(attributes, data)


def event_to_dict(event: CloudEvent) -> dict[str, Any]:
    """Event -> JSON-serializable structured form (``data`` or ``data_base64``)."""
    attributes = _attributes_of(event)
    out: dict[str, Any] = {}
    for name, value in attributes.items():
        kind = type(value)
        if kind is str or kind is bool:
            out[name] = value
        elif value is None:
            continue
        elif isinstance(value, datetime):
            out[name] = _format_time(value, f"attribute {name!r}")
        elif kind is int:
            out[name] = value if _INT32_MIN <= value <= _INT32_MAX else _canonical(name, value)
        else:
            out[name] = _canonical(name, value)
    data = event.get_data()
    if data is not None:
        if isinstance(data, (bytes, bytearray, memoryview)):
            out["data_base64"] = base64.b64encode(data).decode("ascii")
        else:
            content_type = attributes.get("datacontenttype")
            if content_type is not None and not isinstance(data, str) and _media(content_type)[0] not in _JSON_KINDS:
                raise CodecError(
                    f"data of type {type(data).__name__} cannot be written as {content_type!r} "
                    "(expected str or bytes for a non-JSON content type)"
                )
            out["data"] = data
    return out


def decode_structured(body: bytes | str) -> CloudEvent:
    """An ``application/cloudevents+json`` document -> event."""
    return event_from_dict(_parse_document(body, "structured event"))


def _decode_structured(body: bytes | str, keep: int) -> CloudEvent:
    if keep != _KEEP_TEXTS or type(body) is not bytes:
        return decode_structured(body)
    document = _parse_document(body, "structured event")
    event = event_from_dict(document)
    if type(document) is dict and document.get("data") is not None and not _keep_last_data_text(
            body, document, event):
        _keep_data_texts(body, [document], [event])
    return event


def _keep_last_data_text(body: bytes, document: dict, event: CloudEvent) -> bool:
    """``_keep_data_texts`` for one document whose JSON data is an object or an array and
    its last member (as SDKs write it), without reading the data again: its text runs from
    after the key to the document's closing brace. Every other member is a string, number,
    boolean or null, whose text never ends in ``}`` or ``]``: a text that does is the data's.
    The key found is the data's own when no backslash comes before it (only an escape could
    hide the real key or put one inside a string). False: not that case (the general way then)."""
    data = document.get("data")
    kind = type(data)
    if kind is not dict and kind is not list:
        return False
    content_type = event._attributes.get("datacontenttype")
    if not _json_kind(content_type):
        return False
    match = _DATA_KEY.search(body)
    # a backslash before it: an escaped key or quote, so this may not be the data's key
    if match is None or body.find(b"\\", 0, match.start()) != -1:
        return False
    raw = body[match.end():body.rindex(b"}")].rstrip(_JSON_SPACE)
    if not raw or raw[0] != (123 if kind is dict else 91) or raw[-1] != (125 if kind is dict else 93):
        return False
    _keep_json_text(event, raw)
    return True


def _json_kind(content_type: Any) -> bool:
    """Whether data with this datacontenttype is a JSON value (none: the JSON format implies JSON)."""
    return content_type is None or _media(content_type)[0] in _JSON_KINDS


def _keep_json_text(event: CloudEvent, raw: bytes) -> None:
    """The event's JSON data becomes ``raw``, its text as received (a kept payload)."""
    event._data = raw
    if event._attributes.get("datacontenttype") is None:  # the implied type, which writing sets anyway
        event._attributes["datacontenttype"] = "application/json"


#: The key of a structured event's ``data`` member as JSON writers write it. The first one
#: in a document is the event's own (attributes are strings, numbers and booleans: a key
#: inside ``data`` comes after it); in a batch, the first after the previous event's data.
#: An escaped key (``"d\u0061ta"``) is not found: that event's data is written out again.
_DATA_KEY = re.compile(rb'"data"[ \t\n\r]*:[ \t\n\r]*')
_JSON_SPACE = b" \t\n\r"


def _keep_data_texts(body: bytes, documents: list, events: list[CloudEvent]) -> None:
    """The ingress's structured events (``decode_http(keep_payload=True)``) keep their JSON
    ``data`` as the text that came, as a binary-mode payload is kept, so what Kafka stores
    and every delivery sends is that text: written out again, ``{"v": 1.10}`` would become
    ``{"v":1.1}`` and ``2.5e3`` ``2500.0``. ``documents`` are the parsed objects of
    ``events``, in the order of ``body``.

    Cheap when writing it out again gives the same text (compact JSON, as the Go, Java and
    JavaScript SDKs send): one search for the key and one comparison, and the encoding is
    kept for the writer. Otherwise json's scanner reads the value again from where it
    starts, and its text is kept if it is the same value. Where the text cannot be found
    for sure (an escaped key) the event stays as decoded and its data is written out again."""
    position = 0
    text: str | None = None
    ascii_body = body.isascii()
    for document, event in zip(documents, events):
        if type(document) is not dict or "data" not in document:
            continue
        match = _DATA_KEY.search(body, position)
        if match is None:
            return
        start = match.end()
        data = document["data"]
        content_type = event._attributes.get("datacontenttype")
        if data is None:  # "data": null is no data
            if not body.startswith(b"null", start):
                return
            position = start + 4
            continue
        json_data = _json_kind(content_type)
        # a writer that puts a space after the key's colon puts spaces inside too: the
        # compact text written out again cannot be the same, so it is not made
        compact = body[start - 1] not in _JSON_SPACE
        encoded = _encode_data_fast(data, content_type) if json_data and compact else None
        if encoded is not None and body.startswith(encoded[0], start):  # written out again: the same text
            raw = encoded[0]
            position = start + len(raw)
        else:
            if text is None:
                text = body.decode("utf-8")  # valid: the document parsed
            offset = start if ascii_body else len(body[:start].decode("utf-8"))
            try:
                value, end = _json_scan(text, offset)
            except (StopIteration, ValueError, RecursionError):
                return
            if type(value) is not type(data) or value != data:  # not this event's data after all
                return
            raw = text[offset:end].encode("utf-8")
            position = start + len(raw)
        if json_data:
            _keep_json_text(event, raw)


def _fast_attributes(event: Any) -> dict[str, Any] | None:
    """The attributes of a specversion 1.0 event; None for anything else (fast paths)."""
    attributes = event.get_attributes()
    if type(attributes) is dict and attributes.get("specversion") == _SPECVERSION:
        return attributes
    return None


def _embedded_payload(data: bytes, content_type: Any) -> tuple[str, Any] | None:
    """How a structured document carries ``bytes`` data other than as ``data_base64``
    (None: as ``data_base64``): ``("json", text)`` for a JSON content type whose payload is
    valid JSON (``text``: the payload itself, UTF-8, embedded as is: never parsed and
    written again, so ``1.10`` stays ``1.10``); ``("text", str)`` for ``text/*`` that
    decodes in its charset (written as a JSON string, as the JSON format does with text and
    as Knative's Go SDK does with a binary-mode text payload)."""
    if type(content_type) is not str or not data:
        return None
    kind, charset = _media(content_type)
    if kind in _JSON_KINDS:
        if charset == "utf-8":
            if not _long_digits(data):
                try:
                    _orjson_loads(data)
                    return "json", data
                except ValueError:
                    pass  # json below decides
        try:
            text = data.decode(charset)
            _loads(text, "payload", "")
            return "json", data if charset == "utf-8" else text.encode("utf-8")
        except (CodecError, LookupError, UnicodeError):
            return None
    if kind == _TEXT:
        try:
            return "text", data.decode(charset)
        except (LookupError, UnicodeError):
            return None
    return None


def _spliced(document: bytes, payload: bytes) -> bytes:
    """A structured document (a JSON object, without data) with ``"data": payload`` added
    last; ``payload`` is JSON text already."""
    return b"%s,\"data\":%s}" % (document[:-1], payload) if len(document) > 2 else b'{"data":%s}' % payload


def _encode_structured_fast(event: CloudEvent) -> bytes | None:
    """encode_structured for the common case (module docstring); None: use the general path."""
    attributes = _fast_attributes(event)
    if attributes is None:
        return None
    out: dict[str, Any] = {}
    for name, value in attributes.items():
        kind = type(value)
        if kind is str or kind is bool:
            out[name] = value
        elif value is None:
            continue
        elif kind is Timestamp or kind is datetime:
            out[name] = _utc_text(value) or _format_time(value, f"attribute {name!r}")
        elif kind is int and _INT32_MIN <= value <= _INT32_MAX:
            out[name] = value
        else:
            return None
    data = event.get_data()
    payload = None
    if data is not None:
        if type(data) is bytes:
            embedded = _embedded_payload(data, attributes.get("datacontenttype"))
            if embedded is None:
                out["data_base64"] = base64.b64encode(data).decode("ascii")
            elif embedded[0] == "json":
                payload = embedded[1]
            else:
                out["data"] = embedded[1]
        elif isinstance(data, (bytearray, memoryview)):
            return None
        else:
            content_type = attributes.get("datacontenttype")
            if content_type is not None and type(data) is not str and _media(content_type)[0] not in _JSON_KINDS:
                return None
            out["data"] = data
    if _c_encode is None:
        return None
    try:
        text = "".join(_c_encode(out, 0))
    except (TypeError, ValueError, RecursionError):
        return None
    if payload is not None:
        return _spliced(text.encode("utf-8"), payload)
    return text.encode("utf-8")


def encode_structured(event: CloudEvent) -> bytes:
    """Event -> ``application/cloudevents+json`` document (compact, UTF-8)."""
    try:
        body = _encode_structured_fast(event)
    except Exception:  # the general path below raises the right error
        body = None
    if body is not None:
        return body
    document = event_to_dict(event)
    payload = None
    if "data_base64" in document:  # bytes data: embedded as JSON text or a string when it can be
        data = event.get_data()
        embedded = _embedded_payload(bytes(data), event.get_attributes().get("datacontenttype"))
        if embedded is not None:
            del document["data_base64"]
            if embedded[0] == "json":
                payload = embedded[1]
            else:
                document["data"] = embedded[1]
    try:
        text = _dumps(document, "event").encode("utf-8")
        return text if payload is None else _spliced(text, payload)
    except UnicodeEncodeError as exc:
        raise CodecError(f"event contains text that is not valid Unicode: {exc.reason} at index {exc.start}") from None


def _parse_document(body: bytes | str, what: str) -> Any:
    if isinstance(body, str):
        text = body
    else:
        try:
            text = _as_bytes(body, what).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CodecError(f"{what} is not valid UTF-8: {exc.reason} at byte {exc.start}") from None
    return _loads(text, what, "")


def _decode_batch(body: bytes | str, keep: int = _PARSE) -> list[CloudEvent]:
    document = _parse_document(body, "batch")
    if not isinstance(document, list):
        raise CodecError(f"a batch must be a JSON array, got {_json_type(document)}")
    events = []
    for index, item in enumerate(document):
        try:
            events.append(event_from_dict(item))
        except CodecError as exc:
            raise exc.within(f"batch event [{index}]") from None
    if keep == _KEEP_TEXTS and type(body) is bytes:
        _keep_data_texts(body, document, events)
    return events


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


# ---------------------------------------------------------------------------------------
# binary mode, shared by HTTP and Kafka
# ---------------------------------------------------------------------------------------


def _binary_event(
    raw: list[tuple[str, str, str]], content_type: str | None, body: bytes, missing: str, keep: int = _PARSE
) -> CloudEvent:
    """raw: (attribute name, decoded value, header name); specversion already checked."""
    attributes: dict[str, Any] = {}
    for name, value, header in raw:
        if name in attributes:
            raise CodecError(f"duplicate header for attribute {name!r}", f"header {header!r}")
        if name in _CORE_STRINGS:
            if not value:
                raise CodecError(f"attribute {name!r} must not be empty", f"header {header!r}")
            if name == "datacontenttype":
                if content_type is not None:
                    continue  # the content-type header is the binding's place for it
                content_type = value
        elif name == "time":
            attributes[name] = _parse_time(value, f"header {header!r}")
            continue
        elif name != "specversion":
            _check_extension_name(name, f"header {header!r}")
        attributes[name] = value
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    _check_required(attributes, missing)
    return _new_event(attributes, _decode_data(body, content_type, "data", keep))


# ---------------------------------------------------------------------------------------
# HTTP binding
# ---------------------------------------------------------------------------------------

_needs_percent = re.compile(r'[^\x21\x23\x24\x26-\x7e]').search
# Everything printable in ASCII except space, '"' and '%' (quote() keeps A-Za-z0-9_.-~).
_PERCENT_SAFE = "!#$&'()*+,/:;<=>?@[\\]^`{|}"
# The characters _needs_percent accepts, as bytes.
_PERCENT_SAFE_BYTES = bytes(c for c in range(0x21, 0x7F) if c not in b'"%')


def _percent_encode(value: str, name: str) -> str:
    if not _needs_percent(value):
        return value
    try:
        return quote(value, safe=_PERCENT_SAFE, encoding="utf-8", errors="strict")
    except UnicodeEncodeError:
        raise CodecError("value is not valid Unicode (lone surrogate)", f"attribute {name!r}") from None


def _header_value(value: str, header: str) -> str:
    """HTTP header value -> attribute string: unquote double-quoted parts, percent-decode."""
    value = value.strip(" \t")
    if '"' in value:
        value = _unquote_double_quotes(value, header)
    if "%" in value:
        try:
            return unquote_to_bytes(value).decode("utf-8")
        except UnicodeError:  # invalid UTF-8 after decoding, or lone surrogates in the header
            raise CodecError(
                f"percent-encoded value {value!r} is not valid UTF-8", f"header {header!r}"
            ) from None
    return value


def _unquote_double_quotes(value: str, header: str) -> str:
    out = []
    quoted = False
    chars = iter(value)
    for char in chars:
        if quoted:
            if char == "\\":
                char = next(chars, None)
                if char is None:
                    break
            elif char == '"':
                quoted = False
                continue
        elif char == '"':
            quoted = True
            continue
        out.append(char)
    if quoted:
        raise CodecError(f"unterminated quoted string in {value!r}", f"header {header!r}")
    return "".join(out)


def is_http_cloudevent(headers: Mapping[str, str], *, lower_case_names: bool = False) -> bool:
    """Cheap check: a ``ce-specversion`` header or a CloudEvents content type.

    ``lower_case_names``: the caller guarantees lower-case header names (a ``Sender``'s
    ``Response`` does), so two lookups replace the scan of every header."""
    if lower_case_names:
        if "ce-specversion" in headers:
            return True
        content_type = headers.get("content-type")
        return content_type is not None and _is_ce_content_type(content_type)
    try:
        for key, value in headers.items():
            lower = key.lower()
            if lower == "ce-specversion":
                return True
            if lower == "content-type" and _is_ce_content_type(value):
                return True
    except (AttributeError, TypeError):
        return False
    return False


def _is_ce_content_type(value: str) -> bool:
    return value.lstrip().lower().startswith("application/cloudevents")


# The fast decoders check each attribute as _binary_event does (_fast_attribute): duplicate;
# core string empty; time; specversion other than 1.0; extension name.


def _fast_attribute(attributes: dict[str, Any], name: str, text: str) -> bool:
    """Adds one binary-mode attribute header, as the general path would, for the fast decoders
    of both transports; False: the general path must decide (a repeat, an empty or invalid
    value, an unknown name), and says why."""
    if name in attributes:
        return False
    if name in _CORE_STRINGS:
        if not text:
            return False
    elif name == "time":
        text = _parse_time(text, "")
    elif name == "specversion":
        if text != _SPECVERSION:
            return False
    elif name not in _known_extensions:
        if name == "data" or not _valid_name(name):
            return False
        _learn_extension(name)
    attributes[name] = text
    return True


def _fast_binary_event(
    attributes: dict[str, Any], content_type: str | None, body: bytes, keep: int = _PARSE
) -> CloudEvent | None:
    """_binary_event's ending for attributes collected by a fast decoder; None: give up."""
    if "specversion" not in attributes or "id" not in attributes or "source" not in attributes \
            or "type" not in attributes:
        return None
    if content_type is not None:  # the content-type header wins, and comes last
        attributes.pop("datacontenttype", None)
        attributes["datacontenttype"] = content_type
    else:
        content_type = attributes.get("datacontenttype")
    data: Any = None
    if body:
        if content_type is None or keep:
            data = body
        else:
            kind, charset = _media(content_type)
            if kind == _JSON and charset == "utf-8":  # _decode_data's most common case, inline
                text = body.decode("utf-8")
                data, end = _json_scan(text, 0)
                if end != len(text):
                    return None
            else:
                data = _decode_data(body, content_type, "data")
    event = CloudEvent.__new__(CloudEvent)  # as _new_event
    event._attributes = attributes
    event._data = data
    return event


# "ce-id" -> "id" ...: header names as received, lower-cased and without the prefix.
_http_attribute_names: dict[str, str] = {}


def _decode_http_fast(headers: Mapping[str, str], body: bytes, keep: int = _PARSE) -> list[CloudEvent] | None:
    """decode_http for the common case (module docstring); None: use the general path."""
    if type(body) is not bytes:
        return None
    attributes: dict[str, Any] = {}
    content_type = None
    content_type_seen = False
    names = _http_attribute_names
    for key, value in headers.items():
        if type(value) is not str:
            return None
        if not isinstance(key, str):
            return None
        name = names.get(key)
        if name is None:
            lower = key.lower()
            if lower.startswith("ce-"):
                name = lower[3:]
                if len(names) >= _CACHE_MAX:
                    names.clear()
                names[key] = name
            else:
                if lower == "content-type":
                    if content_type_seen:
                        return None
                    content_type_seen = True
                    content_type = value.strip() or None
                continue
        text = value.strip(" \t")
        if '"' in text or "%" in text:
            text = _header_value(value, key)
        if not _fast_attribute(attributes, name, text):
            return None
    if content_type is not None:
        kind = _media(content_type)[0]
        if kind == _CE_JSON:
            return [_decode_structured(body, keep)]
        if kind == _CE_BATCH:
            return _decode_batch(body, keep)
        if kind == _CE_OTHER:
            return None
    event = _fast_binary_event(attributes, content_type, body, keep)
    return None if event is None else [event]


def decode_http(headers: Mapping[str, str], body: bytes, *, keep_payload: bool = False) -> list[CloudEvent]:
    """An HTTP message (binary, structured or batched) -> its events.

    ``keep_payload``: a binary-mode event's data is its payload as received (``bytes``, not
    checked: Knative's brokers accept ``hello`` under ``application/json`` too, and SDKs
    send such payloads), so writing the event again (binary mode) sends the very same
    bytes; a structured event's JSON data is kept as its text. The ingress and the
    replies use it: a parsed and re-serialized JSON payload may differ (``1.10`` is
    written ``1.1``)."""
    try:
        events = _decode_http_fast(headers, body, _KEEP_TEXTS if keep_payload else _PARSE)
    except Exception:  # the general path below raises the right error
        events = None
    if events is not None:
        return events
    return _decode_http(headers, body, _KEEP_TEXTS if keep_payload else _PARSE)


def _decode_http(headers: Mapping[str, str], body: bytes, keep: int = _PARSE) -> list[CloudEvent]:
    content_type: str | None = None
    specversion: str | None = None
    raw: list[tuple[str, str]] = []
    try:
        items = headers.items()
    except AttributeError:
        raise CodecError(f"headers must be a mapping, got {type(headers).__name__}") from None
    for key, value in items:
        if not isinstance(key, str) or not isinstance(value, str):  # aiohttp gives istr keys
            raise CodecError(
                f"header names and values must be strings, got {type(key).__name__}: {type(value).__name__}",
                f"header {key!r}",
            )
        lower = key.lower()
        if lower.startswith("ce-"):
            raw.append((key, value))
            if lower == "ce-specversion":
                specversion = value
        elif lower == "content-type":
            if content_type is not None:
                raise CodecError("duplicate header", f"header {key!r}")
            content_type = value.strip() or None
    payload = _as_bytes(body, "HTTP body")
    if content_type is not None:
        kind = _media(content_type)[0]
        if kind == _CE_JSON:
            return [_decode_structured(payload, keep)]
        if kind == _CE_BATCH:
            return _decode_batch(payload, keep)
        if kind == _CE_OTHER:
            raise CodecError(f"unsupported event format {content_type!r} (only JSON is supported)", "header 'content-type'")
    if specversion is None:
        raise CodecError(
            "not a CloudEvent: no ce-specversion header and "
            + (f"content type {content_type!r} is not a CloudEvents format" if content_type else "no content type")
        )
    _check_specversion(_header_value(specversion, "ce-specversion"), "header 'ce-specversion'")
    decoded = [(key[3:].lower(), _header_value(value, key), key) for key, value in raw]
    return [_binary_event(decoded, content_type, payload, " (no 'ce-{}' header)", keep)]


# attribute name -> its header name (prefix + name), made on first use by _header_name.
_http_header_names: dict[str, str] = {}
_kafka_header_names: dict[str, str] = {}


def _header_name(names: dict[str, str], prefix: str, name: str) -> str:
    if len(names) >= _CACHE_MAX:
        names.clear()
    header = names[name] = prefix + name
    return header


def _fast_headers(attributes: Any, names: dict[str, str], prefix: str) -> dict[str, str] | None:
    """header name (``prefix`` + attribute name, cached in ``names``) -> canonical text of
    every set attribute but ``datacontenttype`` (which travels as the content type), shared
    by both binary-mode fast paths; None: not the common case (not a plain dict of a 1.0
    event, or a value needing the general path's checks), use the general path."""
    if type(attributes) is not dict or attributes.get("specversion") != _SPECVERSION:
        return None
    out: dict[str, str] = {}
    for name, value in attributes.items():
        kind = type(value)
        if kind is str:
            if name == "datacontenttype":
                continue
        elif value is None:
            continue
        elif name == "datacontenttype":
            return None
        elif kind is Timestamp or kind is datetime:
            value = _utc_text(value) or _format_time(value, f"attribute {name!r}")
        elif kind is int:
            if not _INT32_MIN <= value <= _INT32_MAX:
                return None
            value = str(value)
        elif kind is bool:
            value = "true" if value else "false"
        else:
            return None
        try:
            out[names[name]] = value
        except KeyError:
            out[_header_name(names, prefix, name)] = value
    return out


def _encode_http_binary_fast(event: CloudEvent) -> tuple[dict[str, str], bytes] | None:
    """encode_http binary for the common case (module docstring); None: use the general path."""
    attributes = event.get_attributes()
    headers = _fast_headers(attributes, _http_header_names, "ce-")
    if headers is None:
        return None
    # One check for all values, usually nothing to encode: only safe ASCII is left after
    # deleting the safe bytes (a non-ASCII character fails the ascii encoding).
    try:
        clean = not "".join(headers.values()).encode("ascii").translate(None, _PERCENT_SAFE_BYTES)
    except UnicodeEncodeError:
        clean = False
    if not clean:
        for header, value in headers.items():
            if _needs_percent(value):
                headers[header] = quote(value, safe=_PERCENT_SAFE, encoding="utf-8", errors="strict")
    encoded = _encode_data_fast(event.get_data(), attributes.get("datacontenttype"))
    if encoded is None:
        return None
    body, content_type = encoded
    if content_type is not None:
        if type(content_type) is not str or not (content_type.isascii() and content_type.isprintable()):
            return None
        headers["Content-Type"] = content_type
    return headers, body or b""


def encode_http(event: CloudEvent, mode: str = "binary") -> tuple[dict[str, str], bytes]:
    """Event -> (HTTP headers, body) in ``binary`` or ``structured`` content mode."""
    if mode == "binary":
        try:
            result = _encode_http_binary_fast(event)
        except Exception:  # the general path below raises the right error
            result = None
        if result is not None:
            return result
    return _encode_http(event, mode)


def _encode_http(event: CloudEvent, mode: str) -> tuple[dict[str, str], bytes]:
    if mode == "structured":
        return {"Content-Type": CE_JSON_CONTENT_TYPE}, encode_structured(event)
    if mode != "binary":
        raise CodecError(f"unknown content mode {mode!r} (expected 'binary' or 'structured')")
    attributes = _attributes_of(event)
    headers: dict[str, str] = {}
    for name, value in attributes.items():
        if value is not None and name != "datacontenttype":
            headers["ce-" + name] = _percent_encode(_canonical(name, value), name)
    body, content_type = _encode_data(event.get_data(), attributes.get("datacontenttype"))
    if content_type is not None:
        if not (content_type.isascii() and content_type.isprintable()):
            raise CodecError(
                f"datacontenttype {content_type!r} cannot be an HTTP header (non-ASCII or control characters)"
            )
        headers["Content-Type"] = content_type
    return headers, body or b""


# ---------------------------------------------------------------------------------------
# Kafka binding
# ---------------------------------------------------------------------------------------


def _kafka_text(value: Any, key: str) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CodecError(f"value is not valid UTF-8: {exc.reason} at byte {exc.start}", f"header {key!r}") from None
    if isinstance(value, str):
        return value
    raise CodecError(f"value must be bytes, got {type(value).__name__}", f"header {key!r}")


# "ce_id" -> "id" ...
_kafka_attribute_names: dict[str, str] = {}


def _decode_kafka_fast(headers: Any, value: Any, keep: int = _PARSE) -> CloudEvent | None:
    """decode_kafka for the common case (module docstring); None: use the general path."""
    kind = type(headers)
    if kind is list or kind is tuple:
        items = headers
    elif kind is dict:
        items = headers.items()
    else:
        return None
    attributes: dict[str, Any] = {}
    content_type = None
    content_type_seen = False
    names = _kafka_attribute_names
    for key, header_value in items:
        if type(key) is not str:
            return None
        name = names.get(key)
        if name is None and key.startswith("ce_"):
            name = key[3:]
            if len(names) >= _CACHE_MAX:
                names.clear()
            names[key] = name
        if name is not None:
            if type(header_value) is not bytes:
                return None
            if not _fast_attribute(attributes, name, header_value.decode("utf-8")):
                return None
        elif key == "content-type" or (len(key) == 12 and key.lower() == "content-type"):
            if content_type_seen or type(header_value) is not bytes:
                return None
            content_type_seen = True
            content_type = header_value.decode("utf-8").strip() or None
    if type(value) is not bytes:
        if value is not None:
            return None
        value = b""
    if content_type is not None:
        media = _media(content_type)[0]
        if media == _CE_JSON:
            return decode_structured(value) if value else None  # no value: the general path says so
        if media == _CE_BATCH or media == _CE_OTHER:
            return None
    return _fast_binary_event(attributes, content_type, value, keep)


def decode_kafka(
    headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes], value: bytes | None, *, keep_payload: bool = False
) -> CloudEvent:
    """A Kafka record (headers, value) in binary or structured mode -> event.

    ``keep_payload``: a binary-mode event's data is the record's value as is (``bytes``,
    not checked, not parsed), so delivering the event (binary mode) sends the very same
    bytes, and a record costs no JSON parse. The job's intake uses it: the broker passes a
    payload on as Knative's does, whatever it holds (the ingress does not check it either). Filters see
    the parsed payload all the same, parsed when one reads it (``payload_value``)."""
    keep = _KEEP if keep_payload else _PARSE
    try:
        event = _decode_kafka_fast(headers, value, keep)
    except Exception:  # the general path below raises the right error
        event = None
    if event is not None:
        return event
    return _decode_kafka(headers, value, keep)


def _decode_kafka(headers: Any, value: Any, keep: int = _PARSE) -> CloudEvent:
    content_type: str | None = None
    raw: list[tuple[str, Any]] = []
    specversion: Any = None
    try:
        items = headers.items() if isinstance(headers, Mapping) else (headers or ())
        for key, header_value in items:
            if not isinstance(key, str):
                raise CodecError(f"header names must be strings, got {type(key).__name__}", f"header {key!r}")
            if key.startswith("ce_"):
                raw.append((key, header_value))
                if key == "ce_specversion":
                    specversion = header_value
            elif key == "content-type" or (len(key) == 12 and key.lower() == "content-type"):
                if content_type is not None:
                    raise CodecError("duplicate header", f"header {key!r}")
                content_type = _kafka_text(header_value, key).strip() or None
    except CodecError:
        raise
    except (TypeError, ValueError):
        raise CodecError("headers must be (name, value) pairs or a mapping of names to values") from None
    if content_type is not None:
        kind = _media(content_type)[0]
        if kind == _CE_JSON:
            if value is None:
                raise CodecError("structured record has no value")
            return decode_structured(_as_bytes(value, "record value"))
        if kind == _CE_BATCH or kind == _CE_OTHER:
            raise CodecError(
                f"unsupported event format {content_type!r} (only application/cloudevents+json)",
                "header 'content-type'",
            )
    if specversion is None:
        raise CodecError(
            "not a CloudEvent: no ce_specversion header and "
            + (f"content-type {content_type!r} is not application/cloudevents+json" if content_type else "no content-type header")
        )
    _check_specversion(_kafka_text(specversion, "ce_specversion"), "header 'ce_specversion'")
    try:  # fast path: bytes values; _kafka_text gives the error message otherwise
        decoded = [(key[3:], header_value.decode("utf-8"), key) for key, header_value in raw]
    except (AttributeError, UnicodeDecodeError):
        decoded = [(key[3:], _kafka_text(header_value, key), key) for key, header_value in raw]
    body = b"" if value is None else _as_bytes(value, "record value")
    return _binary_event(decoded, content_type, body, " (no 'ce_{}' header)", keep)


def _encode_kafka_binary_fast(event: CloudEvent) -> tuple[bytes | None, list[tuple[str, bytes]], bytes | None] | None:
    """encode_kafka binary for the common case (module docstring); None: use the general path."""
    attributes = event.get_attributes()
    texts = _fast_headers(attributes, _kafka_header_names, "ce_")
    if texts is None:
        return None
    headers = [(header, text.encode("utf-8")) for header, text in texts.items()]
    partition_key = attributes.get("partitionkey")
    if partition_key is None:
        key = None
    elif type(partition_key) is str:
        key = partition_key.encode("utf-8")
    else:
        key = _canonical("partitionkey", partition_key).encode("utf-8")
    encoded = _encode_data_fast(event.get_data(), attributes.get("datacontenttype"))
    if encoded is None:
        return None
    value, content_type = encoded
    if content_type is not None:
        headers.append(("content-type", content_type.encode("utf-8")))
    return key, headers, value


def encode_kafka(
    event: CloudEvent, mode: str = "binary"
) -> tuple[bytes | None, list[tuple[str, bytes]], bytes | None]:
    """Event -> (key, headers, value). The key is the ``partitionkey`` extension, if any."""
    if mode == "binary":
        try:
            result = _encode_kafka_binary_fast(event)
        except Exception:  # the general path below raises the right error
            result = None
        if result is not None:
            return result
    return _encode_kafka(event, mode)


def _encode_kafka(
    event: CloudEvent, mode: str
) -> tuple[bytes | None, list[tuple[str, bytes]], bytes | None]:
    attributes = _attributes_of(event)
    partition_key = attributes.get("partitionkey")
    try:
        key = None if partition_key is None else _canonical("partitionkey", partition_key).encode("utf-8")
        if mode == "structured":
            return key, [("content-type", _CE_JSON_CONTENT_TYPE_BYTES)], encode_structured(event)
        if mode != "binary":
            raise CodecError(f"unknown content mode {mode!r} (expected 'binary' or 'structured')")
        headers = [
            ("ce_" + name, _canonical(name, value).encode("utf-8"))
            for name, value in attributes.items()
            if value is not None and name != "datacontenttype"
        ]
    except UnicodeEncodeError as exc:
        raise CodecError(f"attribute value is not valid Unicode: {exc.reason} at index {exc.start}") from None
    value, content_type = _encode_data(event.get_data(), attributes.get("datacontenttype"))
    if content_type is not None:
        try:
            headers.append(("content-type", content_type.encode("utf-8")))
        except UnicodeEncodeError:
            raise CodecError(f"datacontenttype {content_type!r} is not valid Unicode") from None
    return key, headers, value
