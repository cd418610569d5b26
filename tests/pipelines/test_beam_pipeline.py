"""The Beam pipeline on the DirectRunner, delivering to REAL local HTTP consumers.

Each test scripts the input (Create or TestStream), asserts whole outputs with
``assert_that`` and then asserts what every consumer received, how many times.
"""
from __future__ import annotations

import base64
import json
from collections import Counter, defaultdict

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from pipelines.beam_pipeline import BrokerDataflow
from pipelines.runners import run_beam_direct
from tests.consumers import ConsumerServer, Received, Reply, accept, always, closed_port_url, reply_event, slow
from tests.plans import broker_yaml, plan_from_yaml, trigger_yaml
from transforms.records import RawRecord


def event(n: int, type_: str = "com.live.gift.sent", **ext) -> RawRecord:
    doc = {"specversion": "1.0", "id": f"e{n}", "source": "/rooms/1", "type": type_,
           "datacontenttype": "application/json", "data": {"n": n, "coins": n * 10}}
    doc.update(ext)
    return RawRecord.structured(json.dumps(doc), f"test:{n}")


def fail_each_event(times: int, status: int = 503):
    """Per event id: answer ``status`` to its first ``times`` deliveries, then 200."""
    seen: Counter[str] = Counter()

    def behaviour(req: Received) -> Reply:
        key = req.headers.get("ce-id", "")
        seen[key] += 1
        return Reply(status) if seen[key] <= times else Reply(200)

    return behaviour


def received_ids(consumer: ConsumerServer) -> Counter[str]:
    return Counter(r.headers.get("ce-id") for r in consumer.requests)


@pytest.fixture
def servers():
    started: list[ConsumerServer] = []

    def start(behaviour=None) -> ConsumerServer:
        server = ConsumerServer(behaviour or accept()).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()




def test_filters_route_each_event_once_and_bad_records_are_dead_lettered(servers):
    gifts, everything = servers(), servers()
    plan = plan_from_yaml(broker_yaml() + trigger_yaml("gifts", gifts.url, "[{exact: {type: com.live.gift.sent}}]")
                          + trigger_yaml("all", everything.url, "[{cel: 'data.n >= 0'}]"))
    records = [event(n, "com.live.gift.sent" if n % 2 else "com.live.like") for n in range(20)]
    records.append(RawRecord.structured(b'{"specversion": "1.0", "id": "x"}', "test:bad"))
    records.append(RawRecord(b"\xff\xfe", (), "test:binary-garbage"))
    with TestPipeline(options=PipelineOptions(runner="DirectRunner")) as p:
        out = p | beam.Create(records) | BrokerDataflow(plan.brokers[0])
        assert_that(out.delivered | "d" >> beam.Map(lambda r: (r.trigger, r.event_id, r.status, r.attempts)),
                    equal_to([("ns/gifts", f"e{n}", 200, 1) for n in range(1, 20, 2)]
                             + [("ns/all", f"e{n}", 200, 1) for n in range(20)]), label="delivered")
        assert_that(out.dead_letters | "dl" >> beam.Map(lambda d: (d.origin, d.reason.split(":")[0])),
                    equal_to([("test:bad", "not a valid CloudEvent"), ("test:binary-garbage", "not a valid CloudEvent")]),
                    label="dead letters")
    assert received_ids(gifts) == Counter({f"e{n}": 1 for n in range(1, 20, 2)})
    assert received_ids(everything) == Counter({f"e{n}": 1 for n in range(20)})
    assert all(r.headers.get("prefer") == "reply" for r in gifts.requests)


def test_retryable_failures_are_retried_until_delivered(servers):
    flaky = servers(fail_each_event(2, status=503))
    plan = plan_from_yaml(broker_yaml(delivery="retry: 3\nbackoffDelay: PT0.01S") + trigger_yaml("t", flaky.url))
    summary = run_beam_direct(plan.brokers[0], [event(n) for n in range(5)])
    assert received_ids(flaky) == Counter({f"e{n}": 3 for n in range(5)})
    assert summary["triggers"]["ns/t"] == {"matched": 5, "delivered": 5, "retried": 10, "dead_lettered": 0, "replies": 0}


def test_non_retryable_400_goes_to_dead_letter_sink_with_error_extensions(servers):
    bad = servers(always(400, body=b"room closed"))
    dls = servers(accept(202))
    plan = plan_from_yaml(broker_yaml() + trigger_yaml("t", bad.url, delivery=f"retry: 5\nbackoffDelay: PT0.01S\ndeadLetterSink: {{uri: '{dls.url}'}}"))
    with TestPipeline(options=PipelineOptions(runner="DirectRunner")) as p:
        out = p | beam.Create([event(1), event(2)]) | BrokerDataflow(plan.brokers[0])
        assert_that(out.delivered, equal_to([]), label="none delivered")
        assert_that(out.dead_letters | beam.Map(lambda d: (d.event_id, d.stored, d.destination, d.reason)),
                    equal_to([(f"e{n}", True, dls.url, "status 400 is not retryable") for n in (1, 2)]), label="dl")
    assert received_ids(bad) == Counter({"e1": 1, "e2": 1})  # 400 is not retried
    assert sorted(received_ids(dls)) == ["e1", "e2"]
    for req in dls.requests:
        assert req.headers["ce-knativeerrordest"] == bad.url
        assert req.headers["ce-knativeerrorcode"] == "400"
        assert base64.b64decode(req.headers["ce-knativeerrordata"]) == b"room closed"


def test_timeouts_are_retried_then_dead_lettered_without_status(servers):
    sleepy = servers(slow(1.0))
    dls = servers(accept(202))
    plan = plan_from_yaml(broker_yaml() + trigger_yaml(
        "t", sleepy.url, delivery=f"retry: 1\nbackoffDelay: PT0.01S\ntimeout: PT0.2S\ndeadLetterSink: {{uri: '{dls.url}'}}"))
    summary = run_beam_direct(plan.brokers[0], [event(1)])
    assert received_ids(sleepy) == Counter({"e1": 2})
    assert summary["triggers"]["ns/t"]["dead_lettered"] == 1
    [req] = dls.requests
    assert "ce-knativeerrorcode" not in req.headers and req.headers["ce-knativeerrordest"] == sleepy.url


def test_no_dead_letter_sink_keeps_the_event_in_the_job_output(servers, tmp_path):
    plan = plan_from_yaml(broker_yaml() + trigger_yaml("t", closed_port_url(), delivery="retry: 1\nbackoffDelay: PT0.01S"))
    out_file = tmp_path / "dl.jsonl"
    summary = run_beam_direct(plan.brokers[0], [event(7)], dead_letter_file=str(out_file))
    assert summary["triggers"]["ns/t"]["dead_lettered"] == 1
    [line] = out_file.read_text().splitlines()
    doc = json.loads(line)
    assert doc["event_id"] == "e7" and doc["trigger"] == "ns/t" and doc["stored"] is False
    assert doc["event"]["knativeerrordest"].startswith("http://127.0.0.1:")


def test_replies_are_routed_again_with_the_hop_counter(servers):
    notify = servers()
    moderation = servers(reply_event({"id": "r1", "source": "/moderation", "type": "com.live.comment.flagged"}, b'{"ok": true}'))
    plan = plan_from_yaml(broker_yaml()
                          + trigger_yaml("moderation", moderation.url, "[{exact: {type: com.live.comment.posted}}]")
                          + trigger_yaml("notify", notify.url, "[{exact: {type: com.live.comment.flagged}}]"))
    with TestPipeline(options=PipelineOptions(runner="DirectRunner")) as p:
        out = p | beam.Create([event(1, "com.live.comment.posted")]) | BrokerDataflow(plan.brokers[0])
        assert_that(out.replies | beam.Map(lambda r: (r.trigger, r.event_id, r.reply.get_type())),
                    equal_to([("ns/moderation", "e1", "com.live.comment.flagged")]), label="replies")
        assert_that(out.delivered | "d" >> beam.Map(lambda r: (r.trigger, r.event_id)),
                    equal_to([("ns/moderation", "e1"), ("ns/notify", "r1")]), label="delivered")
    [req] = notify.requests
    assert req.headers["ce-type"] == "com.live.comment.flagged"
    assert "ce-knativebrokerttl" not in req.headers  # stripped before delivery, as Knative does


def test_hop_counter_stops_a_reply_loop(servers):
    # The consumer answers every event with an event its own trigger matches: a loop.
    echo = servers(reply_event({"id": "loop", "source": "/echo", "type": "com.loop"}, b"{}"))
    dls = servers(accept(202))
    plan = plan_from_yaml(broker_yaml() + trigger_yaml(
        "echo", echo.url, "[{exact: {type: com.loop}}]", delivery=f"deadLetterSink: {{uri: '{dls.url}'}}"))
    summary = run_beam_direct(plan.brokers[0], [event(1, "com.loop", knativebrokerttl=5)])
    # ttl 5 -> replies carry 4, 3, 2, 1; the reply that would carry 0 is dead-lettered.
    assert len(echo.requests) == 5
    assert summary["triggers"]["ns/echo"]["replies"] == 4
    assert summary["triggers"]["ns/echo"]["dead_lettered"] == 1
    [dead] = dls.requests
    assert dead.headers["ce-id"] == "loop"


def test_ordered_trigger_keeps_per_key_order_under_retries(servers):
    ordered = servers(fail_each_event(1, status=500))
    plan = plan_from_yaml(broker_yaml() + trigger_yaml(
        "o", ordered.url, delivery="retry: 2\nbackoffDelay: PT0.02S",
        annotations="{kafka.eventing.knative.dev/delivery.order: ordered}"))
    records = [event(n, partitionkey=f"room-{n % 3}") for n in range(12)]
    run_beam_direct(plan.brokers[0], records)
    first_success: dict[str, list[int]] = defaultdict(list)
    seen: Counter[str] = Counter()
    for req in ordered.requests:
        seen[req.headers["ce-id"]] += 1
        if seen[req.headers["ce-id"]] == 2:  # the delivery that succeeded
            first_success[req.headers["ce-partitionkey"]].append(int(req.headers["ce-id"][1:]))
    assert {k: v for k, v in first_success.items()} == {f"room-{k}": [n for n in range(12) if n % 3 == k] for k in range(3)}
    # Each key's next event waited for the previous outcome: attempts never interleave within a key.
    per_key = defaultdict(list)
    for req in ordered.requests:
        per_key[req.headers["ce-partitionkey"]].append(req.headers["ce-id"])
    for ids in per_key.values():
        assert ids == [i for i in ids[::2] for _ in range(2)]


def test_test_stream_with_watermarks_delivers_every_element(servers):
    consumer = servers()
    plan = plan_from_yaml(broker_yaml() + trigger_yaml("t", consumer.url, "[{prefix: {type: com.live.}}]"))
    stream = (TestStream()
              .add_elements([event(1), event(2, "org.other")])
              .advance_watermark_to(10)
              .add_elements([event(3, "com.live.like")])
              .advance_watermark_to_infinity())
    options = PipelineOptions(runner="DirectRunner")
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        out = p | stream | BrokerDataflow(plan.brokers[0])
        assert_that(out.delivered | beam.Map(lambda r: r.event_id), equal_to(["e1", "e3"]))
    assert received_ids(consumer) == Counter({"e1": 1, "e3": 1})
