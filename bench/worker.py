"""The Flink job's Python operator alone: ``BrokerWorker`` fed the live-stream example's
events as packed batches, delivering to a real HTTP consumer, without Flink or Kafka.

What it isolates: the Python work per event that the job does between the JVM handing a
batch over and the sink's records coming back (unpack, decode, route, first attempts,
chains on the delivery loop, outcome documents, packing of the output), so a change to
that path can be measured in seconds, on a shared machine, by CPU time rather than by a
three-minute end-to-end run. The figure to compare is ``cpu_us_per_event`` (the process's
CPU time, all its threads, an HTTP client's own (pyreqwest's Tokio thread) included, over the events); the
consumer runs in its own process and is not counted. ``events_per_s`` is wall time and
moves with the machine's load.

Each round feeds ``--events`` events in batches of ``--batch`` records over ``--partitions``
partitions, as the Batcher would, through ``BrokerPartitionFunction``'s steps: batch ->
``unpack_batch``/``unpack_record`` -> ``BrokerWorker.on_records`` (pipelined: it returns
without waiting) -> ``out_batch``; then a marker per partition (what a checkpoint does),
until every chain settled. The collector is tuned as the job tunes it
(``transforms/gc_tuning.py``) unless ``--default-gc``. Pin it to one core (``taskset -c 1``)
for figures that compare: unpinned, the loop thread, the operator's thread and the HTTP
client's threads hand the GIL across cores, which costs ~25% more CPU here.

Usage: ``python bench/worker.py [--events 20000] [--batch 500] [--rounds 3] [--default-gc]
[--http-client uvhttp,pyreqwest]``. Prints one JSON line per round and a summary line with the
best (lowest) CPU per event; with several ``--http-client`` names each round runs each sender
in turn (an A/B in one process, one run), and there is a summary line per sender.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "live-stream"))

from consumer import Consumer  # noqa: E402 - bench/consumer.py: the script's folder is on sys.path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "live-stream"
from pipeline import REFS  # noqa: E402 - the same subscribers as the end-to-end benchmark


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _batches(events: list[Any], topic: str, partitions: int, size: int) -> list[tuple[str, bytes]]:
    """The events as the JVM hands them over: packed records, batched per partition."""
    from transforms.codec import encode_kafka
    from transforms.packing import InRecord, pack_batch, pack_record

    per_partition: list[list[bytes]] = [[] for _ in range(partitions)]
    for offset, event in enumerate(events):
        key, headers, value = encode_kafka(event, "binary")
        partition = offset % partitions
        record = InRecord(topic, partition, offset, int(time.time() * 1000), key, value, dict(headers))
        per_partition[partition].append(pack_record(record))
    batches = [[pack_batch(records[at:at + size], f"{topic}/{partition}") for at in range(0, len(records), size)]
               for partition, records in enumerate(per_partition)]
    # round robin over the partitions, as a source reading all of them hands them over
    return [(f"{topic}/{partition}", batch) for round_ in itertools.zip_longest(*batches)
            for partition, batch in enumerate(round_) if batch is not None]


def run_round(plan: Any, batches: list[tuple[str, bytes]], count: int, url: str, consumer: Consumer,
              tune_gc: bool = True, http_client: str | None = None) -> dict[str, Any]:
    from pipelines.delivery_settings import DeliverySettings
    from pipelines.event_loop import new_event_loop
    from pipelines.flink_functions import out_batch
    from transforms.gc_tuning import tune_for_streaming
    from transforms.broker_worker import BrokerWorker, LoopThread
    from transforms.kafka_plane import Topics
    from transforms.packing import unpack_batch, unpack_record
    from transforms.scheduler import MemoryPartitionState

    settings = DeliverySettings(ref_urls={name: f"{url}/{name}" for name in REFS})
    if http_client:
        settings = dataclasses.replace(settings, http_client=http_client)
    loop = LoopThread(lambda: new_event_loop(settings.event_loop))
    engine = settings.engine({t.key: t for t in plan.delivery_triggers()})
    topics = Topics.for_job("bench-worker")
    worker = BrokerWorker(plan, topics, engine, loop, concurrency=settings.concurrency, wait_s=0.2, collect_s=0.005)
    if tune_gc:  # as BrokerPartitionFunction.open does
        tune_for_streaming()
    states: dict[str, MemoryPartitionState] = {}
    before = sum(consumer.counts().values())
    out_bytes = 0
    cpu, wall = _cpu(), time.perf_counter()
    for group, batch in batches:
        state = states.setdefault(group, MemoryPartitionState())
        records = [unpack_record(record) for record in unpack_batch(batch)]
        out, _timers = worker.on_records(group, state, records)
        if out:
            out_bytes += len(out_batch(out))
    for _ in range(200):  # checkpoint markers until every chain settled
        pending = False
        for group, state in states.items():
            out, timers = worker.on_marker(group, state)
            if out:
                out_bytes += len(out_batch(out))
            pending = pending or bool(worker._running[group])
        if not pending:
            break
    cpu, wall = _cpu() - cpu, time.perf_counter() - wall
    worker.close()
    deliveries = sum(consumer.counts().values()) - before
    return {"events": count, "deliveries": deliveries, "seconds": round(wall, 3),
            "events_per_s": round(count / wall, 1), "cpu_us_per_event": round(cpu / count * 1e6, 1),
            "out_bytes": out_bytes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--switch-interval", type=float, default=None, help="sys.setswitchinterval (seconds)")
    parser.add_argument("--default-gc", action="store_true", help="leave the garbage collector as CPython sets it")
    parser.add_argument("--http-client", default=None,
                        help="sender name(s), comma-separated: each round runs each in turn (default: the job's default)")
    args = parser.parse_args(argv)
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)

    import make_events

    from eventing.compiler import load_plan
    from transforms.codec import event_from_dict

    plan = load_plan([str(EXAMPLE)])
    topic = plan.brokers[0].topic
    consumer = Consumer([0])
    url = f"http://127.0.0.1:{consumer.ports[0]}"
    try:
        events = [event_from_dict(doc) for doc in make_events.events(args.events)]
        batches = _batches(events, topic, args.partitions, args.batch)
        clients = args.http_client.split(",") if args.http_client else [None]
        best: dict[str | None, dict[str, Any]] = {}
        for number in range(args.rounds):
            for client in clients:
                result = run_round(plan, batches, len(events), url, consumer, not args.default_gc, client)
                tag = {"http_client": client} if client else {}
                print(json.dumps({"bench": "worker", "case": "round", "round": number, **tag, **result}), flush=True)
                if client not in best or result["cpu_us_per_event"] < best[client]["cpu_us_per_event"]:
                    best[client] = result
        for client, result in best.items():
            tag = {"http_client": client} if client else {}
            print(json.dumps({"bench": "worker", "case": "summary", **tag, **result}), flush=True)
    finally:
        consumer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
