"""RocketMQSources through the bridge and the Flink job, on a real RocketMQ 5 and a real Kafka.

``knflow run`` takes manifests with two RocketMQSources on one RocketMQ topic (two consumer
groups, so each gets every message): one whose sink is a uri, one whose sink is a Broker.
Its start-up output names the bridge command line; the test runs exactly that command
(with the session's proxy endpoint). The bridge writes the direct source's events to its
internal topic ``knflow-rocketmq-<ns>-<name>`` and the other's to the broker topic; the job
reads both and delivers to real HTTP consumers: plain messages wrapped as
``dev.knative.rocketmq.event`` (id = message id, tag, keys and properties as extensions), a
message in the CloudEvents RocketMQ binding unchanged.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import uuid

import pytest

from tests.conftest import REPO
from tests.consumers import ConsumerServer, accept
from tests.eventing.test_rocketmq_bridge import Producer
from tests.pipelines.flink_harness import KnflowJob, summary_rows, wait_until

pytestmark = [pytest.mark.rocketmq, pytest.mark.kafka, pytest.mark.flink, pytest.mark.slow]

TOPIC = "knflow-t-job"  # seeded by tests/conftest.py with its two groups


def bridge_command(output: str, endpoints: str) -> list[str]:
    """The `knflow rocketmq-bridge ...` line `knflow run` printed, runnable here."""
    match = re.search(r"^\s+(knflow rocketmq-bridge .*)$", output, re.MULTILINE)
    assert match, f"knflow run did not name the bridge command:\n{output[-3000:]}"
    words = shlex.split(match.group(1))
    words[words.index("--endpoints") + 1] = endpoints
    return [sys.executable, "-m", "pipelines.cli", *words[1:]]


def test_rocketmq_sources_reach_their_sinks_through_the_bridge_and_the_job(tmp_path, rocketmq, kafka):
    namespace = f"mq{uuid.uuid4().hex[:6]}"
    direct, routed = ConsumerServer(accept()).start(), ConsumerServer(accept()).start()
    manifests = tmp_path / "m"
    manifests.mkdir()
    (manifests / "sources.yaml").write_text(f"""
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: live, namespace: {namespace}}}
---
apiVersion: sources.eventing.knative.dev/v1alpha1
kind: RocketMQSource
metadata: {{name: platform, namespace: {namespace}}}
spec:
  topic: {TOPIC}
  namesrvAddr: {rocketmq.namesrv}
  groupName: knflow-g-job-direct
  initialOffset: earliest
  sink: {{uri: '{direct.url}'}}
---
apiVersion: sources.eventing.knative.dev/v1alpha1
kind: RocketMQSource
metadata: {{name: fed, namespace: {namespace}}}
spec:
  topic: {TOPIC}
  namesrvAddr: {rocketmq.namesrv}
  groupName: knflow-g-job-broker
  initialOffset: earliest
  sink: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: live}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: gifts-and-likes, namespace: {namespace}}}
spec:
  broker: live
  filters: [{{any: [{{exact: {{rocketmqtag: gift}}}}, {{exact: {{type: com.live.like}}}}]}}]
  subscriber: {{uri: '{routed.url}'}}
""")
    job = KnflowJob(manifests, ["--bootstrap-servers", kafka.bootstrap, "--job-name", namespace,
                                "--checkpoint-interval", "2", "--checkpoint-dir", str(tmp_path / "ckpt")],
                    tmp_path / "job.log")
    bridge = None
    producer = Producer(rocketmq.endpoints, TOPIC)
    try:
        ids = [producer.send(b'{"coins": %d}' % n, tag="gift", keys=(f"room-{n}",), properties={"Room-Id": f"r{n}"})
               for n in range(3)]
        producer.send(b'{"likes": 1}', properties={
            "CE_specversion": "1.0", "CE_id": f"ce-{namespace}", "CE_source": "/platform", "CE_type": "com.live.like",
            "CE_contenttype": "application/json", "CE_room": "r9"})
        job.wait_running()
        output = job.output()
        assert f"RocketMQSource {namespace}/platform -> Kafka topic knflow-rocketmq-{namespace}-platform, then " \
               f"{direct.url}" in output
        command = bridge_command(output, rocketmq.endpoints)
        assert command[3:] == ["rocketmq-bridge", str(manifests), "--endpoints", rocketmq.endpoints,
                               "--bootstrap-servers", kafka.bootstrap]
        bridge = subprocess.Popen(command, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                                  stdout=open(tmp_path / "bridge.log", "w"), stderr=subprocess.STDOUT,
                                  start_new_session=True)
        wait_until(lambda: len(direct.requests) >= 4 and len(routed.requests) >= 4, 150,
                   "the RocketMQ messages at both consumers")
    finally:
        producer.close()
        if bridge is not None and bridge.poll() is None:
            bridge.send_signal(signal.SIGTERM)
            try:
                bridge.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(bridge.pid, signal.SIGKILL)
        output = job.stop()
        direct.stop()
        routed.stop()
    for consumer in (direct, routed):
        by_id = {r.headers["ce-id"]: r for r in consumer.requests}
        assert sorted(by_id) == sorted(ids + [f"ce-{namespace}"]) and len(consumer.requests) == 4
        for n, message_id in enumerate(ids):
            headers = by_id[message_id].headers
            assert headers["ce-type"] == "dev.knative.rocketmq.event"
            assert headers["ce-source"].startswith(f"/apis/v1/namespaces/{namespace}/rocketmqsources/")
            assert headers["ce-source"].endswith(f"#{TOPIC}")
            assert (headers["ce-rocketmqtag"], headers["ce-rocketmqkeys"], headers["ce-rocketmqpropertyroomid"]) == (
                "gift", f"room-{n}", f"r{n}")
            assert headers["ce-time"] and by_id[message_id].body == b'{"coins": %d}' % n
        like = by_id[f"ce-{namespace}"]  # a CloudEvent in the RocketMQ binding: unchanged
        assert (like.headers["ce-type"], like.headers["ce-source"], like.headers["ce-room"]) == (
            "com.live.like", "/platform", "r9")
        assert like.headers["content-type"] == "application/json" and json.loads(like.body) == {"likes": 1}
        assert not any(name.startswith("ce-rocketmq") for name in like.headers)
    assert {r.headers["ce-source"] for r in direct.requests if r.headers["ce-type"] != "com.live.like"} == {
        f"/apis/v1/namespaces/{namespace}/rocketmqsources/platform#{TOPIC}"}
    assert {r.headers["ce-source"] for r in routed.requests if r.headers["ce-type"] != "com.live.like"} == {
        f"/apis/v1/namespaces/{namespace}/rocketmqsources/fed#{TOPIC}"}
    rows = summary_rows(output)
    assert rows[f"{namespace}/RocketMQSource:platform"]["delivered"] == 4
    assert rows[f"{namespace}/gifts-and-likes"]["delivered"] == 4
