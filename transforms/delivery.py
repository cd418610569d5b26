"""The delivery engine: one POST attempt of a (trigger, event) pair, and what follows from it.

Shape (like Knative's ``pkg/kncloudevents`` and Beam's ``requestresponse.py``):

- ``decide`` is the pure core: given a task, its delivery policy, the clock reading and the
  HTTP result (status or None, headers, body, error text), it returns one ``Outcome``. No
  I/O, no clock reads; unit-tested on its own.
- ``DeliveryEngine.attempt`` is the thin I/O around it: one POST of the task's request
  (``first_attempts`` encodes an event once for all its triggers and retries; a task
  without one is encoded here) through a ``Sender``, then ``decide``. It never waits out a backoff: a ``Retrying`` outcome carries
  the next task with its ``due_at``, and whoever runs the engine decides how to wait (the
  Flink job holds it in checkpointed keyed state until due; ``run_until_settled`` sleeps
  in-process, for the DirectRunner and tests).

Outcomes of one attempt:

``Delivered``        2xx from the subscriber (no reply, or a 202, which is never a reply).
``Replied``          2xx whose response is a CloudEvent: ``reply`` goes back to the broker,
                     stamped ``knativebrokerttl`` = incoming (default 255) - 1.
``Retrying``         a retryable failure: ``task`` is the next attempt (``attempt`` + 1,
                     ``due_at``). ``stuck=True``: the dead-letter sink itself keeps failing;
                     the event is retried forever (capped backoff), never dropped, and the
                     runner should report it.
``DeadLettered``     retries exhausted or not retryable. ``event`` is the original event plus
                     ``knativeerrordest``/``knativeerrorcode``/``knativeerrordata``.
                     ``destination`` is the trigger's deadLetterSink and ``next_task`` the
                     task that delivers it there; ``destination`` None means no sink is
                     configured and the job's own dead-letter output takes the event (nothing
                     is dropped silently).
``DeadLetterStored`` a dead-letter task got a 2xx from the deadLetterSink.

Choices where Knative gives no single answer (documented, tested):

- Network errors and timeouts: ``knativeerrorcode`` and ``knativeerrordata`` are absent,
  ``knativeerrordest`` is set (the Kafka broker's RecordDispatcherImpl; the channel-based
  broker writes 500 and a "dispatch error" text instead).
- ``knativeerrordata``: the response body truncated to 1024 bytes, then base64 (the Kafka
  broker's rule; the channel-based broker base64s first and truncates the text). Absent
  when the body is empty. ``kne-*`` response headers become extensions, as in the Kafka
  broker, without overriding the three ``knativeerror*`` ones.
- A malformed reply (the response says CloudEvent but does not decode, or is a batch): the
  original *was* delivered (2xx), so it is not sent again; the bad reply is dead-lettered
  instead: the original event plus the error extensions, the reply body as
  ``knativeerrordata``, ``delivered=True``. (Knative's channel-based broker answers 502 here,
  which makes the sender retry the original and repeat its side effects.)
- A reply whose ttl would reach 0 is not routed (Knative's ingress drops it with a log
  line); here it is a ``DeadLettered`` outcome (reason "knativebrokerttl exhausted",
  ``delivered=True``) carrying the reply event, so the loop stops and is counted.
- ``knativebrokerttl`` is removed from the event POSTed to the subscriber (Knative's filter
  deletes it before sending); replies get it back, decremented.
- Redirects are not followed; a 3xx is a non-retryable failure (``retry_policy``).
"""
from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Mapping, NamedTuple, Union

import orjson
from cloudevents.core.v1.event import CloudEvent

from eventing.plan import DeliveryPolicy, Destination, TriggerPlan
from filters.errors import KnflowError
from transforms.codec import CodecError, decode_http, encode_http, event_from_dict, event_to_dict, is_http_cloudevent
from transforms.retry_policy import GiveUp, backoff_delay, is_success, next_step
from transforms.sender import Response, SendError, Sender
from transforms.tls_trust import trust_by_origin

__all__ = [
    "DEAD_LETTER",
    "DEFAULT_TTL",
    "ERROR_DATA_MAX_BYTES",
    "SUBSCRIBER",
    "TTL_EXTENSION",
    "DeadLetterStored",
    "DeadLettered",
    "Delivered",
    "DeliveryConfigError",
    "DeliveryEngine",
    "DeliveryError",
    "DeliveryTask",
    "Outcome",
    "Replied",
    "Retrying",
    "SubscriberRequest",
    "dead_letter_event",
    "decide",
    "event_record_json",
    "first_attempts",
    "subscriber_request",
]

SUBSCRIBER = "subscriber"
DEAD_LETTER = "dead_letter"
TTL_EXTENSION = "knativebrokerttl"
DEFAULT_TTL = 255
_TTL_HEADER = "ce-" + TTL_EXTENSION
ERROR_DEST = "knativeerrordest"
ERROR_CODE = "knativeerrorcode"
ERROR_DATA = "knativeerrordata"
ERROR_DATA_MAX_BYTES = 1024
#: Backoff cap for a stuck dead-letter task when the policy sets no ``backoff_max``.
STUCK_BACKOFF_CAP = 30.0

_CORE_ATTRIBUTES = frozenset(
    ("id", "source", "type", "specversion", "time", "subject", "datacontenttype", "dataschema", "data")
)
_EXTENSION_NAME = re.compile(r"[a-z0-9]+\Z").match
_FORMAT_MODES = {None: "binary", "binary": "binary", "json": "structured", "structured": "structured"}


class DeliveryConfigError(KnflowError, KeyError):
    """A task names a trigger the engine was not given."""


def _event_key(event: CloudEvent) -> tuple[Any, Any]:
    return event.get_attributes(), event.get_data()


def _with_attributes(event: CloudEvent, changes: Mapping[str, Any], remove: Iterable[str] = ()) -> CloudEvent:
    """A copy of ``event`` with attributes set/removed, without re-validating or inventing
    ``id``/``time`` as ``CloudEvent.__init__`` would (same technique as the codec)."""
    attributes = dict(event.get_attributes())
    for name in remove:
        attributes.pop(name, None)
    attributes.update(changes)
    new = copy.copy(event)
    new._attributes = attributes  # noqa: SLF001 - the one field the class reads
    return new


# ---------------------------------------------------------------------------------------
# tasks
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryError:
    """The final failure behind a dead letter: where, which status (None: no response), the
    ``knativeerrordata`` value (base64, "" when none) and a readable reason."""

    dest: str
    code: int | None
    data: str
    reason: str


class SubscriberRequest(NamedTuple):
    """The exact HTTP request that delivers an event to a subscriber in content ``mode``
    (``binary`` or ``structured``): CloudEvent headers plus ``Prefer: reply``, and the body;
    ``knativebrokerttl`` is already removed. Built once per event and shared by every task
    of that event whose trigger uses ``mode`` (the headers dict is never changed)."""

    mode: str
    headers: dict[str, str]
    body: bytes


_new_request = SubscriberRequest._make  # tuple.__new__: a third of the NamedTuple constructor's time


def subscriber_request(event: CloudEvent, mode: str) -> SubscriberRequest:
    """``event`` as its subscribers get it (raises ``CodecError`` if it cannot be encoded)."""
    has_ttl = TTL_EXTENSION in event.get_attributes()
    if has_ttl and mode != "binary":
        event = _with_attributes(event, {}, (TTL_EXTENSION,))
    headers, body = encode_http(event, mode)
    if has_ttl:
        headers.pop(_TTL_HEADER, None)  # binary mode: drop its header, no event copy
    headers["Prefer"] = "reply"
    return SubscriberRequest(mode, headers, body)


def event_record_json(event: CloudEvent) -> bytes:
    """The event's JSON form in task records (``codec.event_to_dict``, compact UTF-8)."""
    return json.dumps(event_to_dict(event), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def first_attempts(event: CloudEvent, triggers: Iterable[TriggerPlan], due_at: float) -> list[DeliveryTask]:
    """The first-attempt tasks of ``event`` for each of ``triggers``, due at ``due_at``.

    The event is encoded once per delivery format, not once per trigger: every task carries
    its subscriber's request ready to send (``DeliveryTask.request``), and its retries carry
    it too. An event that cannot be encoded gets a task without one: its attempt encodes it
    again and dead-letters it with the codec's reason.
    """
    requests: dict[str | None, SubscriberRequest | None] = {None: None}  # None: an unknown format
    tasks = []
    for trigger in triggers:
        mode = _FORMAT_MODES.get(trigger.delivery.format)
        if mode not in requests:
            try:
                requests[mode] = subscriber_request(event, mode)
            except CodecError:
                requests[mode] = None
        tasks.append(DeliveryTask(trigger.key, event, due_at=due_at, request=requests[mode]))
    return tasks


class DeliveryTask:
    """One delivery to do: ``event`` for ``trigger`` ("ns/name") to its subscriber or, with
    ``target == "dead_letter"``, to its deadLetterSink.

    ``attempt``: attempts already made; ``first_attempt_at``: when the first one started
    (None until then); ``due_at``: not before this instant; ``error``: for dead-letter tasks,
    the failure that sent the event there; ``request``: the subscriber's HTTP request, when
    it was encoded already (``first_attempts``), so no attempt encodes the event again.

    A value: never changed after it is made (``retried`` makes the next attempt's task),
    except that ``request`` and the decoded ``event`` are memos filled in on first need.
    Picklable; ``to_bytes``/``from_bytes`` give the record the Flink job keeps in its
    state for what waits (a held retry, a queued ordered event, a chain in flight). ``from_bytes`` reads only the small
    first line; the event itself is decoded when something asks for ``event`` (a dead
    letter, a reply), which a plain successful attempt never does.
    """

    __slots__ = ("trigger", "attempt", "first_attempt_at", "due_at", "target", "error", "request",
                 "_event", "_event_json", "_event_id")

    def __init__(
        self,
        trigger: str,
        event: CloudEvent | None = None,
        attempt: int = 0,
        first_attempt_at: float | None = None,
        due_at: float = 0.0,
        target: str = SUBSCRIBER,
        error: DeliveryError | None = None,
        *,
        request: SubscriberRequest | None = None,
        event_json: bytes | None = None,
        event_id: str | None = None,
    ) -> None:
        if event is None and event_json is None:
            raise TypeError("DeliveryTask needs an event or its JSON form")
        self.trigger = trigger
        self.attempt = attempt
        self.first_attempt_at = first_attempt_at
        self.due_at = due_at
        self.target = target
        self.error = error
        self.request = request
        self._event = event
        self._event_json = event_json
        self._event_id = event_id

    @property
    def event(self) -> CloudEvent:
        event = self._event
        if event is None:
            try:
                event = self._event = event_from_dict(json.loads(self._event_json))
            except CodecError as exc:
                raise CodecError(f"delivery task for {self.trigger}: {exc}") from None
            except ValueError as exc:
                raise CodecError(f"delivery task for {self.trigger}: malformed event JSON: {exc}") from None
        return event

    @property
    def event_id(self) -> str:
        """The event's id, without decoding the event when the task came from a record."""
        if self._event_id is None:
            self._event_id = self.event.get_id()
        return self._event_id

    def retried(self, attempt: int, first_attempt_at: float | None, due_at: float) -> "DeliveryTask":
        """This task for a later attempt (same event, request, target and error)."""
        return DeliveryTask(self.trigger, self._event, attempt, first_attempt_at, due_at, self.target, self.error,
                            request=self.request, event_json=self._event_json, event_id=self._event_id)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DeliveryTask):
            return NotImplemented
        return (
            self.trigger == other.trigger
            and self.attempt == other.attempt
            and self.first_attempt_at == other.first_attempt_at
            and self.due_at == other.due_at
            and self.target == other.target
            and self.error == other.error
            and _event_key(self.event) == _event_key(other.event)
        )

    def __hash__(self) -> int:
        return hash((self.trigger, self.attempt, self.target, self.event_id))

    def __repr__(self) -> str:
        return (f"DeliveryTask(trigger={self.trigger!r}, event_id={self.event_id!r}, attempt={self.attempt}, "
                f"due_at={self.due_at!r}, target={self.target!r})")

    def to_bytes(self) -> bytes:
        """The task record: a JSON line of the task's fields (and its request's headers),
        a line with the event in JSON form, then its request's body, if it has one. Made
        only for what waits in the job's state; the event's JSON form is kept once made."""
        event_json = self._event_json
        if event_json is None:
            event_json = self._event_json = event_record_json(self._event)
        doc: dict[str, Any] = {
            "v": 2,
            "trigger": self.trigger,
            "target": self.target,
            "attempt": self.attempt,
            "first": self.first_attempt_at,
            "due": self.due_at,
            "id": self.event_id,
        }
        if self.error is not None:
            e = self.error
            doc["error"] = {"dest": e.dest, "code": e.code, "data": e.data, "reason": e.reason}
        request = self.request
        if request is not None:
            doc["mode"] = request.mode
            doc["headers"] = request.headers
        head = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if request is None:
            return b"%s\n%s" % (head, event_json)
        return b"%s\n%s\n%s" % (head, event_json, request.body)

    @classmethod
    def from_bytes(cls, data: bytes | str) -> "DeliveryTask":
        """A task record back into a task (records of format 1, one JSON document with the
        event inside, still read)."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        try:
            end = data.find(b"\n")  # JSON never holds a raw newline: it ends the first line
            doc = orjson.loads(data if end < 0 else data[:end])
            version = doc.get("v")
            if version == 1 and end < 0:
                return cls._from_v1(doc)
            if version != 2 or end < 0:
                raise ValueError(f"unknown task format version {version!r}")
            error = doc.get("error")
            request = None
            rest = end + 1
            end = data.find(b"\n", rest)
            if end < 0:
                event_json = data[rest:]
            else:
                event_json = data[rest:end]
                request = _new_request((doc["mode"], doc["headers"], data[end + 1:]))
            event_id = doc["id"]
            if not isinstance(event_id, str) or not event_json:
                raise ValueError("no event id or no event")
            return cls(
                doc["trigger"], None, int(doc["attempt"]), doc["first"], float(doc["due"]), doc["target"],
                None if error is None else DeliveryError(error["dest"], error["code"], error["data"], error["reason"]),
                request=request, event_json=event_json, event_id=event_id,
            )
        except CodecError as exc:
            raise CodecError(f"delivery task: {exc}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CodecError(f"delivery task: malformed record: {type(exc).__name__}: {exc}") from None

    @classmethod
    def _from_v1(cls, doc: dict[str, Any]) -> "DeliveryTask":
        error = doc.get("error")
        return cls(
            doc["trigger"], event_from_dict(doc["event"]), int(doc["attempt"]), doc["first"], float(doc["due"]),
            doc["target"],
            None if error is None else DeliveryError(error["dest"], error["code"], error["data"], error["reason"]),
        )


# ---------------------------------------------------------------------------------------
# outcomes
# ---------------------------------------------------------------------------------------
# Values, never changed after they are made; slotted but not frozen, because one is made per
# attempt and a frozen dataclass's __init__ takes three times as long.


@dataclass(slots=True)
class Delivered:
    task: DeliveryTask
    status: int

    @property
    def settled(self) -> bool:
        return True


@dataclass(slots=True)
class Replied:
    task: DeliveryTask
    status: int
    reply: CloudEvent

    @property
    def settled(self) -> bool:
        return True


@dataclass(slots=True)
class Retrying:
    """Try ``task`` (the next attempt) again at ``task.due_at``."""

    task: DeliveryTask
    status: int | None
    error: str
    stuck: bool = False

    @property
    def settled(self) -> bool:
        return False


@dataclass(slots=True)
class DeadLettered:
    """The event goes to the dead letter: ``destination`` (via ``next_task``) or, when None,
    the job's own dead-letter output. ``delivered``: the original was delivered and it is
    its reply that is dead-lettered."""

    task: DeliveryTask
    event: CloudEvent
    destination: Destination | None
    reason: str
    next_task: DeliveryTask | None = None
    delivered: bool = False

    @property
    def settled(self) -> bool:
        return self.next_task is None


@dataclass(slots=True)
class DeadLetterStored:
    task: DeliveryTask
    status: int

    @property
    def settled(self) -> bool:
        return True


Outcome = Union[Delivered, Replied, Retrying, DeadLettered, DeadLetterStored]


# ---------------------------------------------------------------------------------------
# the pure core
# ---------------------------------------------------------------------------------------


def _error_data(body: bytes) -> str:
    """``knativeerrordata``: at most 1024 bytes of body, then base64 (Kafka broker rule)."""
    return base64.b64encode(body[:ERROR_DATA_MAX_BYTES]).decode("ascii") if body else ""


def dead_letter_event(
    event: CloudEvent,
    dest: str,
    status: int | None,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
) -> CloudEvent:
    """``event`` plus the ``knativeerror*`` extensions describing a failed delivery to ``dest``.

    ``knativeerrorcode`` is the status as a string (absent without a response),
    ``knativeerrordata`` the base64 of the first 1024 body bytes (absent when empty); a
    ``kne-<name>`` response header becomes extension ``<name>``.
    """
    changes: dict[str, Any] = {}
    if headers:
        for key, value in headers.items():
            lower = key.lower()
            if lower.startswith("kne-"):
                name = lower[4:]
                if _EXTENSION_NAME(name) and name not in _CORE_ATTRIBUTES:
                    changes[name] = value
    changes[ERROR_DEST] = dest
    remove = []
    if status is not None:
        changes[ERROR_CODE] = str(status)
    else:
        remove.append(ERROR_CODE)
    data = _error_data(body) if status is not None else ""
    if data:
        changes[ERROR_DATA] = data
    else:
        remove.append(ERROR_DATA)
    return _with_attributes(event, changes, remove)


def _incoming_ttl(event: CloudEvent) -> int:
    value = event.get_attributes().get(TTL_EXTENSION)
    if value is None or isinstance(value, bool):
        return DEFAULT_TTL
    try:
        return int(str(value).strip())
    except ValueError:
        return DEFAULT_TTL


def _dead_letter(
    task: DeliveryTask,
    policy: DeliveryPolicy,
    now: float,
    event: CloudEvent,
    url: str,
    status: int | None,
    reason: str,
    *,
    delivered: bool = False,
) -> DeadLettered:
    destination = policy.dead_letter_sink
    next_task = None
    if destination is not None and destination.kafka_topic is None:  # a KafkaSink is written by the job, no HTTP task
        error = DeliveryError(url, status, event.get_attributes().get(ERROR_DATA, ""), reason)
        next_task = DeliveryTask(task.trigger, event, 0, None, now, DEAD_LETTER, error)
    return DeadLettered(task, event, destination, reason, next_task, delivered)


def _on_success(
    task: DeliveryTask,
    policy: DeliveryPolicy,
    now: float,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    url: str,
) -> Outcome:
    if task.target == DEAD_LETTER:
        return DeadLetterStored(task, status)
    if status == 202 or not is_http_cloudevent(headers):
        return Delivered(task, status)
    try:
        events = decode_http(headers, body, keep_payload=True)  # the reply's payload goes on byte for byte
        if len(events) != 1:
            raise CodecError(f"a reply must be one event, got a batch of {len(events)}")
    except CodecError as exc:
        reason = f"malformed reply (status {status}): {exc}"
        event = dead_letter_event(task.event, url, status, body, headers)
        return _dead_letter(task, policy, now, event, url, status, reason, delivered=True)
    ttl = _incoming_ttl(task.event) - 1
    if ttl <= 0:
        reply = dead_letter_event(events[0], url, status)
        return _dead_letter(task, policy, now, reply, url, status, "knativebrokerttl exhausted", delivered=True)
    return Replied(task, status, _with_attributes(events[0], {TTL_EXTENSION: ttl}))


def decide(
    task: DeliveryTask,
    policy: DeliveryPolicy,
    now: float,
    status: int | None,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    error_text: str | None = None,
    *,
    url: str = "",
    started_at: float | None = None,
) -> Outcome:
    """The outcome of one attempt of ``task``. Pure: no I/O, no clock reads.

    ``now``: when the attempt ended; ``status``: the HTTP status, None when there was no
    response (``error_text`` says why); ``headers`` (lower-case names) and ``body``: the
    response; ``url``: where the attempt went (becomes ``knativeerrordest``);
    ``started_at``: when it started (the first attempt's start bounds maxRetryDuration;
    default ``now``).
    """
    headers = headers or {}
    if status is not None and is_success(status):
        return _on_success(task, policy, now, status, headers, body, url)
    attempts = task.attempt + 1
    first = task.first_attempt_at
    if first is None:
        first = now if started_at is None else started_at
    what = error_text or ("no response" if status is None else f"status {status}")
    step = next_step(policy, attempts, first, now, status, headers)
    if not isinstance(step, GiveUp):
        return Retrying(task.retried(attempts, first, step.at), status, what)
    if task.target == DEAD_LETTER:
        # The dead-letter sink is failing too and its retries are spent. Never drop: keep
        # retrying with a capped backoff, flagged so the runner reports the stuck event.
        cap = policy.backoff_max if policy.backoff_max is not None else STUCK_BACKOFF_CAP
        delay = min(backoff_delay(policy, attempts), cap)
        nxt = task.retried(attempts, first, now + delay)
        return Retrying(
            nxt, status, f"dead-letter sink {url or '?'}: {what}; {step.reason}; still retrying, never dropped", True
        )
    reason = step.reason if error_text is None else f"{error_text} ({step.reason})"
    event = dead_letter_event(task.event, url, status, body, headers)
    return _dead_letter(task, policy, now, event, url, status, reason)


# ---------------------------------------------------------------------------------------
# the engine (thin I/O)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Route:
    url: str
    dead_letter_url: str | None
    policy: DeliveryPolicy
    mode: str
    timeout: float


def _http_dead_letter_sink(plan: TriggerPlan) -> Destination | None:
    """The trigger's dead-letter sink when it is an HTTP address (not a KafkaSink's topic)."""
    dls = plan.delivery.dead_letter_sink
    return None if dls is None or dls.kafka_topic is not None else dls


def destination_ca_certs(triggers: Mapping[str, TriggerPlan], ref_urls: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """``{origin: PEM}`` for a sender's ``ca_certs``: the ``CACerts`` of the https
    subscribers and dead-letter sinks of ``triggers`` (see ``tls_trust``)."""
    return trust_by_origin((destination.url(ref_urls), destination.ca_certs) for plan in triggers.values()
                           for destination in (plan.subscriber, _http_dead_letter_sink(plan))
                           if destination is not None and destination.ca_certs)


class DeliveryEngine:
    """Runs delivery attempts for a set of triggers through one ``Sender``.

    ``triggers`` maps trigger keys ("ns/name") to their plans; ``ref_urls`` resolves
    ``ref`` destinations (see ``Destination.url``); ``default_timeout`` applies when a
    trigger's delivery spec sets none. The sender is opened/closed with the engine
    (``open``/``close`` or ``async with``), or by its owner if it was opened already.
    """

    def __init__(
        self,
        triggers: Mapping[str, TriggerPlan],
        sender: Sender,
        *,
        clock: Callable[[], float] = time.time,
        ref_urls: Mapping[str, str] | None = None,
        default_timeout: float = 30.0,
    ) -> None:
        self.sender = sender
        self.clock = clock
        self.default_timeout = default_timeout
        self._routes: dict[str, _Route] = {}
        for key, plan in triggers.items():
            policy = plan.delivery
            mode = _FORMAT_MODES.get(policy.format)
            if mode is None:
                raise DeliveryConfigError(f"trigger {key}: unknown delivery format {policy.format!r}")
            dls = _http_dead_letter_sink(plan)
            self._routes[key] = _Route(
                url=plan.subscriber.url(ref_urls),
                dead_letter_url=None if dls is None else dls.url(ref_urls),
                policy=policy,
                mode=mode,
                timeout=float(policy.timeout if policy.timeout is not None else default_timeout),
            )

    async def open(self) -> None:
        await self.sender.open()

    async def close(self) -> None:
        await self.sender.close()

    async def __aenter__(self) -> "DeliveryEngine":
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def route(self, trigger: str) -> _Route:
        try:
            return self._routes[trigger]
        except KeyError:
            raise DeliveryConfigError(f"unknown trigger {trigger!r}") from None

    def task(self, trigger: str, event: CloudEvent) -> DeliveryTask:
        """A first-attempt task, due now (``first_attempts`` makes one per trigger)."""
        return DeliveryTask(trigger, event, due_at=self.clock())

    async def attempt(self, task: DeliveryTask) -> Outcome:
        """One POST of ``task`` (never waits for ``due_at``), then ``decide``."""
        route = self._routes.get(task.trigger) or self.route(task.trigger)
        to_subscriber = task.target == SUBSCRIBER
        request = task.request
        if to_subscriber:
            url = route.url
            if request is None or request.mode != route.mode:  # not encoded yet, or for another format
                try:
                    request = task.request = subscriber_request(task.event, route.mode)  # its retries reuse it
                except CodecError as exc:
                    # Cannot be put on the wire at all: no retry can help; the job's dead-letter
                    # output (which stores it in the Kafka binding) takes it.
                    return DeadLettered(task, task.event, None, f"cannot encode event for HTTP: {exc}")
            headers, body = request.headers, request.body
        else:
            url = route.dead_letter_url
            if url is None:  # the trigger lost its sink since the task was made
                return DeadLettered(task, task.event, None, "no deadLetterSink configured for dead-letter task")
            try:
                headers, body = encode_http(task.event, route.mode)
            except CodecError as exc:
                return DeadLettered(task, task.event, None, f"cannot encode event for HTTP: {exc}")
        started = self.clock()
        try:
            response: Response = await self.sender.post(url, headers, body, route.timeout)
        except SendError as exc:
            return decide(task, route.policy, self.clock(), None, None, b"", exc.message, url=url, started_at=started)
        status = response.status
        if (
            to_subscriber
            and 200 <= status < 300
            and (status == 202 or not is_http_cloudevent(response.headers, lower_case_names=True))
        ):
            return Delivered(task, status)  # decide's answer for a 2xx that is not a reply, without its call
        return decide(
            task, route.policy, self.clock(), status, response.headers, response.body, None, url=url,
            started_at=started,
        )

    async def attempt_many(self, tasks: Iterable[DeliveryTask], concurrency: int = 64) -> list[Outcome]:
        """One attempt of each task, up to ``concurrency`` in flight; outcomes in task order."""
        items = list(tasks)
        results: list[Any] = [None] * len(items)
        work = iter(enumerate(items))
        attempt = self.attempt

        async def worker() -> None:
            for index, task in work:
                results[index] = await attempt(task)

        workers = min(max(1, concurrency), len(items))
        if workers == 1:
            await worker()
        elif workers:
            await asyncio.gather(*(worker() for _ in range(workers)))
        return results

    async def run_until_settled(
        self,
        task: DeliveryTask,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        *,
        stop_when_stuck: bool = True,
    ) -> list[Outcome]:
        """Attempt, wait until ``due_at`` (``sleep`` on the engine clock), attempt again...
        until a settled outcome; a dead letter with a sink continues with its task.

        For in-process runners and tests only. A stuck dead-letter task (``Retrying`` with
        ``stuck=True``) ends the loop when ``stop_when_stuck`` (the caller holds the task
        and must re-submit it: it is never dropped); otherwise it is retried forever.
        """
        outcomes: list[Outcome] = []
        while True:
            wait = task.due_at - self.clock()
            if wait > 0:
                await sleep(wait)
            outcome = await self.attempt(task)
            outcomes.append(outcome)
            if isinstance(outcome, Retrying):
                if outcome.stuck and stop_when_stuck:
                    return outcomes
                task = outcome.task
            elif isinstance(outcome, DeadLettered) and outcome.next_task is not None:
                task = outcome.next_task
            else:
                return outcomes
