"""The broker ingress at wire speed: accepted events per second and latency, with a real
Kafka (acks=all) and, side by side in the same run, the same server answering 202 without
Kafka. Prints one JSON object per line; the last line is the summary.

Every part is real and started here (stopped at the end): a Kafka broker
(``deploy/kafka.sh``, free loopback ports, throwaway state dir, unless
``--bootstrap-servers`` names one), the ingress as ``knflow ingress`` runs it
(``eventing.ingress.serve``: granian, or ``--server aiohttp``; ``--workers`` processes on one
port) in its own process, and the load from a client in another process: a lean HTTP/1.1 keep-alive
client on uvloop (raw asyncio protocol; one request in flight per connection), so the
client costs little of the two cores it shares with the server and Kafka.

Before the cases, ``--kafka-warmup`` seconds (default 15) of binary-mode load through the
ingress, printed as case ``warmup`` and not measured: a Kafka just started runs its produce
path interpreted until its JIT has compiled it (measured: the first Kafka case of a run on a
fresh broker at 9,900 events/s, the same case again at 16,400).

Cases (each ``--seconds`` long, after a short warm-up):

- ``concurrent``: ``--clients`` connections posting 1 KB events, binary and structured
  mode, to the ingress (``impl: kafka``) and to the same server code whose writer answers
  at once (``impl: bare``); ``ratio`` = kafka / bare of the same mode.
- ``batch``: ``application/cloudevents-batch+json``, ``--batch`` events a request, from
  ``--batch-clients`` connections.
- ``sequential``: one connection, one request at a time: p50/p90/p99 of each request.
- ``workers``: binary mode with ``--workers`` (default 2) processes, against 1.

The two sides of each comparison run alternately ``--rounds`` times (default 2) and the
best run of each side counts, so that both see the same machine (it is shared).

Each line has ``events_per_s`` (events answered 202 per second), ``requests``, ``errors``
(non-202 answers), and for Kafka cases ``stored``: records the topic gained during the
case (from its offsets), which must be at least the events answered 202.

Usage: ``python bench/ingress.py [--seconds 6] [--clients 128] [--batch 100]
[--workers 2] [--rounds 2] [--cases concurrent,batch,sequential,workers]
[--bootstrap-servers B]`` (about 4 minutes with the defaults).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NAMESPACE, BROKER = "bench", "ingress"
MANIFEST = f"""apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: {BROKER}
  namespace: {NAMESPACE}
"""
EVENT_BYTES = 1024


# ---------------------------------------------------------------------------------------
# requests
# ---------------------------------------------------------------------------------------

_WORDS = ["hello", "gift", "room", "like", "stream", "wow", "great", "nice", "fire", "love", "lol", "gg"]


def _text(index: int, size: int) -> str:
    """Chat-like text (compresses like real comments do, not like a run of one letter)."""
    import random

    rng = random.Random(index)
    words = []
    while sum(len(w) + 1 for w in words) < size:
        words.append(rng.choice(_WORDS) + str(rng.randint(0, 9999)))
    return " ".join(words)[:size]


def _data(index: int) -> dict:
    doc = {"room": f"room-{index % 50}", "user": f"user-{index}", "kind": "comment", "text": ""}
    return doc


def _binary_request(port: int, index: int) -> bytes:
    headers = {
        "ce-specversion": "1.0", "ce-id": f"evt-{index}-{uuid.uuid4().hex[:8]}", "ce-source": "/bench/rooms",
        "ce-type": "com.live.comment", "ce-time": "2026-11-29T10:00:20.123456789Z", "ce-partitionkey": f"room-{index % 50}",
        "content-type": "application/json",
    }
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    data = _data(index)
    fixed = len(head) + len(json.dumps(data))
    data["text"] = _text(index, max(0, EVENT_BYTES - fixed))  # headers + body of ~1 KB
    body = json.dumps(data).encode()
    return (f"POST /{NAMESPACE}/{BROKER} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{head}"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


def _event_doc(index: int) -> dict:
    doc = {"specversion": "1.0", "id": f"evt-{index}-{uuid.uuid4().hex[:8]}", "source": "/bench/rooms",
           "type": "com.live.comment", "time": "2026-11-29T10:00:20.123456789Z", "partitionkey": f"room-{index % 50}",
           "datacontenttype": "application/json", "data": _data(index)}
    doc["data"]["text"] = _text(index, max(0, EVENT_BYTES - len(json.dumps(doc))))
    return doc


def _structured_request(port: int, index: int) -> bytes:
    body = json.dumps(_event_doc(index)).encode()
    return (f"POST /{NAMESPACE}/{BROKER} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"content-type: application/cloudevents+json\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body


def _batch_request(port: int, index: int, size: int) -> bytes:
    body = json.dumps([_event_doc(index * size + n) for n in range(size)]).encode()
    return (f"POST /{NAMESPACE}/{BROKER} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"content-type: application/cloudevents-batch+json\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body


# ---------------------------------------------------------------------------------------
# the client (its own process)
# ---------------------------------------------------------------------------------------

class _Connection(asyncio.Protocol):
    """Keep-alive HTTP/1.1: sends one request, reads its response, sends the next."""

    def __init__(self, client: "_Client", requests: list[bytes]) -> None:
        self.client, self.requests, self.next = client, requests, 0
        self.buffer = b""
        self.sent_at = 0.0
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.send()

    def send(self) -> None:
        request = self.requests[self.next]
        self.next = (self.next + 1) % len(self.requests)
        self.sent_at = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end]
            at = head.lower().find(b"content-length:")
            length = int(head[at + 15:head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None]) if at >= 0 else 0
            if len(buffer) < end + 4 + length:
                break
            status = int(head[9:12])
            buffer = buffer[end + 4 + length:]
            self.client.record(status, time.perf_counter() - self.sent_at)
            if self.client.running:
                self.send()
            else:
                self.transport.close()
        self.buffer = buffer

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _Client:
    def __init__(self, warmup: float, seconds: float, keep_latencies: bool) -> None:
        self.running = True
        self.measuring = False
        self.warmup, self.seconds = warmup, seconds
        self.accepted = self.requests = 0
        self.statuses: dict[int, int] = {}
        self.latencies: list[float] = [] if keep_latencies else None

    def record(self, status: int, latency: float) -> None:
        if not self.measuring:
            return
        self.requests += 1
        if status == 202:
            self.accepted += 1
            if self.latencies is not None:
                self.latencies.append(latency)
        else:
            self.statuses[status] = self.statuses.get(status, 0) + 1


async def _client_main(args: argparse.Namespace) -> dict:
    loop = asyncio.get_running_loop()
    client = _Client(args.warmup, args.seconds, args.clients == 1)
    make = {"binary": _binary_request, "structured": _structured_request}.get(args.mode)
    if args.mode == "batch":  # all built before the first is sent
        per_client = [[_batch_request(args.port, c * 4 + n, args.batch) for n in range(4)] for c in range(args.clients)]
    else:
        per_client = [[make(args.port, c * 16 + n) for n in range(16)] for c in range(args.clients)]
    connections = []
    for requests in per_client:
        _, protocol = await loop.create_connection(lambda r=requests: _Connection(client, r), "127.0.0.1", args.port)
        connections.append(protocol)
    await asyncio.sleep(args.warmup)
    client.measuring = True
    started = time.perf_counter()
    await asyncio.sleep(args.seconds)
    client.measuring = False
    elapsed = time.perf_counter() - started
    client.running = False
    await asyncio.wait([c.closed for c in connections], timeout=30)
    per_request = args.batch if args.mode == "batch" else 1
    out = {"requests": client.requests, "events_per_s": round(client.accepted * per_request / elapsed, 1),
           "requests_per_s": round(client.requests / elapsed, 1), "accepted_events": client.accepted * per_request,
           "errors": client.statuses}
    if client.latencies:
        lat = sorted(client.latencies)
        pick = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 3)  # noqa: E731
        out.update(p50_ms=pick(0.50), p90_ms=pick(0.90), p99_ms=pick(0.99), max_ms=round(lat[-1] * 1000, 3))
    return out


def client_process(args: argparse.Namespace) -> None:
    import uvloop

    print(json.dumps(uvloop.run(_client_main(args))), flush=True)


# ---------------------------------------------------------------------------------------
# the server (its own process): eventing.ingress.serve, with Kafka or without
# ---------------------------------------------------------------------------------------

class BareWriter:
    """The ingress's writer interface, answering at once: the server without Kafka."""

    def __init__(self, bootstrap_servers: str = "", **_: object) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.up = True

    def status(self) -> tuple[bool, str]:
        return True, ""

    async def write_many(self, topic, records) -> None:
        return None

    def close(self) -> None:
        pass


def _producer_config(args: argparse.Namespace) -> dict:
    return {"compression.type": args.compression} if args.compression != "none" else {}


def _gc_stats() -> None:
    import atexit
    import gc

    stats = {"seconds": 0.0, "collections": [0, 0, 0], "started": 0.0, "cpu": time.process_time()}

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            stats["started"] = time.perf_counter()
        else:
            stats["seconds"] += time.perf_counter() - stats["started"]
            stats["collections"][info["generation"]] += 1

    gc.callbacks.append(callback)
    atexit.register(lambda: print(json.dumps({"gc_seconds": round(stats["seconds"], 3), "collections": stats["collections"],
                                              "cpu_seconds": round(time.process_time() - stats["cpu"], 2)}),
                                  file=sys.stderr, flush=True))


def server_process(args: argparse.Namespace) -> None:
    import functools
    import logging

    from eventing.compiler import load_plan
    from eventing.ingress import KafkaWriter, serve

    logging.basicConfig(level=logging.WARNING)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(MANIFEST)
    plan = load_plan(f.name)
    os.unlink(f.name)
    bare = args.impl == "bare"
    if os.environ.get("KNFLOW_BENCH_GC_STATS"):  # time spent collecting, printed to stderr at exit
        _gc_stats()
    serve(plan, args.bootstrap_servers or "127.0.0.1:1", port=args.port, workers=args.workers,
          writer_factory=BareWriter if bare else functools.partial(KafkaWriter, **_producer_config(args)),
          create_topics=not bare, tune_gc=not args.default_gc, server=args.server)


# ---------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(port: int, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"ingress on port {port} not ready after {timeout} s")


def _topic_size(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "knflow-bench", "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions)
    finally:
        consumer.close()


def run_case(args: argparse.Namespace, case: str, impl: str, mode: str, clients: int, workers: int = 1,
             seconds: float | None = None) -> dict:
    port = _free_port()
    seconds = args.seconds if seconds is None else seconds
    me = [sys.executable, str(Path(__file__).resolve())]
    server = subprocess.Popen([*me, "--role", "server", "--impl", impl, "--port", str(port), "--workers", str(workers),
                               "--bootstrap-servers", args.bootstrap_servers or "", "--compression", args.compression,
                               "--server", args.server, *(["--default-gc"] if args.default_gc else [])],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    topic = f"knative-broker-{NAMESPACE}-{BROKER}"
    try:
        _wait_ready(port)
        before = _topic_size(args.bootstrap_servers, topic) if impl == "kafka" else 0
        run = subprocess.run([*me, "--role", "client", "--port", str(port), "--mode", mode, "--clients", str(clients),
                              "--batch", str(args.batch), "--seconds", str(seconds), "--warmup", str(args.warmup)],
                             capture_output=True, text=True, timeout=seconds + args.warmup + 120)
        if run.returncode != 0:
            raise RuntimeError(f"client failed: {run.stderr[-2000:]}")
        result = json.loads(run.stdout.strip().splitlines()[-1])
        line = {"bench": "ingress", "case": case, "impl": impl, "mode": mode, "clients": clients, "workers": workers,
                "event_bytes": EVENT_BYTES, **result}
        if impl == "kafka":
            time.sleep(0.5)
            line["stored"] = _topic_size(args.bootstrap_servers, topic) - before
        print(json.dumps(line), flush=True)
        return line
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["driver", "server", "client"], default="driver")
    parser.add_argument("--impl", choices=["kafka", "bare"], default="kafka")
    parser.add_argument("--mode", choices=["binary", "structured", "batch"], default="binary")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=128)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--batch-clients", type=int, default=16, help="connections of the batch case")
    parser.add_argument("--workers", type=int, default=2, help="workers of the scaling case (server role: its workers)")
    parser.add_argument("--bootstrap-servers", default="")
    parser.add_argument("--cases", default="concurrent,batch,sequential,workers")
    parser.add_argument("--compression", default="none", choices=["none", "lz4", "zstd", "snappy", "gzip"],
                        help="the ingress producer's compression.type (knflow ingress: none)")
    parser.add_argument("--server", choices=["granian", "aiohttp"], default="granian",
                        help="the ingress's HTTP server (knflow ingress: granian)")
    parser.add_argument("--default-gc", action="store_true",
                        help="the server keeps CPython's garbage-collector settings (knflow ingress tunes them)")
    parser.add_argument("--rounds", type=int, default=2, help="alternated runs of each comparison; the best counts")
    parser.add_argument("--kafka-warmup", type=float, default=15.0,
                        help="seconds of binary-mode load through the ingress before the first measured case "
                             "(printed as case warmup): a freshly started Kafka's JVM is still compiling its "
                             "produce path, which cost the first Kafka case ~40%% of its rate")
    args = parser.parse_args()
    if args.role == "server":
        return server_process(args)
    if args.role == "client":
        return client_process(args)

    kafka = None
    if not args.bootstrap_servers:
        from tests.conftest import KafkaService, free_port_pair  # the test session's Kafka service, outside pytest

        port = free_port_pair()
        kafka = KafkaService(f"127.0.0.1:{port}", port, Path(tempfile.mkdtemp(prefix="knflow-bench-kafka-")))
        kafka.start()
        args.bootstrap_servers = kafka.bootstrap
    cases = args.cases.split(",")
    summary: dict = {"bench": "ingress", "case": "summary"}

    def best(*runs: tuple) -> list[dict]:
        """Runs (case, impl, mode, clients, workers) alternated ``--rounds`` times, so both
        sides of a comparison see the same machine; the best run of each (the one least
        disturbed by whatever else shares the cores)."""
        results: list[list[dict]] = [[] for _ in runs]
        for _ in range(args.rounds):
            for n, run in enumerate(runs):
                results[n].append(run_case(args, *run))
        key = (lambda r: -r.get("p50_ms", 0)) if runs[0][3] == 1 else (lambda r: r["events_per_s"])
        return [max(r, key=key) for r in results]

    try:
        if args.kafka_warmup > 0:
            run_case(args, "warmup", "kafka", "binary", args.clients, seconds=args.kafka_warmup)
        if "concurrent" in cases:
            for mode in ("binary", "structured"):
                bare, real = best(("concurrent", "bare", mode, args.clients), ("concurrent", "kafka", mode, args.clients))
                ratio = round(real["events_per_s"] / bare["events_per_s"], 3) if bare["events_per_s"] else None
                print(json.dumps({"bench": "ingress", "case": "ratio", "mode": mode, "events_per_s": real["events_per_s"],
                                  "bare_events_per_s": bare["events_per_s"], "ratio": ratio}), flush=True)
                if mode == "binary":
                    summary.update(events_per_s=real["events_per_s"], bare_events_per_s=bare["events_per_s"], ratio=ratio)
                else:
                    summary.update(structured_events_per_s=real["events_per_s"],
                                   structured_bare_events_per_s=bare["events_per_s"], structured_ratio=ratio)
        if "batch" in cases:
            clients = args.batch_clients
            bare, real = best(("batch", "bare", "batch", clients), ("batch", "kafka", "batch", clients))
            summary.update(batch_events_per_s=real["events_per_s"], batch_bare_events_per_s=bare["events_per_s"],
                           batch_ratio=round(real["events_per_s"] / bare["events_per_s"], 3) if bare["events_per_s"] else None)
        if "sequential" in cases:
            bare, real = best(("sequential", "bare", "binary", 1), ("sequential", "kafka", "binary", 1))
            summary.update(sequential_p50_ms=real.get("p50_ms"), sequential_p99_ms=real.get("p99_ms"),
                           sequential_bare_p50_ms=bare.get("p50_ms"), sequential_bare_p99_ms=bare.get("p99_ms"))
        if "workers" in cases:
            one, many = best(("workers", "kafka", "binary", args.clients, 1),
                             ("workers", "kafka", "binary", args.clients, args.workers))
            summary.update(workers=args.workers, workers_1_events_per_s=one["events_per_s"],
                           **{f"workers_{args.workers}_events_per_s": many["events_per_s"]},
                           workers_scaling=round(many["events_per_s"] / one["events_per_s"], 3) if one["events_per_s"] else None)
    finally:
        if kafka is not None:
            kafka.stop()
            shutil.rmtree(kafka.state_dir, ignore_errors=True)  # its log: GBs after a full run
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
