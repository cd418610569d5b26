"""Event sources as pure functions: Kafka records, RocketMQ messages and cron ticks -> CloudEvents.

Engine-neutral and side-effect free: an engine (the Flink job's intake, the RocketMQ bridge)
reads its records, calls these, and writes the events where the broker path reads them.
Events are built with the codec's public functions (``decode_kafka``, ``event_from_dict``,
``event_to_dict``), so they are valid CloudEvents the rest of knflow already handles.

KafkaSource (checked against knative-extensions/eventing-kafka-broker, data plane,
``data-plane/dispatcher/src/main/java/dev/knative/eventing/kafka/broker/dispatcher/impl/consumer/``):

- ``CloudEventDeserializer.java``: a record that decodes as a CloudEvent in the Kafka
  binding (structured: ``content-type: application/cloudevents+json``; binary:
  ``ce_specversion`` and the other ``ce_`` headers) is that event, unchanged. Anything else,
  including a record that claims to be a CloudEvent but does not decode, is "invalid" and
  gets wrapped.
- ``InvalidCloudEventInterceptor.java`` wraps it: id ``partition:<p>/offset:<o>``, time the
  record timestamp (UTC, millisecond), type ``dev.knative.kafka.event``, source
  ``/apis/v1/namespaces/<ns>/kafkasources/<name>#<topic>``, subject ``partition:<p>#<o>``;
  the key (if any, decoded per the key type) as both ``partitionkey`` and ``key``; every
  header but ``content-type`` as ``kafkaheader<name>`` where ``<name>`` is the header name
  lower-cased with every character outside ``a-z0-9`` removed, its value decoded as UTF-8
  (a later header of the same name wins); a ``content-type`` header becomes
  ``datacontenttype``, lower-cased; the value, as it is, the data.
- ``KeyDeserializer.java`` (key types from the label, mapped in
  ``control-plane/pkg/core/config/egress.go`` ``KeyTypeFromString``): an absent or empty key
  is none; ``string`` (and any unknown type) is UTF-8 text; ``int`` is a 4-byte big-endian
  integer, any other length falls back to text; ``float`` is a 4-byte float or an 8-byte
  double, other lengths fall back to text; ``byte-array`` is the bytes (a CloudEvents Binary
  value, base64 in every binding). Knative keeps a float as a Java number; a CloudEvents
  attribute has no float type, so knflow writes the text Java's ``Float/Double.toString``
  gives (``1.5``, ``1.0E10``), which is what Knative's binary-mode headers carry.
- ``CloudEventOverridesMutator.java``: then every event, wrapped or passed through, gets
  ``knativekafkapartition`` and ``knativekafkaoffset``, and ``ceOverrides.extensions``
  last (they replace extensions of the same name).

RocketMQSource: a message in the CloudEvents RocketMQ binding (cloudevents/sdk-java
``rocketmq``: ``CE_<attribute>`` properties, ``CE_contenttype`` the content type, a one-byte
NUL body for no data) passes through; any other message is wrapped: type
``dev.knative.rocketmq.event``, source
``/apis/v1/namespaces/<ns>/rocketmqsources/<name>#<topic>``, id the message id, time its
born timestamp, ``rocketmqtag`` (the tag), ``rocketmqkeys`` (its keys, sorted, joined by a
space) and one ``rocketmqproperty<name>`` per user property (names sanitised as Kafka header
names are), and the body as data.

PingSource (``knative.dev/eventing`` ``pkg/adapter/mtping/runner.go`` and
``pkg/apis/sources/v1/ping_validation.go``): schedules are robfig/cron "standard" specs,
five fields or a descriptor (``@yearly``/``@annually``, ``@monthly``, ``@weekly``,
``@daily``/``@midnight``, ``@hourly``), in ``timezone`` (``CRON_TZ=``) or UTC. Knative's
webhook refuses ``@every``; knflow accepts ``@every <Go duration>`` (whole seconds, at least
one) as an extension, with ticks at whole multiples of the interval since the Unix epoch,
so a restart lands on the same ticks (robfig counts from when the schedule was added).
Parsing and tick times are croniter's (a tick that falls in a spring-forward gap fires
once, when the gap ends); the checks here only keep out what robfig would refuse (``L``,
``W``, ``#``, ``H``, a sixth field, day of week 7).

Missed ticks: Knative's adapter runs the schedules in a robfig ``cron.Cron``, which after a
start schedules each entry's next tick from *now*; ticks that fell while the adapter was
down are never sent. ``due_ticks`` keeps that rule (``catch_up=False``) with an explicit
cursor, so "exactly one event per tick" can be built on it: the engine keeps the cursor in
its checkpointed state, emits the ticks ``due_ticks`` returns and stores the cursor it
returns in the same checkpoint. The event id is derived from the source and the tick time
(a UUID 5), so a tick that an at-least-once sink writes twice is recognisably the same event.
"""
from __future__ import annotations

import base64
import math
import re
import struct
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloudevents.core.v1.event import CloudEvent

from filters.errors import KnflowError
from transforms.codec import CodecError, decode_kafka, event_from_dict, event_to_dict

KAFKA_EVENT_TYPE = "dev.knative.kafka.event"
ROCKETMQ_EVENT_TYPE = "dev.knative.rocketmq.event"
PING_EVENT_TYPE = "dev.knative.sources.ping"
KEY_TYPES = ("string", "int", "float", "byte-array")
_INT32 = (-(2**31), 2**31 - 1)
_UTC = timezone.utc


def _rfc3339_millis(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000.0, tz=_UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def _wrapper(event_id: str, epoch_ms: int, event_type: str, source: str) -> dict[str, Any]:
    """The context attributes of an event that wraps a non-CloudEvent record."""
    return {"specversion": "1.0", "id": event_id, "time": _rfc3339_millis(epoch_ms), "type": event_type,
            "source": source}


def sanitize_name(name: str) -> str:
    """A header or property name as Knative turns it into an extension name suffix: lower
    case, every character outside ``a-z0-9`` dropped (``InvalidCloudEventInterceptor.replaceBadChars``)."""
    return "".join(c for c in name.lower() if ("a" <= c <= "z") or ("0" <= c <= "9"))


def _with_extensions(event: CloudEvent, extensions: Mapping[str, Any]) -> CloudEvent:
    if not extensions:
        return event
    doc = event_to_dict(event)
    doc.update(extensions)
    return event_from_dict(doc)


# ---------------------------------------------------------------------------------------
# KafkaSource
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KafkaSourceRecord:
    """One consumed Kafka record, as a KafkaSource sees it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes | None]] = ()
    value: bytes | None = None


def java_float_text(value: float, *, single: bool = False) -> str:
    """``Float.toString`` / ``Double.toString`` of Java: the shortest digits that read back
    as the same float (single precision when ``single``), written plainly for 1e-3 <= |v| <
    1e7 and as ``d.dddE<n>`` otherwise; always a fraction digit (``1.0``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    if single:
        for precision in range(1, 10):
            text = f"{value:.{precision}e}"
            if struct.unpack(">f", struct.pack(">f", float(text)))[0] == value:
                break
    else:
        text = f"{value:.16e}"
        for precision in range(1, 18):
            text = f"{value:.{precision}e}"
            if float(text) == value:
                break
    mantissa, exponent_text = text.split("e")
    sign = "-" if mantissa.startswith("-") else ""
    digits = mantissa.lstrip("-").replace(".", "").rstrip("0") or "0"
    exponent = int(exponent_text)
    if -3 <= exponent < 7:
        if exponent >= 0:
            whole = digits[: exponent + 1].ljust(exponent + 1, "0")
            fraction = digits[exponent + 1:] or "0"
        else:
            whole, fraction = "0", "0" * (-exponent - 1) + digits
        return f"{sign}{whole}.{fraction}"
    return f"{sign}{digits[0]}.{digits[1:] or '0'}E{exponent}"


def decode_key(key: bytes | None, key_type: str = "string") -> str | int | None:
    """A record key as Knative's ``KeyDeserializer`` reads it, as an attribute value:
    None (no key), text, a 32-bit int, the Java text of a float, or base64 of the bytes."""
    if not key:
        return None
    if key_type == "int" and len(key) == 4:
        return struct.unpack(">i", key)[0]
    if key_type == "float" and len(key) in (4, 8):
        single = len(key) == 4
        return java_float_text(struct.unpack(">f" if single else ">d", key)[0], single=single)
    if key_type == "byte-array":
        return base64.b64encode(key).decode("ascii")
    return key.decode("utf-8", errors="replace")


def kafka_record_to_event(record: KafkaSourceRecord, *, namespace: str, name: str, key_type: str = "string",
                          ce_overrides: Mapping[str, str] | None = None) -> CloudEvent:
    """The CloudEvent a KafkaSource ``namespace/name`` emits for ``record`` (module docstring)."""
    headers = [(k, v if v is not None else b"") for k, v in record.headers]
    try:
        event = decode_kafka(headers, record.value)
    except CodecError:
        event = _wrap_kafka(record, headers, namespace, name, key_type)
    extensions: dict[str, Any] = {
        "knativekafkapartition": record.partition,
        "knativekafkaoffset": record.offset if _INT32[0] <= record.offset <= _INT32[1] else str(record.offset),
    }
    extensions.update(ce_overrides or {})
    return _with_extensions(event, extensions)


def _wrap_kafka(record: KafkaSourceRecord, headers: list[tuple[str, bytes]], namespace: str, name: str,
                key_type: str) -> CloudEvent:
    doc = _wrapper(f"partition:{record.partition}/offset:{record.offset}", record.timestamp_ms, KAFKA_EVENT_TYPE,
                   f"/apis/v1/namespaces/{namespace}/kafkasources/{name}#{record.topic}")
    doc["subject"] = f"partition:{record.partition}#{record.offset}"
    key = decode_key(record.key, key_type)
    if key is not None:
        doc["partitionkey"] = key
        doc["key"] = key
    content_type = None
    for header, value in headers:
        if header.lower() == "content-type":
            content_type = value.decode("utf-8", errors="replace").lower()
            continue
        doc["kafkaheader" + sanitize_name(header)] = value.decode("utf-8", errors="replace")
    if content_type:
        doc["datacontenttype"] = content_type
    if record.value is not None:
        doc["data_base64"] = base64.b64encode(record.value).decode("ascii")
    return event_from_dict(doc)


# ---------------------------------------------------------------------------------------
# RocketMQSource
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RocketMQSourceMessage:
    """One received RocketMQ message, as a RocketMQSource sees it."""

    topic: str
    message_id: str
    body: bytes
    born_timestamp_ms: int
    tag: str | None = None
    keys: Sequence[str] = ()
    properties: Mapping[str, str] = field(default_factory=dict)


_CE_PROPERTY_PREFIX = "CE_"
_CE_CONTENT_TYPE_PROPERTY = "CE_contenttype"


def _rocketmq_as_kafka(message: RocketMQSourceMessage) -> tuple[list[tuple[str, bytes]], bytes | None]:
    """The CloudEvents RocketMQ binding read through the Kafka binding's decoder."""
    headers = []
    for key, value in message.properties.items():
        if key == _CE_CONTENT_TYPE_PROPERTY:
            headers.append(("content-type", value.encode("utf-8")))
        elif key.startswith(_CE_PROPERTY_PREFIX):
            headers.append(("ce_" + key[len(_CE_PROPERTY_PREFIX):], value.encode("utf-8")))
    body: bytes | None = message.body
    if body == b"\0":  # the binding's stand-in for "no data" (RocketMQ refuses empty bodies)
        body = None
    return headers, body


def rocketmq_message_to_event(message: RocketMQSourceMessage, *, namespace: str, name: str,
                              ce_overrides: Mapping[str, str] | None = None) -> CloudEvent:
    """The CloudEvent a RocketMQSource ``namespace/name`` emits for ``message`` (module docstring)."""
    headers, body = _rocketmq_as_kafka(message)
    event = None
    if headers:
        try:
            event = decode_kafka(headers, body)
        except CodecError:
            event = None
    if event is None:
        doc = _wrapper(message.message_id, message.born_timestamp_ms, ROCKETMQ_EVENT_TYPE,
                       f"/apis/v1/namespaces/{namespace}/rocketmqsources/{name}#{message.topic}")
        if message.tag:
            doc["rocketmqtag"] = message.tag
        if message.keys:
            doc["rocketmqkeys"] = " ".join(sorted(message.keys))
        for key, value in sorted(message.properties.items()):
            doc["rocketmqproperty" + sanitize_name(key)] = value
        doc["data_base64"] = base64.b64encode(message.body).decode("ascii")
        event = event_from_dict(doc)
    return _with_extensions(event, dict(ce_overrides or {}))


# ---------------------------------------------------------------------------------------
# PingSource: schedules and ticks
# ---------------------------------------------------------------------------------------


class CronError(KnflowError, ValueError):
    """A schedule or time zone Knative would refuse; ``field`` is ``schedule`` or ``timezone``."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


DESCRIPTORS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
_MONTHS = {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
_DAYS = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
_FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")
_FIELD_CHARS = re.compile(r"[0-9A-Za-z*?,/-]+\Z")
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _go_duration(text: str) -> float:
    """Seconds in a Go ``time.ParseDuration`` string (``90s``, ``1h30m``, ``1.5s``)."""
    position, total = 0, 0.0
    if not text:
        raise ValueError("empty duration")
    for match in _GO_DURATION.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        position = match.end()
    if position != len(text):
        raise ValueError(f"invalid duration {text!r} (expected e.g. 10s, 1m30s, 2h)")
    return total


@dataclass(frozen=True)
class Schedule:
    """A validated PingSource schedule. ``cron`` is a five-field spec, or ``every`` the
    interval in whole seconds; ``timezone`` an IANA name (None: UTC). Picklable."""

    text: str
    cron: str | None = None
    every: int | None = None
    timezone: str | None = None

    @property
    def zone(self) -> ZoneInfo | timezone:
        return ZoneInfo(self.timezone) if self.timezone else _UTC

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment`` (aware datetime), in UTC."""
        moment = _aware(moment)
        if self.every is not None:
            epoch = moment.timestamp()
            step = self.every
            return datetime.fromtimestamp((math.floor(epoch / step) + 1) * step, tz=_UTC)
        from croniter import croniter

        start = moment.astimezone(self.zone)
        return croniter(self.cron, start, ret_type=datetime).get_next(datetime).astimezone(_UTC)

    def ticks(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Every tick in ``(after, until]``, in order, in UTC."""
        until = _aware(until)
        tick = self.next_after(after)
        while tick <= until:
            yield tick
            tick = self.next_after(tick)


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("tick computations need timezone-aware datetimes")
    return moment


def parse_schedule(text: str, timezone_name: str | None = None) -> Schedule:
    """A schedule as Knative's PingSource validation accepts it (plus ``@every``); raises
    ``CronError`` naming the field at fault."""
    spec = text.strip()
    for prefix in ("CRON_TZ=", "TZ="):  # robfig/cron accepts a zone prefix in the spec itself
        if spec.startswith(prefix):
            zone_text, _, spec = spec[len(prefix):].partition(" ")
            if timezone_name:
                raise CronError("schedule", f"{prefix}{zone_text} in the schedule and spec.timezone both set a time zone")
            timezone_name = zone_text
            spec = spec.strip()
    if timezone_name is not None:
        try:
            ZoneInfo(timezone_name)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise CronError("timezone", f"unknown time zone {timezone_name!r} (expected an IANA name such as Europe/Paris)") from None
    if spec.startswith("@"):
        word, _, rest = spec.partition(" ")
        if word == "@every":
            try:
                seconds = int(_go_duration(rest.strip()))
            except ValueError as exc:
                raise CronError("schedule", f"@every: {exc}") from None
            if seconds < 1:
                raise CronError("schedule", "@every needs an interval of at least 1s")
            return Schedule(text=text, every=seconds, timezone=timezone_name)
        if word not in DESCRIPTORS or rest.strip():
            raise CronError("schedule", f"unrecognized descriptor {spec!r} (known: {', '.join(DESCRIPTORS)}, @every <duration>)")
        return Schedule(text=text, cron=DESCRIPTORS[word], timezone=timezone_name)
    fields = spec.split()
    if len(fields) != 5:
        raise CronError("schedule", f"expected exactly 5 fields (minute hour day-of-month month day-of-week), "
                                    f"found {len(fields)} in {spec!r}")
    for index, value in enumerate(fields):
        label = _FIELD_NAMES[index]
        if not _FIELD_CHARS.match(value):
            raise CronError("schedule", f"invalid {label} field {value!r}")
        allowed = _MONTHS if index == 3 else _DAYS if index == 4 else set()
        for word in re.findall(r"[A-Za-z]+", value):
            if word.lower() not in allowed:
                raise CronError("schedule", f"invalid {label} field {value!r} ({word!r} is not allowed there)")
        if index == 4 and any(int(n) > 6 for n in re.findall(r"\d+", value.split("/")[0])):
            raise CronError("schedule", f"invalid {label} field {value!r} (days of the week are 0-6, Sunday is 0)")
    from croniter import croniter

    cron = " ".join(f.replace("?", "*") for f in fields)
    try:
        croniter(cron, datetime(2000, 1, 1, tzinfo=_UTC))
    except (ValueError, KeyError) as exc:
        raise CronError("schedule", f"invalid cron schedule {spec!r}: {exc}") from None
    return Schedule(text=text, cron=cron, timezone=timezone_name)


#: How late a tick may be seen and still be sent on time (timer jitter, a slow bundle):
#: older ticks count as missed.
DEFAULT_GRACE = timedelta(seconds=10)


@dataclass(frozen=True)
class TickDecision:
    """What to do at ``now``: emit ``emit`` (in order), store ``cursor``, wake at ``next_tick``."""

    emit: tuple[datetime, ...]
    skipped: int
    cursor: datetime
    next_tick: datetime


def due_ticks(schedule: Schedule, cursor: datetime, now: datetime, *, grace: timedelta = DEFAULT_GRACE,
              catch_up: bool = False, limit: int = 1000) -> TickDecision:
    """The ticks to emit at ``now`` when every tick up to ``cursor`` is accounted for.

    Ticks in ``(cursor, now]`` are due. A due tick at most ``grace`` old is on time and
    emitted; older ones were missed (the source was stopped), and are skipped as Knative's
    adapter skips them, or emitted late with ``catch_up`` (the newest ``limit`` of them).
    The returned cursor is ``now`` (never earlier than ``cursor``). A new source starts
    with ``cursor`` = the time it was created (or first started): its first tick is the
    first one after that. Pure: the same arguments always give the same decision.
    """
    now = _aware(now)
    cursor = _aware(cursor)
    if now <= cursor:
        return TickDecision((), 0, cursor, schedule.next_after(cursor))
    due: list[datetime] = []
    skipped = 0
    for tick in schedule.ticks(cursor, now):
        if catch_up or now - tick <= grace:
            due.append(tick)
            if len(due) > limit:
                due.pop(0)
                skipped += 1
        else:
            skipped += 1
    return TickDecision(tuple(due), skipped, now, schedule.next_after(now))


def resume_ticks(schedule: Schedule, cursor: datetime, now: datetime, *, window: timedelta,
                 grace: timedelta = DEFAULT_GRACE, limit: int = 1000) -> TickDecision:
    """The first decision after the engine restored ``cursor`` from a checkpoint.

    The run that stopped may have emitted ticks after its last checkpoint, and the
    checkpoint cannot tell which: every tick in ``(cursor, cursor + window]`` is emitted
    however late (the engine passes its checkpoint interval plus the grace), so a tick
    whose delivery a failure cut short is emitted again, with the same id (at least once).
    Later ticks follow ``due_ticks``: the ones older than ``grace`` were missed while the
    job was down and are skipped, as Knative's adapter skips them. After a stop with a
    savepoint, whose cursor covers every tick emitted, the window's ticks are ticks missed
    while stopped, emitted late: nothing is emitted twice either way.
    """
    now = _aware(now)
    cursor = _aware(cursor)
    if now <= cursor:
        return due_ticks(schedule, cursor, now, grace=grace, limit=limit)
    head_end = min(now, cursor + window)
    head = due_ticks(schedule, cursor, head_end, catch_up=True, limit=limit)
    tail = due_ticks(schedule, head_end, now, grace=grace, limit=limit)
    return TickDecision(head.emit + tail.emit, head.skipped + tail.skipped, tail.cursor, tail.next_tick)


def ping_event(tick: datetime, *, namespace: str, name: str, content_type: str | None = None, data: Any = None,
               ce_overrides: Mapping[str, str] | None = None) -> CloudEvent:
    """The event a PingSource emits for ``tick``: type ``dev.knative.sources.ping``, source
    ``/apis/v1/namespaces/<ns>/pingsources/<name>``, time the tick, id a UUID 5 of source and
    tick (Knative draws a random UUID per send; a stable one lets a doubled tick be seen as
    one). ``data``: a JSON object (contentType application/json), bytes, or None: the bytes
    a sink receives are ``data`` as written, or ``dataBase64`` decoded, as
    ``pkg/adapter/mtping/runner_test.go`` expects of Knative's adapter."""
    source = f"/apis/v1/namespaces/{namespace}/pingsources/{name}"
    moment = _aware(tick).astimezone(_UTC)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{moment.microsecond:06d}" if moment.microsecond else "") + "Z"
    doc: dict[str, Any] = dict(ce_overrides or {})
    doc.update({"specversion": "1.0", "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{source}@{stamp}")),
                "source": source, "type": PING_EVENT_TYPE, "time": stamp})
    if content_type:
        doc["datacontenttype"] = content_type
    if isinstance(data, (bytes, bytearray)):
        doc["data_base64"] = base64.b64encode(bytes(data)).decode("ascii")
    elif data is not None:
        doc["data"] = data
    return event_from_dict(doc)
