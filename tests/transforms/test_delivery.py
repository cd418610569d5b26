"""The delivery engine: the pure ``decide`` core, then real HTTP consumers over sockets.

Wire tests run every scenario with each sender implementation. Waiting out backoffs uses a
fake clock whose ``sleep`` just advances it, so retry times are asserted exactly while the
HTTP exchanges themselves are real.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import pickle
from typing import Any

import pytest

from cloudevents.core.v1.event import CloudEvent
from eventing.plan import DeliveryPolicy, Destination, TriggerPlan
from filters.materialize import materialize_trigger
from tests.consumers import (
    ConsumerServer,
    accept,
    always,
    closed_port_url,
    fail_then,
    reply_event,
    slow,
    throttle,
)
from transforms.codec import CodecError, decode_http
from transforms.delivery import (
    DEAD_LETTER,
    DeadLettered,
    DeadLetterStored,
    Delivered,
    DeliveryConfigError,
    DeliveryEngine,
    DeliveryError,
    DeliveryTask,
    Replied,
    Retrying,
    dead_letter_event,
    decide,
    first_attempts,
    subscriber_request,
)
from transforms.sender import make_sender, sender_names

TRIGGER = "default/orders"
URL = "http://orders.default.svc.cluster.local/"
DLS_URL = "http://dls.default.svc.cluster.local/"


def make_event(**extra: Any) -> CloudEvent:
    attributes = {
        "id": "e-1",
        "source": "/shop",
        "type": "order.created",
        "specversion": "1.0",
        "datacontenttype": "application/json",
        **extra,
    }
    return CloudEvent(attributes, {"order": 42})


def attrs(event: CloudEvent) -> dict[str, Any]:
    return {k: v for k, v in event.get_attributes().items() if k != "time"}


def policy(**kw: Any) -> DeliveryPolicy:
    return DeliveryPolicy(**kw)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# =========================================================================================
# decide: the pure core
# =========================================================================================


def test_success_is_delivered() -> None:
    task = DeliveryTask(TRIGGER, make_event())
    for status in (200, 201, 204):
        assert decide(task, policy(), 10.0, status, {}, b"", url=URL) == Delivered(task, status)
    # a non-CloudEvent body is not a reply
    assert decide(task, policy(), 10.0, 200, {"content-type": "text/plain"}, b"ok", url=URL) == Delivered(task, 200)


def test_202_is_never_a_reply() -> None:
    task = DeliveryTask(TRIGGER, make_event())
    headers = {"ce-specversion": "1.0", "ce-id": "r", "ce-source": "/s", "ce-type": "t"}
    assert decide(task, policy(), 1.0, 202, headers, b"", url=URL) == Delivered(task, 202)


def _reply_headers(**extra: str) -> dict[str, str]:
    return {"ce-specversion": "1.0", "ce-id": "r-1", "ce-source": "/svc", "ce-type": "order.checked",
            "content-type": "application/json", **extra}


def test_reply_gets_ttl_decremented() -> None:
    task = DeliveryTask(TRIGGER, make_event())
    out = decide(task, policy(), 1.0, 200, _reply_headers(), b'{"ok":true}', url=URL)
    assert isinstance(out, Replied) and out.status == 200 and out.task == task
    assert attrs(out.reply) == {"id": "r-1", "source": "/svc", "type": "order.checked", "specversion": "1.0",
                                "datacontenttype": "application/json", "knativebrokerttl": 254}
    assert out.reply.get_data() == b'{"ok":true}'  # the reply's payload as sent, byte for byte
    # incoming ttl (binary mode: a string) wins over the default
    task10 = DeliveryTask(TRIGGER, make_event(knativebrokerttl="10"))
    out10 = decide(task10, policy(), 1.0, 200, _reply_headers(), b"{}", url=URL)
    assert out10.reply.get_attributes()["knativebrokerttl"] == 9


def test_reply_with_ttl_exhausted_is_dead_lettered_not_routed() -> None:
    dls = Destination(uri=DLS_URL)
    task = DeliveryTask(TRIGGER, make_event(knativebrokerttl=1))
    out = decide(task, policy(dead_letter_sink=dls), 5.0, 200, _reply_headers(), b"{}", url=URL)
    assert isinstance(out, DeadLettered)
    assert out.reason == "knativebrokerttl exhausted" and out.delivered is True
    assert out.destination == dls
    assert attrs(out.event) == {"id": "r-1", "source": "/svc", "type": "order.checked", "specversion": "1.0",
                                "datacontenttype": "application/json",
                                "knativeerrordest": URL, "knativeerrorcode": "200"}
    assert out.next_task is not None and out.next_task.target == DEAD_LETTER and out.next_task.due_at == 5.0


def test_malformed_reply_dead_letters_the_reply_not_the_delivery() -> None:
    task = DeliveryTask(TRIGGER, make_event())
    headers = {"ce-specversion": "1.0", "ce-source": "/svc", "ce-type": "t"}  # no ce-id
    out = decide(task, policy(retry=5), 1.0, 200, headers, b"garbage", url=URL)
    assert isinstance(out, DeadLettered) and out.delivered and out.destination is None
    assert out.reason.startswith("malformed reply (status 200): ")
    assert "id" in out.reason
    a = out.event.get_attributes()
    assert a["id"] == "e-1" and a["knativeerrorcode"] == "200" and a["knativeerrordata"] == b64(b"garbage")


def test_retryable_failure_schedules_next_attempt() -> None:
    p = policy(retry=2, backoff_policy="exponential", backoff_delay=0.5)
    task = DeliveryTask(TRIGGER, make_event(), due_at=0.0)
    out = decide(task, p, 100.0, 503, {}, b"busy", url=URL, started_at=99.5)
    assert out == Retrying(
        DeliveryTask(TRIGGER, task.event, attempt=1, first_attempt_at=99.5, due_at=101.0), 503, "status 503"
    )
    out2 = decide(out.task, p, 101.2, None, None, b"", "timed out after 1s", url=URL, started_at=101.0)
    assert isinstance(out2, Retrying) and out2.error == "timed out after 1s"
    assert (out2.task.attempt, out2.task.first_attempt_at, out2.task.due_at) == (2, 99.5, 101.2 + 2.0)
    out3 = decide(out2.task, p, 104.0, 500, {}, b"boom", url=URL)
    assert isinstance(out3, DeadLettered) and out3.destination is None and out3.next_task is None
    assert out3.reason == "status 500 after 2 of 2 retries"


def test_non_retryable_goes_to_dead_letter_sink_with_error_extensions() -> None:
    dls = Destination(uri=DLS_URL)
    task = DeliveryTask(TRIGGER, make_event())
    out = decide(task, policy(retry=3, dead_letter_sink=dls), 7.0, 400, {}, b"bad order", url=URL)
    assert isinstance(out, DeadLettered) and out.destination == dls and not out.delivered
    expected = {**attrs(task.event), "knativeerrordest": URL, "knativeerrorcode": "400",
                "knativeerrordata": b64(b"bad order")}
    assert attrs(out.event) == expected
    assert out.event.get_data() == {"order": 42}
    assert out.next_task == DeliveryTask(
        TRIGGER, out.event, 0, None, 7.0, DEAD_LETTER,
        DeliveryError(URL, 400, b64(b"bad order"), "status 400 is not retryable"),
    )


def test_error_data_is_body_truncated_to_1024_bytes_then_base64() -> None:
    body = bytes(range(256)) * 8  # 2048 bytes
    event = dead_letter_event(make_event(), URL, 500, body)
    assert event.get_attributes()["knativeerrordata"] == b64(body[:1024])
    assert base64.b64decode(event.get_attributes()["knativeerrordata"]) == body[:1024]
    # empty body: no knativeerrordata
    assert "knativeerrordata" not in dead_letter_event(make_event(), URL, 500, b"").get_attributes()


def test_network_error_dead_letter_has_dest_but_no_code() -> None:
    task = DeliveryTask(TRIGGER, make_event(knativeerrorcode="418"))  # stale value from upstream
    out = decide(task, policy(), 1.0, None, None, b"", "connection error: refused", url=URL)
    assert isinstance(out, DeadLettered)
    a = out.event.get_attributes()
    assert a["knativeerrordest"] == URL and "knativeerrorcode" not in a and "knativeerrordata" not in a
    assert out.reason == "connection error: refused (network error or timeout after 0 of 0 retries)"


def test_kne_headers_become_extensions() -> None:
    headers = {"kne-reason": "quota", "kne-Bad_Name": "x", "kne-id": "hijack", "kne-knativeerrorcode": "1"}
    event = dead_letter_event(make_event(), URL, 500, b"", headers)
    a = event.get_attributes()
    assert a["reason"] == "quota" and a["id"] == "e-1" and a["knativeerrorcode"] == "500"
    assert "bad_name" not in a


def test_max_retry_duration_dead_letters() -> None:
    p = policy(retry=100, backoff_policy="linear", backoff_delay=10.0, max_retry_duration=15.0)
    task = DeliveryTask(TRIGGER, make_event(), attempt=1, first_attempt_at=0.0, due_at=10.0)
    out = decide(task, p, 10.0, 500, {}, b"", url=URL)
    assert isinstance(out, DeadLettered) and "maxRetryDuration 15s" in out.reason


def test_dead_letter_task_success_is_stored() -> None:
    task = DeliveryTask(TRIGGER, make_event(), target=DEAD_LETTER)
    reply = _reply_headers()
    assert decide(task, policy(), 1.0, 200, reply, b"{}", url=DLS_URL) == DeadLetterStored(task, 200)


def test_dead_letter_sink_failures_retry_then_get_stuck_never_dropped() -> None:
    p = policy(retry=1, backoff_policy="exponential", backoff_delay=1.0, dead_letter_sink=Destination(uri=DLS_URL))
    task = DeliveryTask(TRIGGER, make_event(), target=DEAD_LETTER, due_at=0.0)
    first = decide(task, p, 0.0, 503, {}, b"", url=DLS_URL)
    assert isinstance(first, Retrying) and not first.stuck and first.task.due_at == 2.0
    stuck = decide(first.task, p, 2.0, 503, {}, b"", url=DLS_URL)
    assert isinstance(stuck, Retrying) and stuck.stuck
    assert stuck.task.attempt == 2 and stuck.task.due_at == 2.0 + 4.0
    assert "never dropped" in stuck.error
    # the cap: 30 s without backoff_max, else backoff_max
    later = decide(replace_attempt(stuck.task, 20), p, 100.0, 503, {}, b"", url=DLS_URL)
    assert later.stuck and later.task.due_at == 130.0
    capped = decide(replace_attempt(stuck.task, 20), policy(retry=1, backoff_max=5.0), 100.0, None, None, b"", "x")
    assert capped.stuck and capped.task.due_at == 105.0
    # even a non-retryable answer from the sink does not drop the event
    bad = decide(task, p, 0.0, 400, {}, b"", url=DLS_URL)
    assert isinstance(bad, Retrying) and bad.stuck and bad.task.event is task.event


def replace_attempt(task: DeliveryTask, attempt: int) -> DeliveryTask:
    return DeliveryTask(task.trigger, task.event, attempt, task.first_attempt_at, task.due_at, task.target, task.error)


def test_task_round_trips_through_bytes_and_pickle() -> None:
    error = DeliveryError(URL, 500, b64(b"x"), "status 500")
    event = make_event(knativebrokerttl=7, flag=True)
    for task in (
        DeliveryTask(TRIGGER, event),
        DeliveryTask(TRIGGER, CloudEvent({"id": "b", "source": "s", "type": "t", "specversion": "1.0"}, b"\x00\xff"),
                     attempt=3, first_attempt_at=1.25, due_at=9.5),
        DeliveryTask(TRIGGER, event, 2, 0.1, 0.3, DEAD_LETTER, error),
    ):
        data = task.to_bytes()
        head = data.split(b"\n", 1)[0]
        assert isinstance(data, bytes) and json.loads(head)["v"] == 2 and b'", "' not in head  # compact
        back = DeliveryTask.from_bytes(data)
        assert back == task
        assert back.event.get_attributes() == task.event.get_attributes()
        assert pickle.loads(pickle.dumps(task)) == task
    with pytest.raises(CodecError):
        DeliveryTask.from_bytes(b'{"v":1,"trigger":"x"}')
    with pytest.raises(CodecError):
        DeliveryTask.from_bytes(b"not json")


def test_outcomes_pickle() -> None:
    task = DeliveryTask(TRIGGER, make_event())
    out = decide(task, policy(dead_letter_sink=Destination(uri=DLS_URL)), 1.0, 400, {}, b"no", url=URL)
    back = pickle.loads(pickle.dumps(out))
    assert isinstance(back, DeadLettered) and back.next_task == out.next_task and back.reason == out.reason


def plans(*formats: str | None, url: str = URL) -> list[TriggerPlan]:
    """One trigger per delivery format, named t0, t1, ..."""
    return [dataclasses.replace(trigger(url, format=fmt), name=f"t{i}") for i, fmt in enumerate(formats)]


def test_first_attempts_encode_once_per_format_without_ttl() -> None:
    event = make_event(knativebrokerttl=9)
    binary, binary_too, structured = first_attempts(event, plans(None, "binary", "json"), 5.0)
    assert [t.trigger for t in (binary, binary_too, structured)] == ["default/t0", "default/t1", "default/t2"]
    assert binary.request is binary_too.request  # one encoding shared by both binary triggers
    assert binary.request == subscriber_request(event, "binary") and binary.due_at == 5.0
    headers, body = binary.request.headers, binary.request.body
    assert headers["ce-id"] == "e-1" and headers["Prefer"] == "reply" and "ce-knativebrokerttl" not in headers
    assert json.loads(body) == {"order": 42}
    doc = json.loads(structured.request.body)
    assert structured.request.mode == "structured" and doc["id"] == "e-1" and "knativebrokerttl" not in doc
    assert event.get_attributes()["knativebrokerttl"] == 9  # the event itself is untouched


def test_first_attempts_leave_an_unencodable_event_to_its_attempt() -> None:
    event = CloudEvent({"id": "nan", "source": "s", "type": "t", "specversion": "1.0",
                        "datacontenttype": "application/json"}, {"n": float("nan")})
    (task,) = first_attempts(event, plans(None), 0.0)
    assert task.request is None

    async def main() -> Any:
        consumer = ConsumerServer(accept()).start()
        try:
            plan = trigger(consumer.url)
            async with DeliveryEngine({plan.key: plan}, make_sender("aiohttp")) as engine:
                return await engine.attempt(DeliveryTask(plan.key, event)), consumer.requests
        finally:
            consumer.stop()

    outcome, requests = run(main())
    assert isinstance(outcome, DeadLettered) and outcome.destination is None and requests == []
    assert outcome.reason.startswith("cannot encode event for HTTP: data is not JSON-serializable")


def test_task_record_carries_the_request_and_decodes_the_event_only_when_asked() -> None:
    event = make_event(knativebrokerttl=9, flag=True)
    (task,) = first_attempts(event, plans("json"), 2.5)
    back = DeliveryTask.from_bytes(task.to_bytes())
    assert back.request == task.request and back.event_id == "e-1" and back.due_at == 2.5
    assert back._event is None  # noqa: SLF001 - reading the record did not decode the event
    assert back == task and back.event.get_attributes() == event.get_attributes()
    retried = decide(back, policy(retry=2), 3.0, 503, url=URL).task
    assert retried.attempt == 1 and retried.request is back.request  # retries are not encoded again
    again = DeliveryTask.from_bytes(retried.to_bytes())
    assert again.request == task.request and again.event.get_data() == {"order": 42}


def test_format_1_records_are_still_read() -> None:
    from transforms.codec import event_to_dict

    old = json.dumps({"v": 1, "trigger": TRIGGER, "target": "subscriber", "attempt": 2, "first": 1.0, "due": 4.0,
                      "event": event_to_dict(make_event())}, separators=(",", ":")).encode()
    task = DeliveryTask.from_bytes(old)
    assert (task.trigger, task.attempt, task.due_at, task.request) == (TRIGGER, 2, 4.0, None)
    assert task.event_id == "e-1" and task.event.get_data() == {"order": 42}


# =========================================================================================
# the engine against real consumers
# =========================================================================================


class FakeClock:
    """Engine clock: ``sleep`` advances it instead of waiting."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def trigger(url: str, **delivery: Any) -> TriggerPlan:
    return TriggerPlan(
        namespace="default",
        name="orders",
        broker="default",
        filter=materialize_trigger(None, None),
        filter_spec={},
        subscriber=Destination(uri=url),
        delivery=DeliveryPolicy(**delivery),
    )


@pytest.fixture(params=sender_names())
def sender_name(request: pytest.FixtureRequest) -> str:
    if request.param == "pyreqwest":
        pytest.importorskip("pyreqwest")
    return request.param


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _settle(plan: TriggerPlan, sender_name: str, event: CloudEvent, clock: FakeClock,
                  **kw: Any) -> list[Any]:
    async with DeliveryEngine({TRIGGER: plan}, make_sender(sender_name), clock=clock) as engine:
        return await engine.run_until_settled(engine.task(TRIGGER, event), clock.sleep, **kw)


def test_delivered_once_with_prefer_reply(sender_name: str) -> None:
    async def main() -> None:
        clock = FakeClock()
        async with ConsumerServer(accept(200)) as consumer:
            event = make_event(knativebrokerttl=200)
            outcomes = await _settle(trigger(consumer.url, retry=3), sender_name, event, clock)
            assert [type(o) for o in outcomes] == [Delivered] and outcomes[0].status == 200
            assert len(consumer.requests) == 1
            req = consumer.requests[0]
            assert req.headers["prefer"] == "reply"
            got = req.event
            assert attrs(got) == {k: v for k, v in attrs(event).items() if k != "knativebrokerttl"}
            assert got.get_data() == {"order": 42}
            assert clock.sleeps == []

    run(main())


def test_fail_twice_then_accept_is_delivered_after_exactly_three_requests(sender_name: str) -> None:
    async def main() -> None:
        clock = FakeClock(1000.0)
        async with ConsumerServer(fail_then(2, status=500)) as consumer:
            plan = trigger(consumer.url, retry=3, backoff_policy="linear", backoff_delay=1.0)
            outcomes = await _settle(plan, sender_name, make_event(), clock)
            assert [type(o) for o in outcomes] == [Retrying, Retrying, Delivered]
            assert [o.task.due_at for o in outcomes[:2]] == [1001.0, 1003.0]
            assert [o.status for o in outcomes] == [500, 500, 200]
            assert outcomes[2].task.attempt == 2 and outcomes[2].task.first_attempt_at == 1000.0
            assert len(consumer.requests) == 3
            assert clock.sleeps == [1.0, 2.0]
            assert {r.event.get_id() for r in consumer.requests} == {"e-1"}

    run(main())


def test_400_goes_to_dead_letter_sink_after_one_request(sender_name: str) -> None:
    async def main() -> None:
        clock = FakeClock()
        async with ConsumerServer(always(400, b'{"error":"bad order"}')) as consumer, \
                ConsumerServer(accept(202)) as sink:
            plan = trigger(consumer.url, retry=5, dead_letter_sink=Destination(uri=sink.url))
            outcomes = await _settle(plan, sender_name, make_event(), clock)
            assert [type(o) for o in outcomes] == [DeadLettered, DeadLetterStored]
            assert len(consumer.requests) == 1 and len(sink.requests) == 1
            assert outcomes[0].reason == "status 400 is not retryable"
            stored = sink.requests[0]
            assert "prefer" not in stored.headers
            a = stored.event.get_attributes()
            assert a["knativeerrorcode"] == "400"
            assert a["knativeerrordata"] == b64(b'{"error":"bad order"}')
            assert a["knativeerrordest"] == consumer.url
            assert a["id"] == "e-1" and stored.event.get_data() == {"order": 42}
            assert outcomes[1].status == 202

    run(main())


def test_timeout_is_retried_then_dead_lettered(sender_name: str) -> None:
    async def main() -> None:
        clock = FakeClock()
        async with ConsumerServer(slow(2.0)) as consumer:
            plan = trigger(consumer.url, retry=1, backoff_delay=0.1, timeout=0.2)
            outcomes = await _settle(plan, sender_name, make_event(), clock)
            assert [type(o) for o in outcomes] == [Retrying, DeadLettered]
            assert outcomes[0].status is None and "timed out after 0.2s" in outcomes[0].error
            dead = outcomes[1]
            assert dead.destination is None and dead.next_task is None  # the job's own DLQ takes it
            assert dead.reason.startswith("timed out after 0.2s")
            a = dead.event.get_attributes()
            assert a["knativeerrordest"] == consumer.url and "knativeerrorcode" not in a
            assert len(consumer.requests) == 2

    run(main())


def test_reply_is_routed_with_ttl_decremented(sender_name: str) -> None:
    async def main() -> None:
        clock = FakeClock()
        reply = {"id": "r-1", "source": "/checker", "type": "order.checked", "knativebrokerttl": "99"}
        async with ConsumerServer(reply_event(reply, b'{"valid":true}')) as consumer:
            outcomes = await _settle(trigger(consumer.url), sender_name, make_event(knativebrokerttl=5), clock)
            assert [type(o) for o in outcomes] == [Replied]
            got = outcomes[0].reply
            assert got.get_type() == "order.checked" and got.get_data() == b'{"valid":true}'
            # the incoming event's ttl (5) counts, not whatever the subscriber wrote
            assert got.get_attributes()["knativebrokerttl"] == 4
            assert consumer.requests[0].headers["prefer"] == "reply"

    run(main())


def test_reply_with_ttl_1_is_dead_lettered(sender_name: str) -> None:
    async def main() -> None:
        clock = FakeClock()
        reply = {"id": "r-1", "source": "/loop", "type": "order.created"}
        async with ConsumerServer(reply_event(reply, b"{}")) as consumer, ConsumerServer(accept()) as sink:
            plan = trigger(consumer.url, dead_letter_sink=Destination(uri=sink.url))
            outcomes = await _settle(plan, sender_name, make_event(knativebrokerttl=1), clock)
            assert [type(o) for o in outcomes] == [DeadLettered, DeadLetterStored]
            assert outcomes[0].reason == "knativebrokerttl exhausted" and outcomes[0].delivered
            assert sink.requests[0].event.get_id() == "r-1"
            assert len(consumer.requests) == 1

    run(main())


def test_malformed_reply_over_the_wire(sender_name: str) -> None:
    async def main() -> None:
        clock = FakeClock()
        async with ConsumerServer(reply_event({"source": "/x", "type": "t"}, b"{}")) as consumer:
            outcomes = await _settle(trigger(consumer.url, retry=3), sender_name, make_event(), clock)
            assert [type(o) for o in outcomes] == [DeadLettered]
            assert outcomes[0].delivered and outcomes[0].reason.startswith("malformed reply")
            assert len(consumer.requests) == 1  # the original is not sent again

    run(main())


def test_dead_letter_sink_down_is_stuck_retrying_never_dropped(sender_name: str) -> None:
    async def main() -> None:
        clock = FakeClock(0.0)
        async with ConsumerServer(always(500, b"down")) as consumer, ConsumerServer(always(503)) as sink:
            plan = trigger(consumer.url, retry=1, backoff_policy="linear", backoff_delay=1.0,
                           dead_letter_sink=Destination(uri=sink.url))
            async with DeliveryEngine({TRIGGER: plan}, make_sender(sender_name), clock=clock) as engine:
                outcomes = await engine.run_until_settled(engine.task(TRIGGER, make_event()), clock.sleep)
                assert [type(o) for o in outcomes] == [Retrying, DeadLettered, Retrying, Retrying]
                assert [getattr(o, "stuck", None) for o in outcomes] == [False, None, False, True]
                stuck = outcomes[-1].task
                assert stuck.target == DEAD_LETTER and stuck.attempt == 2
                assert stuck.event.get_attributes()["knativeerrordata"] == b64(b"down")
                assert len(sink.requests) == 2
                # still held; once the sink recovers, the same task is stored
                sink.behaviour = accept(202)
                more = await engine.run_until_settled(stuck, clock.sleep)
                assert [type(o) for o in more] == [DeadLetterStored]
                assert sink.requests[-1].event.get_attributes()["knativeerrorcode"] == "500"

    run(main())


def test_dead_letter_sink_refusing_connections_is_stuck(sender_name: str) -> None:
    async def main() -> None:
        clock = FakeClock(0.0)
        async with ConsumerServer(always(422)) as consumer:
            plan = trigger(consumer.url, dead_letter_sink=Destination(uri=closed_port_url()))
            outcomes = await _settle(plan, sender_name, make_event(), clock)
            assert [type(o) for o in outcomes] == [DeadLettered, Retrying]
            assert outcomes[-1].stuck and outcomes[-1].status is None
            assert outcomes[-1].task.due_at == 0.2 * 2  # default exponential 0.2 s, first retry

    run(main())


@pytest.mark.parametrize("fmt", [None, "binary", "json"])
def test_binary_and_structured_on_the_wire(sender_name: str, fmt: str | None) -> None:
    async def main() -> None:
        clock = FakeClock()
        async with ConsumerServer(accept()) as consumer:
            event = make_event(region="eu", knativebrokerttl=9)
            await _settle(trigger(consumer.url, format=fmt), sender_name, event, clock)
            req = consumer.requests[0]
            if fmt == "json":
                assert req.headers["content-type"].startswith("application/cloudevents+json")
                assert not any(k.startswith("ce-") for k in req.headers)
                doc = json.loads(req.body)
                assert doc["id"] == "e-1" and doc["region"] == "eu" and doc["data"] == {"order": 42}
                assert "knativebrokerttl" not in doc
            else:
                assert req.headers["ce-id"] == "e-1" and req.headers["ce-region"] == "eu"
                assert req.headers["ce-specversion"] == "1.0"
                assert req.headers["content-type"] == "application/json"
                assert "ce-knativebrokerttl" not in req.headers
                assert json.loads(req.body) == {"order": 42}
            assert req.headers["prefer"] == "reply"
            (decoded,) = decode_http(req.headers, req.body)
            assert attrs(decoded) == {k: v for k, v in attrs(event).items() if k != "knativebrokerttl"}
            assert event.get_attributes()["knativebrokerttl"] == 9  # the task's event is untouched

    run(main())


@pytest.mark.parametrize("fmt", ["binary", "json"])
def test_a_task_read_from_its_record_sends_the_carried_request(sender_name: str, fmt: str) -> None:
    async def main() -> None:
        async with ConsumerServer(accept()) as consumer:
            (plan,) = plans(fmt, url=consumer.url)
            (task,) = first_attempts(make_event(knativebrokerttl=9), [plan], 0.0)
            back = DeliveryTask.from_bytes(task.to_bytes())
            async with DeliveryEngine({plan.key: plan}, make_sender(sender_name)) as engine:
                outcome = await engine.attempt(back)
            assert isinstance(outcome, Delivered) and outcome.task is back
            (req,) = consumer.requests
            assert req.body == task.request.body
            assert {k: req.headers[k.lower()] for k in task.request.headers} == task.request.headers
            assert back._event is None  # noqa: SLF001 - a plain delivery never decoded the event

    run(main())


def test_retry_after_is_honoured_when_opted_in(sender_name: str) -> None:
    async def main() -> None:
        clock = FakeClock(0.0)
        async with ConsumerServer(throttle(1, retry_after="3")) as consumer:
            plan = trigger(consumer.url, retry=2, backoff_policy="linear", backoff_delay=0.1, retry_after_max=10.0)
            outcomes = await _settle(plan, sender_name, make_event(), clock)
            assert [type(o) for o in outcomes] == [Retrying, Delivered]
            assert outcomes[0].status == 429 and outcomes[0].task.due_at == 3.0

    run(main())


def test_attempt_many_keeps_order_and_bounds_concurrency(sender_name: str) -> None:
    async def main() -> None:
        async with ConsumerServer(slow(0.05)) as consumer:
            plan = trigger(consumer.url)
            async with DeliveryEngine({TRIGGER: plan}, make_sender(sender_name)) as engine:
                tasks = [engine.task(TRIGGER, make_event(id=f"e-{i}")) for i in range(40)]
                loop = asyncio.get_running_loop()
                start = loop.time()
                outcomes = await engine.attempt_many(tasks, concurrency=8)
                elapsed = loop.time() - start
            assert [o.task.event.get_id() for o in outcomes] == [f"e-{i}" for i in range(40)]
            assert all(isinstance(o, Delivered) for o in outcomes)
            assert sorted(r.event.get_id() for r in consumer.requests) == sorted(f"e-{i}" for i in range(40))
            # 8 in flight at once, never more; 40 requests of 50 ms take at least 5 rounds
            assert consumer.max_in_flight == 8
            assert elapsed >= 0.25

    run(main())


def test_thread_backed_consumer_and_unknown_trigger() -> None:
    consumer = ConsumerServer(accept(201)).start()
    try:
        async def main() -> list[Any]:
            async with DeliveryEngine({TRIGGER: trigger(consumer.url)}, make_sender("aiohttp")) as engine:
                with pytest.raises(DeliveryConfigError):
                    await engine.attempt(DeliveryTask("default/nope", make_event()))
                return await engine.attempt_many([engine.task(TRIGGER, make_event())], 4)

        (outcome,) = run(main())
        assert isinstance(outcome, Delivered) and outcome.status == 201
        assert consumer.requests[0].event.get_id() == "e-1"
    finally:
        consumer.stop()


def test_ref_destinations_resolve_through_ref_urls() -> None:
    from eventing.plan import Ref

    async def main() -> None:
        async with ConsumerServer(accept()) as consumer:
            plan = TriggerPlan(
                namespace="default", name="orders", broker="default",
                filter=materialize_trigger(None, None), filter_spec={},
                subscriber=Destination(uri="/hook", ref=Ref(kind="Service", name="svc", namespace="default")),
                delivery=DeliveryPolicy(),
            )
            engine = DeliveryEngine({TRIGGER: plan}, make_sender("aiohttp"),
                                    ref_urls={"default/svc": consumer.url.rstrip("/")})
            async with engine:
                out = await engine.attempt(engine.task(TRIGGER, make_event()))
            assert isinstance(out, Delivered) and consumer.requests[0].path == "/hook"

    run(main())


# =========================================================================================
# property: nothing is dropped, subscriber retries are bounded
# =========================================================================================

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_results = st.none() | st.sampled_from([200, 202, 204, 301, 400, 404, 408, 409, 413, 429, 500, 502, 503])


@settings(max_examples=200, deadline=None)
@given(
    retry=st.integers(min_value=0, max_value=4),
    with_sink=st.booleans(),
    kind=st.sampled_from(["linear", "exponential"]),
    statuses=st.lists(_results, min_size=30, max_size=30),
)
def test_every_event_ends_delivered_or_dead_lettered_or_still_held(
    retry: int, with_sink: bool, kind: str, statuses: list[int | None]
) -> None:
    p = policy(retry=retry, backoff_policy=kind, backoff_delay=0.5,
               dead_letter_sink=Destination(uri=DLS_URL) if with_sink else None)
    task = DeliveryTask(TRIGGER, make_event(), due_at=0.0)
    now = 0.0
    subscriber_attempts = 0
    for status in statuses:
        now = max(now, task.due_at) + 0.01
        subscriber_attempts += task.target == "subscriber"
        out = decide(task, p, now, status, {}, b"err", None if status else "refused",
                     url=DLS_URL if task.target == DEAD_LETTER else URL)
        if task.target == DEAD_LETTER:
            # a dead-letter task only ever ends stored, or is held for another try
            assert isinstance(out, (DeadLetterStored, Retrying))
        else:
            assert subscriber_attempts <= retry + 1
        if isinstance(out, Retrying):
            assert out.task.due_at >= now and out.task.attempt == task.attempt + 1
            assert out.task.event is task.event  # the very same event is carried on
            task = out.task
        elif isinstance(out, DeadLettered) and out.next_task is not None:
            assert out.event.get_attributes()["knativeerrordest"] == URL
            task = out.next_task
        else:
            assert isinstance(out, (Delivered, DeadLetterStored, DeadLettered))
            if isinstance(out, DeadLettered):
                assert out.destination is None and not with_sink  # the job's own DLQ takes it
            return
