"""End to end: the live-streaming example's broker as a Flink job, from a Kafka backlog to
the consumers. Prints one JSON object per line.

What it does, with every part real and started here (stopped at the end):

1. a Kafka broker (``deploy/kafka.sh``, free loopback ports, throwaway state dir) and one
   HTTP consumer process answering 200 at once (``bench/consumer.py``), which counts the
   requests per path: every ``ref`` of ``examples/live-stream`` resolves to its own path;
2. ``--events`` interaction events of the example's generator (``make_events.py``: bursty
   rooms, comments, gifts, likes, joins) written to the broker topic in Kafka binary mode,
   keyed by room, BEFORE the job starts: a backlog, as after a burst or a restart;
3. ``knflow run`` on Flink's embedded mini-cluster (the default runner) reading from the
   earliest offset, with the job options given here (parallelism, checkpoints, outcomes);
4. the clock runs from the first request any consumer gets to the moment every trigger
   got what the router says it must get (the plan's own ``Router`` over the same events).

5. then, with the backlog done, ``--probe-events`` more events at a steady ``--probe-rate``
   per second, each written alone (acks=all, no linger): the latency of each, from just
   before its Kafka write to the first request for it at any consumer (``steady`` line:
   p50/p90/p99/max in ms).

``events_per_s``: backlog events routed and delivered per second of that window;
``deliveries_per_s``: POSTs per second. One line per trigger gives its deliveries and
when its last one arrived: the ordered ``gift-leaderboard`` trigger delivers one event
per room at a time, each waiting for the previous one's release to come back through
the retry topic, so its rate is bounded per room, not by the machine.

Usage: ``python bench/pipeline.py [--events 20000] [--parallelism 1]
[--checkpoint-interval 10] [--no-outcomes] [--timeout 600] [--probe-events 1000]
[--probe-rate 100] [--buffer-timeout-ms 100]``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "examples" / "live-stream"))

from consumer import Consumer  # noqa: E402 - bench/consumer.py: the script's folder is on sys.path

EXAMPLE = REPO / "examples" / "live-stream"
REFS = ("moderation", "leaderboard", "analytics", "presence", "vip", "notify", "dead-letters")


def _write_backlog(bootstrap: str, topic: str, events: list[Any], partitions: int) -> float:
    """The events on ``topic`` (binary mode, keyed by partitionkey); returns seconds taken."""
    from kafka import KafkaProducer

    from eventing.kafka_topics import ensure_topics
    from transforms.codec import encode_kafka

    ensure_topics(bootstrap, [topic], partitions)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=256 * 1024)
    start = time.perf_counter()
    for event in events:
        key, headers, value = encode_kafka(event, "binary")
        producer.send(topic, key=key, value=value, headers=list(headers))
    producer.flush()
    producer.close()
    return time.perf_counter() - start


def _probe(bootstrap: str, topic: str, docs: list[dict[str, Any]], rate: float, consumer: Consumer,
           timeout: float) -> dict[str, Any]:
    """Write ``docs`` one by one at ``rate`` per second; latency of each to its first delivery."""
    from kafka import KafkaProducer

    from transforms.codec import encode_kafka, event_from_dict

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    sent: dict[str, float] = {}
    start = time.perf_counter()
    for n, doc in enumerate(docs):
        event_id = doc["id"] = f"probe-{n}"
        key, headers, value = encode_kafka(event_from_dict(doc), "binary")
        time.sleep(max(0.0, start + n / rate - time.perf_counter()))
        sent[event_id] = time.time()
        producer.send(topic, key=key, value=value, headers=list(headers))
    producer.flush()
    producer.close()
    deadline = time.perf_counter() + timeout
    while len(arrivals := consumer.arrivals()) < len(sent):
        if time.perf_counter() > deadline:
            raise SystemExit(f"only {len(arrivals)} of {len(sent)} probe events arrived in {timeout:.0f}s")
        time.sleep(0.2)
    latencies = sorted((arrivals[event_id] - at) * 1000 for event_id, at in sent.items())

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))], 1)

    return {"case": "steady", "events": len(docs), "rate_per_s": rate, "ops_per_s": rate,
            "latency_ms_p50": pct(50), "latency_ms_p90": pct(90), "latency_ms_p99": pct(99),
            "latency_ms_max": round(latencies[-1], 1)}


def _expected(plan: Any, events: list[Any], ref_urls: dict[str, str]) -> Counter:
    """Deliveries per consumer path: the plan's router over the events."""
    from urllib.parse import urlsplit

    from transforms.router import Router

    router = Router(plan.brokers[0])
    paths = {t.key: urlsplit(t.subscriber.url(ref_urls)).path for t in plan.brokers[0].triggers}
    want: Counter = Counter()
    for event in events:
        for trigger in router.route(event):
            want[paths[trigger.key]] += 1
    return want


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--checkpoint-interval", type=float, default=10.0)
    parser.add_argument("--no-outcomes", action="store_true", help="pass --no-outcomes to the job")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for every delivery")
    parser.add_argument("--probe-events", type=int, default=1000, help="events of the steady latency phase (0: none)")
    parser.add_argument("--probe-rate", type=float, default=100.0, help="their rate per second")
    parser.add_argument("--buffer-timeout-ms", type=int, default=None, help="pass --buffer-timeout-ms to the job")
    args = parser.parse_args(argv)
    if shutil.which("java") is None:
        raise SystemExit("bench/pipeline.py needs Java 17+ on PATH (Kafka and Flink)")

    import make_events

    from eventing.compiler import load_plan
    from tests.conftest import KafkaService, free_port_pair  # the test session's Kafka service, outside pytest
    from transforms.codec import event_from_dict

    plan = load_plan([str(EXAMPLE)])
    events = [event_from_dict(doc) for doc in make_events.events(args.events)]
    consumer = Consumer([0])
    url = f"http://127.0.0.1:{consumer.ports[0]}"
    ref_urls = {name: f"{url}/{name}" for name in REFS}
    want = _expected(plan, events, ref_urls)
    total = sum(want.values())

    state = Path(tempfile.mkdtemp(prefix="knflow-bench-pipeline-"))
    port = free_port_pair()
    kafka = KafkaService(f"127.0.0.1:{port}", port, state / "kafka")
    job: subprocess.Popen | None = None
    log_path = state / "job.log"
    started = time.perf_counter()
    try:
        kafka.start()
        write_s = _write_backlog(kafka.bootstrap, plan.brokers[0].topic, events, args.partitions)
        command = [sys.executable, "-m", "pipelines.cli", "run", str(EXAMPLE), "--bootstrap-servers", kafka.bootstrap,
                   "--job-name", f"bench-{uuid.uuid4().hex[:8]}", "--start-from", "earliest",
                   "--parallelism", str(args.parallelism), "--partitions", str(args.partitions),
                   "--checkpoint-interval", str(args.checkpoint_interval),
                   "--checkpoint-dir", str(state / "checkpoints")]
        command += [arg for name, ref_url in ref_urls.items() for arg in ("--ref-url", f"{name}={ref_url}")]
        if args.no_outcomes:
            command.append("--no-outcomes")
        if args.buffer_timeout_ms is not None:
            command += ["--buffer-timeout-ms", str(args.buffer_timeout_ms)]
        with open(log_path, "w") as log:
            job = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, PYTHONUNBUFFERED="1"))
        launched = time.perf_counter()
        first = None
        finished: dict[str, float] = {}
        deadline = launched + args.timeout
        while len(finished) < len(want):
            if job.poll() is not None:
                raise SystemExit(f"the job exited ({job.returncode}):\n{log_path.read_text()[-3000:]}")
            if time.perf_counter() > deadline:
                raise SystemExit(f"not every delivery arrived in {args.timeout:.0f}s: got {consumer.counts()}, "
                                 f"want {dict(want)}\n{log_path.read_text()[-3000:]}")
            counts = consumer.counts()
            now = time.perf_counter()
            if first is None and counts:
                first = now
            for path, n in want.items():
                if path not in finished and counts.get(path, 0) >= n:
                    finished[path] = now
            time.sleep(0.05)
        end = max(finished.values())
        window = end - first
        counts = consumer.counts()
        common = {"bench": "pipeline", "impl": "flink-minicluster", "events": len(events),
                  "parallelism": args.parallelism, "outcomes": not args.no_outcomes,
                  "buffer_timeout_ms": 100 if args.buffer_timeout_ms is None else args.buffer_timeout_ms}
        for path, n in sorted(want.items()):
            print(json.dumps({**common, "case": f"trigger{path}", "deliveries": n, "received": counts.get(path, 0),
                              "done_after_s": round(finished[path] - first, 2),
                              "ops_per_s": round(n / max(finished[path] - first, 1e-9), 1)}), flush=True)
        extra = sum(counts.values()) - total
        print(json.dumps({**common, "case": "backlog", "deliveries": total, "duplicates_or_extra": extra,
                          "seconds": round(window, 2), "ops_per_s": round(len(events) / window, 1),
                          "events_per_s": round(len(events) / window, 1),
                          "deliveries_per_s": round(total / window, 1),
                          "job_start_to_first_delivery_s": round(first - launched, 1),
                          "backlog_write_s": round(write_s, 1),
                          "wall_seconds": round(time.perf_counter() - started, 1)}), flush=True)
        if args.probe_events:
            docs = list(make_events.events(args.probe_events))
            print(json.dumps({**common, **_probe(kafka.bootstrap, plan.brokers[0].topic, docs, args.probe_rate,
                                                  consumer, 60.0)}), flush=True)
        return 0
    finally:
        if job is not None and job.poll() is None:
            job.send_signal(signal.SIGINT)
            try:
                job.wait(120)
            except subprocess.TimeoutExpired:
                job.kill()
                job.wait(10)
        consumer.stop()
        kafka.stop()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
