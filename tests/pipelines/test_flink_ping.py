"""PingSources run inside the Flink job on the embedded mini-cluster, across a stop with a
savepoint and a restore.

Two PingSources tick every second: one with a uri sink (delivered directly), one feeding
a Broker whose trigger filters on the ping's extension. Each tick is one event of type
``dev.knative.sources.ping`` with the source's data and a stable id; consecutive ticks
are one second apart. The job is stopped with a savepoint (``--savepoint-dir``), stays
down long enough for ticks to be missed, and is restored from the savepoint: no tick is
delivered twice, the ticks of the recovery window after the savepoint's cursor are
emitted late, and the missed ticks older than the grace are skipped, as the README says.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from datetime import datetime, timedelta

import pytest

from pipelines.flink_ping import recovery_window_s
from tests.consumers import ConsumerServer, accept
from tests.pipelines.flink_harness import KnflowJob, latest_checkpoint, wait_until
from transforms.sources import DEFAULT_GRACE

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.slow]

CHECKPOINT_INTERVAL = 1.0


def tick_times(consumer: ConsumerServer) -> list[datetime]:
    return [datetime.fromisoformat(r.headers["ce-time"].replace("Z", "+00:00")) for r in consumer.requests]


def test_ping_sources_tick_in_the_job_and_resume_from_a_savepoint(kafka, tmp_path):
    namespace = f"ping{uuid.uuid4().hex[:6]}"
    direct, beats = ConsumerServer(accept()).start(), ConsumerServer(accept(202)).start()
    manifest = tmp_path / "m" / "ping.yaml"
    manifest.parent.mkdir()
    manifest.write_text(f"""
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: live, namespace: {namespace}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: beats, namespace: {namespace}}}
spec:
  broker: live
  filters: [{{exact: {{type: dev.knative.sources.ping, room: r1}}}}]
  subscriber: {{uri: '{beats.url}'}}
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {{name: heartbeat, namespace: {namespace}}}
spec:
  schedule: '@every 1s'
  contentType: application/json
  data: '{{"beat": 1}}'
  sink: {{uri: '{direct.url}'}}
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {{name: room, namespace: {namespace}}}
spec:
  schedule: '@every 1s'
  dataBase64: aGk=
  ceOverrides: {{extensions: {{room: r1}}}}
  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: live}}}}
""")
    checkpoints = tmp_path / "ckpt"
    common = ["--bootstrap-servers", kafka.bootstrap, "--job-name", namespace,
              "--checkpoint-interval", str(CHECKPOINT_INTERVAL), "--checkpoint-dir", str(checkpoints),
              "--savepoint-dir", str(tmp_path / "savepoints")]
    first = KnflowJob(manifest.parent, common, tmp_path / "first.log")
    second = None
    try:
        job_id = first.wait_running()
        wait_until(lambda: len(direct.requests) >= 4 and len(beats.requests) >= 3, 120, "ticks at both sinks")
        # checkpoints go on while the driver source idles (it never finishes)
        wait_until(lambda: latest_checkpoint(checkpoints, job_id) >= 2, 60, "two completed checkpoints")
        output = first.stop()
        match = re.search(r"job stopped with a savepoint: (\S+)", output)
        assert match, output[-3000:]
        savepoint = match.group(1)
        # sorted: the sink is delivered unordered (each tick its own request, as Knative's
        # PingSource sends them), so ticks are compared by their time, not by arrival
        before = sorted(tick_times(direct))
        stopped_at = time.time()
        assert "PingSource " + namespace + "/heartbeat" in output  # the run's summary lists the sources

        # What the direct sink got: one event per tick, 1 s apart, stable and distinct ids.
        requests = list(direct.requests)
        assert {r.headers["ce-type"] for r in requests} == {"dev.knative.sources.ping"}
        assert {r.headers["ce-source"] for r in requests} == {f"/apis/v1/namespaces/{namespace}/pingsources/heartbeat"}
        assert all(json.loads(r.body) == {"beat": 1} for r in requests)
        assert len({r.headers["ce-id"] for r in requests}) == len(requests)
        assert [b - a for a, b in zip(before, before[1:])] == [timedelta(seconds=1)] * (len(before) - 1)
        # Through the broker: the trigger's filter matched the source's ceOverrides extension.
        room = sorted(tick_times(beats))
        assert {r.headers["ce-source"] for r in beats.requests} == {f"/apis/v1/namespaces/{namespace}/pingsources/room"}
        assert all(r.body == b"hi" and r.headers["ce-room"] == "r1" for r in beats.requests)
        assert [b - a for a, b in zip(room, room[1:])] == [timedelta(seconds=1)] * (len(room) - 1)

        # Down long enough that ticks fall outside both the recovery window and the grace.
        window = timedelta(seconds=recovery_window_s(CHECKPOINT_INTERVAL))
        down = window.total_seconds() + 5
        time.sleep(max(0.0, down - (time.time() - stopped_at)))
        second = KnflowJob(manifest.parent, [*common, "--restore-from", savepoint], tmp_path / "second.log")
        second.wait_running()
        wait_until(lambda: len(direct.requests) >= len(before) + window.total_seconds() + 3, 120, "ticks after the restore")
        time.sleep(2)
    finally:
        first.stop()
        if second is not None:
            second.stop()
        direct.stop()
        beats.stop()

    times = tick_times(direct)
    assert len(times) == len(set(times)), "a tick was delivered twice"
    after = sorted(times[len(before):])
    assert all(t > before[-1] for t in after)
    # The recovery window after the savepoint's cursor: every tick, late.
    expected_head = [before[-1] + timedelta(seconds=n) for n in range(1, int(window.total_seconds()) + 1)]
    assert after[:len(expected_head)] == expected_head
    # Then the missed ticks older than the grace were skipped: a gap, then on time again.
    tail = after[len(expected_head):]
    assert tail and tail[0] - expected_head[-1] > timedelta(seconds=1)
    assert [b - a for a, b in zip(tail, tail[1:])] == [timedelta(seconds=1)] * (len(tail) - 1)
    assert tail[0] >= before[-1] + timedelta(seconds=down) - DEFAULT_GRACE
    assert len({r.headers["ce-id"] for r in direct.requests}) == len(direct.requests)
