"""Requests the JavaScript CloudEvents SDK made, replayed to ``knflow ingress`` (granian) and a
real Kafka: the same answer, and the same records, as when they were recorded.

``data/cloudevents_js_10_0_0.json`` holds what the SDK's HTTP emitter sent (npm
``cloudevents`` 10.0.0 on Node 20: binary and structured mode, extension types, time
texts, JSON/text/binary data, non-ASCII text, a batch), the status the ingress answered
and the records it stored. The refusals are the SDK's doing (README, Ingress): a latin-1
header value, an integer beyond CloudEvents' 32 bits. String data sent unquoted under a JSON
content type and bytes labelled JSON are stored as sent, as Knative's brokers store them
(they were refused until the ingress stopped checking payloads; the three cases' answers and
records were updated then)."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import requests

from eventing.kafka_topics import ensure_topics
from tests.eventing.test_ingress import consume
from tests.eventing.test_ingress_http import serving
from tests.plans import broker_yaml, plan_from_yaml

pytestmark = pytest.mark.kafka

RECORDED = json.loads((Path(__file__).parent / "data" / "cloudevents_js_10_0_0.json").read_text())
#: set by the ingress per request: not part of what the SDK sent
_PER_RUN = {"ce_knativearrivaltime"}


def _sent_ids(case: dict) -> set[bytes]:
    """The ids of the events a recorded request carried (binary: ce-id; else the JSON body's)."""
    headers = {name.lower(): value for name, value in case["headers"]}
    if "ce-id" in headers:
        return {headers["ce-id"].encode()}
    body = json.loads(base64.b64decode(case["body_b64"]))
    return {str(event["id"]).encode() for event in (body if isinstance(body, list) else [body])}


@pytest.fixture(scope="module")
def granian_ingress(kafka, tmp_path_factory):
    namespace = kafka.unique_topic("ns")
    plan = plan_from_yaml(broker_yaml("live", namespace))
    ensure_topics(kafka.bootstrap, [plan.brokers[0].topic], partitions=1)
    with serving("granian", plan, kafka.bootstrap, tmp_path_factory.mktemp("ingress")) as server:
        yield f"http://127.0.0.1:{server.port}/{namespace}/live", plan.brokers[0].topic


def test_the_recording_covers_both_modes_refusals_and_a_batch():
    cases = RECORDED["cases"]
    assert {c["mode"] for c in cases} == {"binary", "structured", "batch"}
    assert sum(c["status"] == 202 for c in cases) >= 30 and sum(c["status"] == 400 for c in cases) >= 2


@pytest.mark.parametrize("case", RECORDED["cases"], ids=lambda c: c["name"])
def test_a_recorded_js_sdk_request_gets_the_same_answer_and_records(granian_ingress, kafka, case):
    url, topic = granian_ingress
    # requests sends a header value as latin-1 bytes, as Node wrote these (one is raw latin-1)
    headers = {name: value for name, value in case["headers"]}
    response = requests.post(url, headers=headers, data=base64.b64decode(case["body_b64"]), timeout=30)
    assert response.status_code == case["status"], response.text
    if case["status"] != 202:  # refused: nothing of it stored
        stored_ids = {dict(r.headers).get("ce_id") for r in consume(kafka.bootstrap, topic, 10**6, timeout=3)}
        assert _sent_ids(case) and not _sent_ids(case) & stored_ids
        return
    expected = {r["id"]: r for r in case["stored"]}
    ids = [i.encode() for i in expected]
    got = {}
    for record in consume(kafka.bootstrap, topic, len(ids), ids=ids):
        record_id = dict(record.headers).get("ce_id", b"").decode()
        if record_id in expected:
            got[record_id] = record  # the last one: each case's ids are unique to it
    assert set(got) == set(expected)
    for record_id, want in expected.items():
        record = got[record_id]
        headers = {k: v.decode("utf-8") for k, v in record.headers if k not in _PER_RUN}
        assert headers == want["headers"], record_id
        assert record.value == base64.b64decode(want["value_b64"]), record_id
