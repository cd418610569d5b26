"""The broker ingress over a REAL Kafka broker: every status code, and what lands in Kafka."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Callable

import pytest
import requests
from aiohttp import web

from eventing.ingress import Ingress, KafkaWriter
from tests.plans import broker_yaml, plan_from_yaml
from transforms.codec import decode_kafka

pytestmark = pytest.mark.kafka


class AppThread:
    """Serve an aiohttp app on 127.0.0.1 (ephemeral port) from a background thread; or, with
    ``make_runner``, whatever runner it makes on the thread's loop (a low-level server)."""

    def __init__(self, app: web.Application | None = None,
                 make_runner: Callable[[asyncio.AbstractEventLoop], web.BaseRunner] | None = None) -> None:
        self.make_runner = make_runner or (lambda _loop: web.AppRunner(app))
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.runner = self.make_runner(self.loop)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def __enter__(self) -> str:
        self.thread.start()
        self.ready.wait(10)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def consume(bootstrap: str, topic: str, count: int, timeout: float = 20.0, ids=None):
    """Records of ``topic`` from the start: at least ``count``, or until every ``ce_id`` in ``ids`` was seen."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=1000)
    records, deadline = [], time.time() + timeout

    def done() -> bool:
        if ids is not None:
            return set(ids) <= {dict(r.headers).get("ce_id") for r in records}
        return len(records) >= count

    try:
        while not done() and time.time() < deadline:
            for message in consumer:
                records.append(message)
                if done():
                    break
    finally:
        consumer.close()
    return records


@pytest.fixture(scope="module")
def ingress(kafka):
    namespace = kafka.unique_topic("ns")
    plan = plan_from_yaml(broker_yaml("live", namespace))
    from eventing.kafka_topics import ensure_topics

    ensure_topics(kafka.bootstrap, [plan.brokers[0].topic], partitions=2)
    writer = KafkaWriter(kafka.bootstrap)
    server = Ingress(plan, writer, max_body=4096, clock=lambda: 1_700_000_000.0)
    with AppThread(server.app()) as url:
        yield url + f"/{namespace}/live", plan.brokers[0].topic, server
    writer.close()


BINARY = {"ce-specversion": "1.0", "ce-id": "b-1", "ce-source": "/rooms/7", "ce-type": "com.live.like",
          "ce-partitionkey": "room-7", "content-type": "application/json"}


def test_binary_event_is_stored_and_round_trips(ingress, kafka):
    url, topic, _ = ingress
    response = requests.post(url, headers=BINARY, data=b'{"count": 3}', timeout=10)
    assert response.status_code == 202, response.text
    [record] = [r for r in consume(kafka.bootstrap, topic, 1, ids=[b"b-1"]) if dict(r.headers).get("ce_id") == b"b-1"]
    assert record.key == b"room-7"
    headers = dict(record.headers)
    assert headers["ce_knativebrokerttl"] == b"255"
    assert headers["ce_knativearrivaltime"] == b"2023-11-14T22:13:20Z"
    event = decode_kafka(record.headers, record.value)
    assert (event.get_id(), event.get_type(), event.get_source(), event.get_data()) == ("b-1", "com.live.like", "/rooms/7", {"count": 3})


def test_partition_keys_land_where_java_clients_put_them(ingress, kafka):
    """The same partition key reaches the same partition whoever writes it: the ingress
    hashes keys with murmur2 as the Java client does (Knative's broker, the job's own Kafka
    sink writing replies, kafka-python), not with librdkafka's default CRC32."""
    from kafka.partitioner.default import murmur2

    url, topic, _ = ingress
    keys = [f"room-{n}" for n in range(12)]
    for n, key in enumerate(keys):
        headers = dict(BINARY, **{"ce-id": f"key-{n}", "ce-partitionkey": key})
        assert requests.post(url, headers=headers, data=b"{}", timeout=10).status_code == 202
    ids = [f"key-{n}".encode() for n in range(12)]
    records = {dict(r.headers)["ce_id"]: r for r in consume(kafka.bootstrap, topic, 12, ids=ids)
               if dict(r.headers).get("ce_id") in ids}
    partitions = {records[i].key.decode(): records[i].partition for i in ids}
    assert partitions == {key: (murmur2(key.encode()) & 0x7FFFFFFF) % 2 for key in keys}


def test_event_without_data_or_key_is_stored(ingress, kafka):
    url, topic, _ = ingress
    headers = {k: v for k, v in BINARY.items() if k not in ("ce-partitionkey", "content-type")}
    response = requests.post(url, headers=dict(headers, **{"ce-id": "empty-1"}), data=b"", timeout=10)
    assert response.status_code == 202, response.text
    [record] = [r for r in consume(kafka.bootstrap, topic, 1, ids=[b"empty-1"]) if dict(r.headers).get("ce_id") == b"empty-1"]
    assert record.key is None and decode_kafka(record.headers, record.value).get_data() is None


def test_structured_and_batched_events_are_stored(ingress, kafka):
    url, topic, server = ingress
    before = server.accepted
    doc = {"specversion": "1.0", "id": "s-1", "source": "/x", "type": "t", "data": {"a": 1}}
    r = requests.post(url, data=json.dumps(doc), headers={"content-type": "application/cloudevents+json"}, timeout=10)
    assert r.status_code == 202, r.text
    batch = [dict(doc, id="batch-1"), dict(doc, id="batch-2")]
    r = requests.post(url, data=json.dumps(batch), headers={"content-type": "application/cloudevents-batch+json"}, timeout=10)
    assert r.status_code == 202, r.text
    assert server.accepted - before == 3
    ids = {dict(m.headers).get("ce_id") for m in consume(kafka.bootstrap, topic, 3, ids=[b"s-1", b"batch-1", b"batch-2"])}
    assert {b"s-1", b"batch-1", b"batch-2"} <= ids


@pytest.mark.parametrize("headers,body,status,needle", [
    ({k: v for k, v in BINARY.items() if k != "ce-id"}, b"{}", 400, "id"),
    (dict(BINARY, **{"ce-specversion": "0.3"}), b"{}", 400, "specversion"),
    ({"content-type": "application/json"}, b"{}", 400, "not a CloudEvent"),
    ({"content-type": "application/cloudevents+json"}, b"{not json", 400, "not valid JSON"),
    (dict(BINARY, **{"ce-knativebrokerttl": "0"}), b"{}", 400, "knativebrokerttl is exhausted"),
    (BINARY, b"x" * 5000, 413, "exceeds the limit"),
])
def test_bad_requests_are_rejected_with_a_reason(ingress, headers, body, status, needle):
    url, _, _ = ingress
    response = requests.post(url, headers=headers, data=body, timeout=10)
    assert response.status_code == status and needle in response.text, response.text


def test_routes_and_methods(ingress):
    url, _, _ = ingress
    base = url.rsplit("/", 2)[0]
    assert requests.post(base + "/nope/live", headers=BINARY, data=b"{}", timeout=10).status_code == 404
    got = requests.get(url, timeout=10)
    assert got.status_code == 405 and "POST" in got.headers["Allow"]
    assert requests.put(url, data=b"{}", timeout=10).status_code == 405
    options = requests.options(url, timeout=10)
    assert options.status_code == 200 and "POST" in options.headers["Allow"]
    assert requests.get(base + "/healthz", timeout=10).status_code == 200
    assert requests.get(base + "/readyz", timeout=10).status_code == 200


def test_kafka_down_gives_503_and_never_202(kafka):
    """A broker that is not running: nothing is acknowledged; /readyz says not ready."""
    from tests.conftest import free_port_pair

    dead = f"127.0.0.1:{free_port_pair()}"
    plan = plan_from_yaml(broker_yaml("live", "down"))
    writer = KafkaWriter(dead, timeout_s=1.0)
    with AppThread(Ingress(plan, writer).app()) as url:
        for _ in range(2):
            response = requests.post(url + "/down/live", headers=BINARY, data=b"{}", timeout=30)
            assert response.status_code == 503, response.text
        assert requests.get(url + "/readyz", timeout=30).status_code == 503
    writer.close()
