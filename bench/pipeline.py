"""End to end: the live-streaming example's broker as a Flink job, from a Kafka backlog to
the consumers, beside the engine's own ceiling and the loop a user would write instead.
Prints one JSON object per line; the last one is the summary.

Every part is real and started here (stopped at the end): a Kafka broker
(``deploy/kafka.sh``, free loopback ports, throwaway state dir) and one HTTP consumer
process answering 200 at once (``bench/consumer.py``), which counts the requests per path
(every ``ref`` of ``examples/live-stream`` resolves to its own path). ``--events``
interaction events of the example's generator (``make_events.py``) are written to the
broker topic in Kafka binary mode, keyed by room, before anything reads them: a backlog,
as after a burst or a restart. Then, one after the other, on those same records:

1. ``ceiling``: ``bench/passthrough_job.py``, a PyFlink job of knflow's source and sink
   shape with a trivial Python function, copies the backlog to another topic: what the
   engine itself carries here (records/s from its first to its last output record), once
   in each of PyFlink's Python modes (thread, process); the ceiling is the better one.
   Here and in ``backlog``, ``cpu_percent`` and ``cpu_us_per_event`` say what each part
   (Kafka, the job, this benchmark with its consumer) used over the measured window.
2. ``baseline``: ``bench/baseline_loop.py``, a kafka-python consumer with knflow's router
   and pyreqwest posts on uvloop, no engine, no retries: events/s from the first request
   to the moment every trigger got what the router says it must get.
3. ``backlog``: ``knflow run`` on Flink's embedded mini-cluster (the default runner) from
   the earliest offset, with the job options given here: events/s, same clock.
4. ``ordered``: ``--ordered-events`` gifts of 100+ coins in 3 rooms (3 partition keys)
   written at once; deliveries/s at the ordered ``gift-leaderboard`` trigger.
5. ``steady``: ``--probe-events`` more events at ``--probe-rate`` per second, each written
   alone (acks=all, no linger; librdkafka unless ``--probe-producer kafka-python``), after
   ``--probe-warmup-s`` (10) seconds of the same rate: the latency of each from just before its Kafka write to
   the first request for it at any consumer (p50/p90/p99/max in ms); and from the moment
   the producer learnt Kafka had it (``acked_ms_*``), with the producer's own delay
   (``producer_ack_ms_*``); and from the moment Kafka appended it (``appended_ms_*``: the
   topic is switched to broker timestamps for the probe and the records are read back).
   Each probe starts once the job is idle (no delivery for 2 s), not while it still works
   off the phase before; ``stalls`` lists the windows where events waited over 3x the
   median (at least 50 ms): when, how long, how many events (``appended_stalls``: the same
   from the append); ``cpu_percent``: the CPU each part used during the measured events
   (Kafka, the job, the ingress, this process with the consumer), in % of one core.
6. ``steady_ingress``: the same events again, each POSTed alone to ``knflow ingress``
   (binary mode, one keep-alive connection): latency from the POST to the consumer.

Usage: ``python bench/pipeline.py [--events 20000] [--parallelism 1]
[--checkpoint-interval 10] [--no-outcomes] [--timeout 600] [--ordered-events 3000]
[--probe-events 5000] [--probe-rate 1000] [--buffer-timeout-ms MS] [--skip-ceiling]
[--skip-baseline]``.
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


def _pct(values: list[float], p: float) -> float | None:
    """The ``p``-th percentile of sorted ``values`` (None when empty), in 0.1 ms."""
    return round(values[min(len(values) - 1, int(p / 100 * len(values)))], 1) if values else None


def _tree(root: int) -> list[int]:
    """``root`` and its descendants."""
    from tests.processes import descendants

    return [root, *descendants(root)]


def _parts_meter(state: Path, roots: dict[str, int]) -> "_CpuMeter":
    """A CPU meter of Kafka (deploy/kafka.sh's pid file), each process tree of ``roots``
    (name -> root pid: the job, the ingress) and everything else of this benchmark (its
    consumer); the trees are listed when the meter starts, once they run all their processes."""
    kafka_pid = int((state / "kafka" / "kafka.pid").read_text())

    def parts() -> dict[str, list[int]]:
        trees = {name: _tree(pid) for name, pid in roots.items()}
        taken = {pid for tree in trees.values() for pid in tree}
        return {"kafka": [kafka_pid], **trees, "bench_and_consumer": [p for p in _tree(os.getpid()) if p not in taken]}

    return _CpuMeter(parts)


def _per_event(cpu_percent: dict[str, float], events_per_s: float) -> dict[str, float]:
    """CPU percentages over a window as microseconds of CPU per event of that window."""
    return {name: round(percent / 100 / events_per_s * 1e6, 1) for name, percent in cpu_percent.items()}


class _CpuMeter:
    """CPU of the parts (% of one core) over a window: the latency probes are run on a
    2-core machine that the benchmark itself shares, so each probe says who used it."""

    def __init__(self, parts_of: Any) -> None:
        self.parts_of = parts_of  # () -> {name: that part's pids}, called by start()

    def start(self) -> None:
        from tests.processes import cpu_seconds

        self.parts = self.parts_of()
        self._began = time.perf_counter()
        self._cpu = {name: cpu_seconds(pids) for name, pids in self.parts.items()}

    def stop(self) -> dict[str, float]:
        from tests.processes import cpu_seconds

        wall = time.perf_counter() - self._began
        return {name: round(100 * (cpu_seconds(pids) - self._cpu[name]) / wall, 1)
                for name, pids in self.parts.items()}


def _stalls(sent: dict[str, float], arrivals: dict[str, float], floor_ms: float, limit: int = 10) -> list[dict]:
    """Windows of the probe where events waited over ``floor_ms``: when each began (seconds
    after the first measured send), how long it lasted, how many events and the worst
    latency; to tell a periodic stall (every checkpoint interval) from noise."""
    first = min(sent.values())
    windows: list[dict] = []
    for event_id, at in sorted(sent.items(), key=lambda item: item[1]):
        latency = (arrivals[event_id] - at) * 1000
        if latency <= floor_ms:
            continue
        if windows and at - first - windows[-1]["last"] < 0.05:
            window = windows[-1]
            window.update(last=at - first, events=window["events"] + 1, max_ms=max(window["max_ms"], latency))
        else:
            windows.append({"at_s": at - first, "last": at - first, "events": 1, "max_ms": latency})
    return [{"at_s": round(w["at_s"], 2), "s": round(w["last"] - w["at_s"], 2), "events": w["events"],
             "max_ms": round(w["max_ms"], 1)} for w in sorted(windows, key=lambda w: -w["events"])[:limit]]


def _wait_idle(consumer: Consumer, quiet_s: float = 2.0, limit_s: float = 120.0) -> None:
    """Until no request reached the consumer for ``quiet_s`` (at most ``limit_s``): a
    latency probe measures the job at rest, not the tail of the phase before it."""
    deadline = time.perf_counter() + limit_s
    last, quiet_since = consumer.counts(), time.perf_counter()
    while time.perf_counter() - quiet_since < quiet_s and time.perf_counter() < deadline:
        time.sleep(0.25)
        now = consumer.counts()
        if now != last:
            last, quiet_since = now, time.perf_counter()


def _probe(send: Any, docs: list[dict[str, Any]], rate: float, consumer: Consumer, timeout: float,
           case: str, tag: str, acked: dict[str, float] | None = None, warmup_s: float = 1.0,
           meter: _CpuMeter | None = None) -> dict[str, Any]:
    """``send`` each of ``docs`` alone at ``rate`` per second; the latency of each from just
    before it is sent to the first request for it at any consumer. ``acked``: when the
    sender learnt that Kafka had each event (filled by ``send``), for the same latency from
    that moment (``acked_ms_*``: what the job adds, without the producer's own delay).
    The rate runs ``warmup_s`` before the measured events (the first ``docs`` again, as
    ``warm-*``, not counted): the latency at a steady rate, not of the rate's first second
    after an idle job (in one run, measured from the first event, p50 was 32 ms for the
    probe that ran first and 15 ms for the same probe run second)."""
    from transforms.codec import event_from_dict

    _wait_idle(consumer)
    warm = [dict(docs[n % len(docs)], id=f"warm-{tag}{n}") for n in range(int(rate * warmup_s))]
    measured = [dict(doc, id=f"probe-{tag}{n}") for n, doc in enumerate(docs)]
    sent: dict[str, float] = {}
    start = time.perf_counter()
    for n, doc in enumerate(warm + measured):
        event = event_from_dict(doc)
        time.sleep(max(0.0, start + n / rate - time.perf_counter()))
        if n >= len(warm):
            if n == len(warm) and meter is not None:
                meter.start()
            sent[doc["id"]] = time.time()
        send(event)
    cpu = meter.stop() if meter is not None else None
    deadline = time.perf_counter() + timeout
    while not set(sent) <= set(arrivals := consumer.arrivals()):
        if time.perf_counter() > deadline:
            raise SystemExit(f"only {len(set(sent) & set(arrivals))} of {len(sent)} probe events arrived in {timeout:.0f}s")
        time.sleep(0.2)
    latencies = sorted((arrivals[event_id] - at) * 1000 for event_id, at in sent.items())

    result = {"case": case, "events": len(docs), "rate_per_s": rate, "ops_per_s": rate,
              "latency_ms_p50": _pct(latencies, 50), "latency_ms_p90": _pct(latencies, 90),
              "latency_ms_p99": _pct(latencies, 99), "latency_ms_max": round(latencies[-1], 1),
              "stalls": _stalls(sent, arrivals, floor_ms=max(50.0, 3 * _pct(latencies, 50)))}
    if cpu is not None:
        result["cpu_percent"] = cpu
    if acked:
        acked = {event_id: at for event_id, at in acked.items() if event_id in sent}
        from_ack = sorted((arrivals[event_id] - at) * 1000 for event_id, at in acked.items())
        write = sorted((acked[event_id] - sent[event_id]) * 1000 for event_id in acked)
        result.update(acked_ms_p50=_pct(from_ack, 50), acked_ms_p99=_pct(from_ack, 99),
                      producer_ack_ms_p50=_pct(write, 50), producer_ack_ms_p99=_pct(write, 99))
    return result


def _probe_kafka(bootstrap: str, topic: str, docs: list[dict[str, Any]], rate: float, consumer: Consumer,
                 timeout: float, warmup_s: float, producer_kind: str = "librdkafka",
                 meter: _CpuMeter | None = None) -> dict[str, Any]:
    """Each event written to the broker topic alone (acks=all, no linger), by librdkafka
    (confluent-kafka, as the ingress writes) or kafka-python. The topic is switched to
    broker timestamps (``LogAppendTime``) first, so each record's timestamp is the moment
    Kafka appended it: ``appended_ms_*`` is the latency from the Kafka write itself,
    whatever the probe's producer costs. kafka-python costs the benchmark's process (and
    Kafka, one request per record) much more CPU on a machine the job shares: see
    ``cpu_percent``."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    from transforms.codec import encode_kafka

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                            configs={"message.timestamp.type": "LogAppendTime"})])
    finally:
        admin.close()
    reader = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    parts = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
    starts = reader.end_offsets(parts)
    acked: dict[str, float] = {}
    if producer_kind == "kafka-python":
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
        producer.partitions_for(topic)  # connected, with the topic's metadata, before the clock starts

        def send(event: Any) -> None:
            key, headers, value = encode_kafka(event, "binary")
            event_id = event.get_id()
            producer.send(topic, key=key, value=value, headers=list(headers)).add_callback(
                lambda _metadata: acked.__setitem__(event_id, time.time()))

        def close() -> None:
            producer.flush()
            producer.close()
    else:
        from confluent_kafka import Producer

        from eventing.kafka_topics import ACKED_IN_ORDER

        rd = Producer({"bootstrap.servers": bootstrap, **ACKED_IN_ORDER, "linger.ms": 0})  # as the ingress writes
        rd.list_topics(topic, timeout=10)  # connected, with the topic's metadata, before the clock starts

        def send(event: Any) -> None:
            key, headers, value = encode_kafka(event, "binary")
            event_id = event.get_id()
            rd.produce(topic, value, key, headers=headers,
                       on_delivery=lambda error, _message: error is None and acked.__setitem__(event_id, time.time()))
            rd.poll(0)  # reports of the records before (the next send is ~1 ms away)

        def close() -> None:
            rd.flush(30)

    try:
        result = _probe(send, docs, rate, consumer, timeout, "steady", "k", acked, warmup_s, meter)
    finally:
        close()
    result["producer"] = producer_kind
    appended: dict[str, float] = {}
    try:
        reader.assign(parts)
        for part in parts:
            reader.seek(part, starts[part])
        ends = reader.end_offsets(parts)
        while any(reader.position(part) < ends[part] for part in parts):
            for records in reader.poll(timeout_ms=1000).values():
                for record in records:
                    event_id = dict(record.headers).get("ce_id", b"").decode()
                    if event_id.startswith("probe-k"):
                        appended[event_id] = record.timestamp / 1000
    finally:
        reader.close()
    arrivals = consumer.arrivals()
    appended = {event_id: at for event_id, at in appended.items() if event_id in arrivals}
    from_append = sorted((arrivals[event_id] - at) * 1000 for event_id, at in appended.items())
    result.update(appended_events=len(from_append), appended_ms_p50=_pct(from_append, 50),
                  appended_ms_p90=_pct(from_append, 90), appended_ms_p99=_pct(from_append, 99),
                  appended_stalls=_stalls(appended, arrivals, floor_ms=max(50.0, 3 * (_pct(from_append, 50) or 0)))
                  if appended else [])
    return result


def _probe_ingress(port: int, path: str, docs: list[dict[str, Any]], rate: float, consumer: Consumer,
                   timeout: float, warmup_s: float, meter: _CpuMeter | None = None) -> dict[str, Any]:
    """Each event POSTed alone (binary mode, one keep-alive connection) to ``knflow ingress``,
    which answers once Kafka has it."""
    import http.client

    from transforms.codec import encode_http

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def send(event: Any) -> None:
        headers, body = encode_http(event, "binary")
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 202:
            raise SystemExit(f"the ingress answered {response.status} to {event.get_id()}")

    try:
        return _probe(send, docs, rate, consumer, timeout, "steady_ingress", "i", None, warmup_s, meter)
    finally:
        connection.close()


def _start_ingress(bootstrap: str, state: Path) -> tuple[subprocess.Popen, int]:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = _start([sys.executable, "-m", "pipelines.cli", "ingress", str(EXAMPLE), "--port", str(port),
                      "--bootstrap-servers", bootstrap], state / "ingress.log")
    deadline = time.perf_counter() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return process, port
        except OSError:
            pass
        if time.perf_counter() > deadline or process.poll() is not None:
            raise SystemExit(f"knflow ingress did not get ready:\n{(state / 'ingress.log').read_text()[-2000:]}")
        time.sleep(0.2)


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


def _gifts(count: int) -> list[dict[str, Any]]:
    """Gifts that the ordered ``gift-leaderboard`` trigger takes (100+ coins), 3 rooms."""
    rooms = ("room-7", "room-42", "room-99")
    return [{"specversion": "1.0", "id": f"gift-{n}", "source": f"/live/rooms/{rooms[n % 3]}",
             "type": "com.live.gift.sent", "partitionkey": rooms[n % 3], "datacontenttype": "application/json",
             "data": {"room": rooms[n % 3], "gift": "rocket", "coins": 500,
                      "user": {"id": "u1", "level": 3, "badges": []}}} for n in range(count)]


def _wait_for(consumer: Consumer, want: Counter, base: dict[str, int], timeout: float, process: Any = None,
              log_path: Path | None = None, on_first: Any = None) -> tuple[float, dict[str, float]]:
    """Poll the consumer until every path got ``want`` more requests than ``base``: (first, done per path).
    ``on_first()`` is called when the first of them arrives."""
    first = None
    finished: dict[str, float] = {}
    deadline = time.perf_counter() + timeout
    while len(finished) < len(want):
        if process is not None and process.poll() is not None:
            tail = log_path.read_text()[-3000:] if log_path else ""
            raise SystemExit(f"{process.args[1]} exited ({process.returncode}):\n{tail}")
        counts = consumer.counts()
        now = time.perf_counter()
        if time.perf_counter() > deadline:
            raise SystemExit(f"not every delivery arrived in {timeout:.0f}s: got {counts}, base {base}, want {dict(want)}")
        if first is None and any(counts.get(p, 0) > base.get(p, 0) for p in want):
            first = now
            if on_first is not None:
                on_first()
        for path, n in want.items():
            if path not in finished and counts.get(path, 0) - base.get(path, 0) >= n:
                finished[path] = now
        time.sleep(0.02)
    return first, finished


def _start(command: list[str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "w") as log:
        return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _stop(process: subprocess.Popen | None, sig: int = signal.SIGINT) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _ceiling(bootstrap: str, topic: str, count: int, state: Path, timeout: float, mode: str) -> dict[str, Any]:
    """The pass-through job over the backlog, its Python function in PyFlink's ``mode``
    (thread or process): records/s from its first to its last output."""
    from kafka import KafkaConsumer

    from eventing.kafka_topics import ensure_topics

    sink = f"{topic}-copy-{mode}"
    ensure_topics(bootstrap, [sink], 4)
    job = _start([sys.executable, "bench/passthrough_job.py", "--bootstrap", bootstrap, "--source", topic,
                  "--sink", sink, "--checkpoint-dir", str(state / f"ceiling-checkpoints-{mode}"),
                  "--python-mode", mode], state / f"ceiling-{mode}.log")
    meter = _parts_meter(state, {"job": job.pid})
    reader = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        from kafka import TopicPartition

        parts = [TopicPartition(sink, p) for p in reader.partitions_for_topic(sink)]
        first = None
        deadline = time.perf_counter() + timeout
        while True:
            if job.poll() is not None:
                raise SystemExit(f"the pass-through job exited:\n{(state / f'ceiling-{mode}.log').read_text()[-3000:]}")
            written = sum(reader.end_offsets(parts).values())
            now = time.perf_counter()
            if first is None and written:
                first, first_count = now, written
                meter.start()
            if written >= count:
                break
            if now > deadline:
                raise SystemExit(f"the pass-through job copied {written} of {count} records in {timeout:.0f}s")
            time.sleep(0.02)
        window = max(now - first, 1e-9)
        cpu = meter.stop()
        rate = (count - first_count) / window
        return {"case": "ceiling", "python_mode": mode, "records": count, "seconds": round(window, 2),
                "records_per_s": round(rate, 1), "cpu_percent": cpu, "cpu_us_per_event": _per_event(cpu, rate)}
    finally:
        reader.close()
        _stop(job, signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--checkpoint-interval", type=float, default=10.0)
    parser.add_argument("--no-outcomes", action="store_true", help="pass --no-outcomes to the job")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for every delivery")
    parser.add_argument("--ordered-events", type=int, default=3000, help="gifts of the ordered phase (0: none)")
    parser.add_argument("--probe-events", type=int, default=5000, help="events of the steady latency phase (0: none)")
    parser.add_argument("--probe-rate", type=float, default=1000.0, help="their rate per second")
    parser.add_argument("--probe-warmup-s", type=float, default=10.0,
                        help="seconds of the probe rate before the measured events (not counted)")
    parser.add_argument("--probe-order", default="kafka,ingress", choices=["kafka,ingress", "ingress,kafka"],
                        help="which latency probe runs first")
    parser.add_argument("--probe-producer", default="librdkafka", choices=["librdkafka", "kafka-python"],
                        help="the Kafka client that writes the steady probe's events")
    parser.add_argument("--buffer-timeout-ms", type=int, default=None, help="pass --buffer-timeout-ms to the job")
    parser.add_argument("--job-arg", action="append", default=[], help="one more argument for knflow run (repeatable)")
    parser.add_argument("--skip-ceiling", action="store_true")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args(argv)
    if shutil.which("java") is None:
        raise SystemExit("bench/pipeline.py needs Java 17+ on PATH (Kafka and Flink)")

    import make_events

    from eventing.compiler import load_plan
    from tests.conftest import KafkaService, free_port_pair  # the test session's Kafka service, outside pytest
    from transforms.codec import event_from_dict

    plan = load_plan([str(EXAMPLE)])
    topic = plan.brokers[0].topic
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
    summary: dict[str, Any] = {"bench": "pipeline", "case": "summary"}
    common = {"bench": "pipeline", "events": len(events), "parallelism": args.parallelism,
              "outcomes": not args.no_outcomes, "buffer_timeout_ms": args.buffer_timeout_ms}
    ref_args = [arg for name, ref_url in ref_urls.items() for arg in ("--ref-url", f"{name}={ref_url}")]
    try:
        kafka.start()
        write_s = _write_backlog(kafka.bootstrap, topic, events, args.partitions)
        if not args.skip_ceiling:
            # in both of PyFlink's modes: the engine's ceiling is the better of the two
            ceilings = {}
            for mode in ("thread", "process"):
                ceiling = _ceiling(kafka.bootstrap, topic, len(events), state, args.timeout, mode)
                print(json.dumps({**common, "impl": "pyflink-passthrough", **ceiling}), flush=True)
                ceilings[mode] = ceiling["records_per_s"]
            summary["engine_ceiling_events_per_s"] = max(ceilings.values())
            summary.update({f"ceiling_{mode}_events_per_s": rate for mode, rate in ceilings.items()})
        if not args.skip_baseline:
            loop = _start([sys.executable, "bench/baseline_loop.py", "--bootstrap", kafka.bootstrap, "--topic", topic,
                           "--manifests", str(EXAMPLE), *ref_args], state / "baseline.log")
            try:
                first, finished = _wait_for(consumer, want, consumer.counts(), args.timeout, loop, state / "baseline.log")
            finally:
                _stop(loop, signal.SIGTERM)
            window = max(finished.values()) - first
            print(json.dumps({**common, "impl": "hand-written-loop", "case": "baseline", "seconds": round(window, 2),
                              "events_per_s": round(len(events) / window, 1),
                              "deliveries_per_s": round(total / window, 1)}), flush=True)
            summary["baseline_events_per_s"] = round(len(events) / window, 1)

        command = [sys.executable, "-m", "pipelines.cli", "run", str(EXAMPLE), "--bootstrap-servers", kafka.bootstrap,
                   "--job-name", f"bench-{uuid.uuid4().hex[:8]}", "--start-from", "earliest",
                   "--parallelism", str(args.parallelism), "--partitions", str(args.partitions),
                   "--checkpoint-interval", str(args.checkpoint_interval),
                   "--checkpoint-dir", str(state / "checkpoints"), *ref_args, *args.job_arg]
        if args.no_outcomes:
            command.append("--no-outcomes")
        if args.buffer_timeout_ms is not None:
            command += ["--buffer-timeout-ms", str(args.buffer_timeout_ms)]
        base = consumer.counts()
        job = _start(command, log_path)
        launched = time.perf_counter()
        backlog_meter = _parts_meter(state, {"job": job.pid})
        first, finished = _wait_for(consumer, want, base, args.timeout, job, log_path, on_first=backlog_meter.start)
        window = max(finished.values()) - first
        backlog_cpu = backlog_meter.stop()
        counts = consumer.counts()
        common["impl"] = "knflow-flink-minicluster"
        for path, n in sorted(want.items()):
            print(json.dumps({**common, "case": f"trigger{path}", "deliveries": n,
                              "received": counts.get(path, 0) - base.get(path, 0),
                              "done_after_s": round(finished[path] - first, 2),
                              "ops_per_s": round(n / max(finished[path] - first, 1e-9), 1)}), flush=True)
        extra = sum(counts.values()) - sum(base.values()) - total
        print(json.dumps({**common, "case": "backlog", "deliveries": total, "duplicates_or_extra": extra,
                          "seconds": round(window, 2), "ops_per_s": round(len(events) / window, 1),
                          "events_per_s": round(len(events) / window, 1),
                          "deliveries_per_s": round(total / window, 1),
                          "job_start_to_first_delivery_s": round(first - launched, 1),
                          "cpu_percent": backlog_cpu, "cpu_us_per_event": _per_event(backlog_cpu, len(events) / window),
                          "backlog_write_s": round(write_s, 1),
                          "wall_seconds": round(time.perf_counter() - started, 1)}), flush=True)
        summary["events_per_s"] = round(len(events) / window, 1)
        if "engine_ceiling_events_per_s" in summary:
            summary["ceiling_ratio"] = round(summary["events_per_s"] / summary["engine_ceiling_events_per_s"], 3)
        if "baseline_events_per_s" in summary:
            summary["ratio"] = round(summary["events_per_s"] / summary["baseline_events_per_s"], 3)
        if args.ordered_events:
            gifts = [event_from_dict(doc) for doc in _gifts(args.ordered_events)]
            ordered_want = _expected(plan, gifts, ref_urls)
            path = "/leaderboard"
            base = consumer.counts()
            _write_backlog(kafka.bootstrap, topic, gifts, args.partitions)
            first, finished = _wait_for(consumer, ordered_want, base, args.timeout, job, log_path)
            window = max(finished[path] - first, 1e-9)
            rate = round(ordered_want[path] / window, 1)
            print(json.dumps({**common, "case": "ordered", "trigger": "gift-leaderboard", "partition_keys": 3,
                              "deliveries": ordered_want[path], "seconds": round(window, 2),
                              "deliveries_per_s": rate}), flush=True)
            summary["ordered_deliveries_per_s"] = rate
        if args.probe_events:
            docs = list(make_events.events(args.probe_events))
            for probe in args.probe_order.split(","):
                if probe == "kafka":
                    meter = _parts_meter(state, {"job": job.pid})
                    steady = _probe_kafka(kafka.bootstrap, topic, docs, args.probe_rate, consumer, 120.0,
                                          args.probe_warmup_s, args.probe_producer, meter)
                    print(json.dumps({**common, **steady}), flush=True)
                    summary.update(steady_rate=args.probe_rate, steady_p50_ms=steady["latency_ms_p50"],
                                   steady_p99_ms=steady["latency_ms_p99"],
                                   steady_from_ack_p50_ms=steady.get("acked_ms_p50"),
                                   steady_from_ack_p99_ms=steady.get("acked_ms_p99"),
                                   steady_from_append_p50_ms=steady.get("appended_ms_p50"),
                                   steady_from_append_p99_ms=steady.get("appended_ms_p99"))
                else:
                    ingress, port = _start_ingress(kafka.bootstrap, state)
                    meter = _parts_meter(state, {"job": job.pid, "ingress": ingress.pid})
                    try:
                        via = _probe_ingress(port, f"/{plan.brokers[0].namespace}/{plan.brokers[0].name}", docs,
                                             args.probe_rate, consumer, 120.0, args.probe_warmup_s, meter)
                    finally:
                        _stop(ingress, signal.SIGTERM)
                    print(json.dumps({**common, **via}), flush=True)
                    summary.update(steady_ingress_p50_ms=via["latency_ms_p50"],
                                   steady_ingress_p99_ms=via["latency_ms_p99"])
        print(json.dumps(summary), flush=True)
        return 0
    finally:
        _stop(job)
        consumer.stop()
        kafka.stop()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
