"""End to end on Flink's embedded mini-cluster: ingress -> Kafka -> the knflow job -> real
HTTP consumers, with retries, dead letters, replies and ordered delivery.

One job serves every assertion of the main test (a job start costs ~30 s here). It runs
with ``--cel-native``: its CEL trigger (``vip``) is evaluated by the C build in the job's
Python worker, which says so in the mini-cluster's Python log.
"""
from __future__ import annotations

import json
import os
import random
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from eventing.ingress import Ingress, KafkaWriter
from eventing.kafka_topics import ensure_topics
from pipelines.flink_job import LOCAL_JVM_ARGS, REPO
from tests.consumers import ConsumerServer, Received, Reply, accept, always, reply_event
from tests.pipelines.flink_harness import AppThread, KnflowJob, post_all, summary_rows, wait_until
from tests.plans import plan_from_yaml
from tests.processes import cmdline, thread_cpus

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.slow]

ROOMS = [f"room-{n}" for n in range(5)]
# Every 25th event is sent with what a broker must not alter (issue 10, Fidelity): a time
# with nanoseconds and a +05:45 offset, a percent-encoded header, extensions, and a JSON
# payload that a parse and re-serialization would change (1.10, a 30-digit integer, escapes,
# spaces, non-ASCII).
NANO = "2026-11-29T10:00:20.123456789+05:45"
FIDELITY_HEADERS = {"ce-time": NANO, "ce-subject": "caf%C3%A9", "ce-boolext": "true", "ce-intext": "-2147483648",
                    "ce-timeext": "2026-11-29t10:00:20.000000001z"}
REPLY = b'{"score": 0.50, "n": 18446744073709551616, "e": "\\u00e9"}'


def fidelity_payload(room: str, level: int) -> bytes:
    return (b'{ "room": "%s", "level": %d, "price": 1.10, "big": 123456789012345678901234567890,\n'
            b'  "e": "caf\\u00e9 \xc3\xa9" }' % (room.encode(), level))
TYPES = ["com.live.gift.sent", "com.live.like", "com.live.comment.posted", "com.live.viewer.joined"]


def fail_first_per_event(status: int = 503):
    seen: Counter[str] = Counter()

    def behaviour(req: Received) -> Reply:
        seen[req.headers.get("ce-id", "")] += 1
        return Reply(status) if seen[req.headers.get("ce-id", "")] == 1 else Reply(200)

    return behaviour


def manifests(namespace: str, urls: dict[str, str]) -> str:
    def trigger(name, filters, url, delivery="", annotations=""):
        out = (f"---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
               + (f"  annotations: {annotations}\n" if annotations else "")
               + f"spec:\n  broker: live\n  filters: {filters}\n  subscriber: {{uri: '{url}'}}\n")
        return out + (f"  delivery: {delivery}\n" if delivery else "")

    return (f"apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: live, namespace: {namespace}}}\n"
            + trigger("gifts", "[{exact: {type: com.live.gift.sent}}]", urls["gifts"])
            + trigger("vip", "[{cel: 'data.level >= 30'}]", urls["vip"])
            + trigger("structured", "[{exact: {type: com.live.like}}]", urls["structured"], "{format: json}")
            + trigger("likes", "[{exact: {type: com.live.like}}]", urls["flaky"],
                      "{retry: 3, backoffDelay: PT0.2S}")
            + trigger("broken", "[{exact: {type: com.live.viewer.joined}}]", urls["bad"],
                      f"{{retry: 2, backoffDelay: PT0.1S, deadLetterSink: {{uri: '{urls['dls']}'}}}}")
            + trigger("moderation", "[{exact: {type: com.live.comment.posted}}]", urls["moderation"])
            + trigger("notify", "[{exact: {type: com.live.comment.flagged}}]", urls["notify"])
            + trigger("audit", "[{exact: {type: com.live.viewer.joined}}]", urls["bad2"],
                      "{retry: 1, backoffDelay: PT0.1S, deadLetterSink: {ref: {apiVersion: eventing.knative.dev/v1alpha1, kind: KafkaSink, name: audit-dlq}}}")
            + f"---\napiVersion: eventing.knative.dev/v1alpha1\nkind: KafkaSink\nmetadata: {{name: audit-dlq, namespace: {namespace}}}\n"
            + f"spec: {{topic: {namespace}-audit-dlq}}\n"
            + trigger("uploads", "[{exact: {type: com.live.clip.uploaded}}]", urls["uploads"],
                      "{retry: 2, backoffDelay: PT0.2S}")
            + trigger("big-reply", "[{exact: {type: com.live.clip.uploaded}}]", urls["big_reply"])
            + trigger("leaderboard", "[{exact: {type: com.live.gift.sent}}]", urls["ordered"],
                      "{retry: 3, backoffDelay: PT0.3S}", "{kafka.eventing.knative.dev/delivery.order: ordered}"))


def python_log_says(text: str) -> bool:
    """Whether the mini-cluster's Python log (the operator's ``logging``) has ``text``."""
    logs = Path(os.environ.get("FLINK_LOG_DIR") or REPO / ".run" / "flink-logs")
    return any(text in p.read_text(errors="replace") for p in logs.glob("*python*.log"))


def test_thousand_events_through_ingress_and_flink(kafka, tmp_path, monkeypatch):
    monkeypatch.setenv("KNFLOW_CEL_CACHE", str(tmp_path / "cel-cache"))
    rng = random.Random(5)
    namespace = f"e2e{uuid.uuid4().hex[:6]}"
    servers = {
        "gifts": ConsumerServer(accept(202)), "vip": ConsumerServer(accept()), "flaky": ConsumerServer(fail_first_per_event()),
        "bad": ConsumerServer(always(400, b"viewer service rejects")), "dls": ConsumerServer(accept(202)),
        "bad2": ConsumerServer(always(422, b"audit refuses")),
        "moderation": ConsumerServer(lambda req: reply_event(
            {"id": "flag-" + req.headers["ce-id"], "source": "/moderation", "type": "com.live.comment.flagged"}, REPLY)(req)),
        "structured": ConsumerServer(accept()),
        "notify": ConsumerServer(accept()), "ordered": ConsumerServer(fail_first_per_event(500)),
        # A 700 KB event, retried once (its retry waits in the job's state, not in Kafka).
        "uploads": ConsumerServer(fail_first_per_event()),
        # A 5 MB reply, over the job's 4 MiB record limit: dead-lettered, and the job goes on.
        "big_reply": ConsumerServer(reply_event({"id": "huge-reply", "source": "/clips", "type": "com.live.clip.echo"},
                                                json.dumps({"blob": "y" * 5_000_000}).encode())),
    }
    for server in servers.values():
        server.start()
    try:
        manifest_dir = tmp_path / "manifests"
        manifest_dir.mkdir()
        (manifest_dir / "live.yaml").write_text(manifests(namespace, {k: s.url for k, s in servers.items()}))
        plan = plan_from_yaml((manifest_dir / "live.yaml").read_text())
        ensure_topics(kafka.bootstrap, [plan.brokers[0].topic], partitions=4)
        job = KnflowJob(manifest_dir, ["--bootstrap-servers", kafka.bootstrap, "--job-name", namespace,
                                       "--checkpoint-interval", "2", "--checkpoint-dir", str(tmp_path / "ckpt"), "--cel-native"],
                        tmp_path / "job.log")
        writer = KafkaWriter(kafka.bootstrap)
        try:
            job.wait_running()
            # the mini-cluster's JVM runs with knflow's JIT setting, unless JVM_ARGS says otherwise
            jvms = [cmdline(pid) for pid in job.jvm_pids()]
            wanted = os.environ.get("JVM_ARGS", LOCAL_JVM_ARGS)
            assert jvms and all(wanted in cmd for cmd in jvms), jvms
            events, expected = [], defaultdict(set)
            fidelity: dict[str, bytes] = {}
            room_order: dict[str, list[str]] = defaultdict(list)
            for n in range(1000):
                type_ = TYPES[n % len(TYPES)]
                room = rng.choice(ROOMS)
                level = rng.choice([1, 10, 30, 50])
                event_id = f"ev-{n:04d}"
                headers = {"ce-specversion": "1.0", "ce-id": event_id, "ce-source": f"/rooms/{room}", "ce-type": type_,
                           "ce-partitionkey": room, "content-type": "application/json"}
                body = json.dumps({"room": room, "level": level}).encode()
                if n % 25 == 0:
                    headers.update(FIDELITY_HEADERS)
                    body = fidelity[event_id] = fidelity_payload(room, level)
                events.append((event_id, headers, body))
                if type_ == "com.live.gift.sent":
                    expected["gifts"].add(event_id)
                    expected["ordered"].add(event_id)
                    room_order[room].append(event_id)
                if level >= 30:
                    expected["vip"].add(event_id)
                if type_ == "com.live.like":
                    expected["flaky"].add(event_id)
                    expected["structured"].add(event_id)
                if type_ == "com.live.viewer.joined":
                    expected["bad"].add(event_id)
                    expected["bad2"].add(event_id)
                    expected["dls"].add(event_id)
                if type_ == "com.live.comment.posted":
                    expected["moderation"].add(event_id)
                    expected["notify"].add("flag-" + event_id)
            clip = json.dumps({"room": "room-0", "blob": "z" * 700_000}).encode()
            events.append(("clip-1", {"ce-specversion": "1.0", "ce-id": "clip-1", "ce-source": "/rooms/room-0",
                                      "ce-type": "com.live.clip.uploaded", "content-type": "application/json"}, clip))
            expected["uploads"].add("clip-1")
            expected["big_reply"].add("clip-1")
            with AppThread(Ingress(plan, writer).app()) as base:
                room_of = {event_id: json.loads(body)["room"] for event_id, _, body in events}
                statuses = post_all(f"{base}/{namespace}/live", events, lanes=room_of.__getitem__)
            assert Counter(statuses.values()) == Counter({202: 1001})

            def ids(name):  # a structured-mode request carries the id in its body
                return Counter(r.headers.get("ce-id") or json.loads(r.body)["id"] for r in servers[name].requests)

            def settled():
                # Consumers that fail each event's first attempt must also have seen its retry.
                twice = {"flaky", "ordered", "uploads"}
                return all(expected[name] <= {i for i, n in ids(name).items() if n >= (2 if name in twice else 1)}
                           for name in expected)

            wait_until(settled, 240, "every consumer to receive its events")
            assert "--cel-native: 1 CEL filter(s) built as C in" in job.output()
            assert python_log_says(f"broker {namespace}/live: 1 CEL filter(s) run as C (--cel-native)")
            if len(os.sched_getaffinity(0)) > 1:
                # --python-cpu auto: the delivering operator's thread and its delivery loop run
                # on one CPU (the GIL hands over on one core); the JVM's other threads do not
                [jvm] = job.jvm_pids()
                masks = list(thread_cpus(jvm).values())
                pinned = [mask for mask in masks if len(mask) == 1]
                assert len(pinned) >= 2 and len({frozenset(m) for m in pinned}) == 1, masks
                assert len(masks) - len(pinned) > 20, masks
        finally:
            output = job.stop()
            writer.close()

        duplicates = {}
        for name in ("gifts", "vip", "moderation", "notify", "dls", "structured"):
            got = ids(name)
            assert set(got) == expected[name], name  # exactly the matching ids, none missing, none extra
            duplicates[name] = sum(got.values()) - len(got)
        assert duplicates == dict.fromkeys(duplicates, 0), duplicates  # healthy run: each POSTed once
        assert set(ids("flaky")) == expected["flaky"] and set(ids("flaky").values()) == {2}  # 503 then 200
        assert set(ids("bad")) == expected["bad"] and set(ids("bad").values()) == {1}  # 400 is not retried
        for request in servers["dls"].requests:
            assert request.headers["ce-knativeerrorcode"] == "400"
            assert request.headers["ce-knativeerrordest"] == servers["bad"].url
        # Ordered trigger: per room, successful deliveries follow the room's order, and the
        # next event of a room is only sent after the previous one's outcome.
        seen: Counter[str] = Counter()
        delivered_order: dict[str, list[str]] = defaultdict(list)
        attempts_order: dict[str, list[str]] = defaultdict(list)
        for request in servers["ordered"].requests:
            event_id = request.headers["ce-id"]
            seen[event_id] += 1
            attempts_order[request.headers["ce-partitionkey"]].append(event_id)
            if seen[event_id] == 2:
                delivered_order[request.headers["ce-partitionkey"]].append(event_id)
        assert dict(delivered_order) == dict(room_order)
        for room, attempts in attempts_order.items():
            assert attempts == [e for e in room_order[room] for _ in range(2)], room

        # Fidelity: every delivery (first attempts, retries held in state, ordered ones, dead
        # letters to an HTTP sink) carries the payload and attribute texts as they were sent.
        assert len(fidelity) == 40
        for name in ("gifts", "vip", "flaky", "bad", "dls", "moderation", "ordered"):
            received = [r for r in servers[name].requests if r.headers.get("ce-id") in fidelity]
            assert received and {r.headers["ce-id"] for r in received} == expected[name] & set(fidelity), name
            for request in received:
                assert request.body == fidelity[request.headers["ce-id"]], name
                assert {k: request.headers[k] for k in FIDELITY_HEADERS} == FIDELITY_HEADERS, name
        # structured mode: the payload embedded as it was sent, the attribute texts as sent
        structured = [r for r in servers["structured"].requests if json.loads(r.body)["id"] in fidelity]
        assert len(structured) == len(expected["structured"] & set(fidelity)) == 10
        for request in structured:
            doc = json.loads(request.body)
            assert request.body.endswith(b',"data":' + fidelity[doc["id"]] + b"}")
            assert (doc["time"], doc["subject"], doc["timeext"]) == (NANO, "caf\u00e9", FIDELITY_HEADERS["ce-timeext"])
        # replies reach the broker topic, and their subscriber, with the reply's payload as sent
        assert {r.body for r in servers["notify"].requests} == {REPLY}

        # The KafkaSink dead-letter sink: the job wrote each refused event to its topic.
        from tests.eventing.test_ingress import consume
        from transforms.codec import decode_kafka

        records = consume(kafka.bootstrap, f"{namespace}-audit-dlq", len(expected["bad"]))
        audited = [decode_kafka(r.headers, r.value) for r in records]
        assert {e.get_id() for e in audited} == expected["bad"]
        assert {e.get_attributes()["knativeerrorcode"] for e in audited} == {"422"}
        for record in records:
            event_id = dict(record.headers)["ce_id"].decode()
            if event_id in fidelity:
                assert record.value == fidelity[event_id] and dict(record.headers)["ce_time"] == NANO.encode()

        # The retry of the 700 KB event was held in the job's state and sent again, whole.
        assert [json.loads(r.body) for r in servers["uploads"].requests] == [json.loads(clip)] * 2
        # The 5 MB reply: dead-lettered to the job's topic with its reason and a sample.
        [oversized] = [r for r in consume(kafka.bootstrap, f"knflow-{namespace}-dead-letters", 1)
                       if dict(r.headers).get("knflow_kind") == b"oversized"]
        doc = json.loads(oversized.value)
        assert doc["event_id"] == "clip-1" and doc["trigger"] == f"{namespace}/big-reply"
        assert f"for topic {plan.brokers[0].topic!r} exceeds the job's record limit" in doc["reason"]
        assert doc["headers"]["ce_id"] == "huge-reply" and len(doc["raw"]) == 64 * 1024

        summary = summary_rows(output)
        assert summary[f"{namespace}/gifts"]["delivered"] == len(expected["gifts"])
        assert summary[f"{namespace}/likes"]["retried"] == len(expected["flaky"])
        assert summary[f"{namespace}/broken"]["dead_lettered"] == len(expected["bad"])
        assert summary[f"{namespace}/moderation"]["replies"] == len(expected["moderation"])
    finally:
        for server in servers.values():
            server.stop()
