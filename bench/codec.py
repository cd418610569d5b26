"""CloudEvents codec throughput on realistic live-streaming events.

Events look like the broker topic's records in the live-streaming demo: 8 attributes
(``specversion``, ``id``, ``source``, ``type``, ``time``, ``datacontenttype`` and the
extensions ``partitionkey`` and ``knativebrokerttl``), JSON data with a nested user object.

Cases (``impl`` is always ``codec``, the current ``transforms/codec.py``):

- ``encode_http_binary`` / ``encode_http_structured``: a *distinct* event per call, decoded
  from Kafka as the pipeline does (each event is encoded once: the cold path);
- ``encode_http_binary_sdk``: distinct events built with ``CloudEvent(...)`` (``time`` is
  ``datetime.now()``, never decoded), like those of ``bench/delivery.py``;
- ``encode_http_binary_fanout``: the same event encoded again and again, as when one event
  is delivered to several triggers in process (there is no memo: a cold encode's cost);
- ``encode_kafka_binary``, ``decode_kafka_binary``, ``decode_kafka_structured``,
  ``decode_http_binary``, ``decode_http_structured``;
- ``decode_kafka_binary_keep``: ``decode_kafka(keep_payload=True)``, as the job's intake
  decodes (the payload stays bytes, unparsed); ``decode_http_binary_keep``: the ingress's
  ``decode_http(keep_payload=True)`` (the payload is checked, kept);
- ``encode_http_binary_kept`` / ``encode_http_structured_kept``: events decoded as the
  intake decodes them (payload bytes: sent as is, or embedded in the document as is).

Each case makes ``--passes`` passes of ``POOL`` calls over fresh inputs (built untimed),
timed in chunks of ``CHUNK`` calls, and reports the best chunk: short runs, the best of
many, are the least disturbed on a shared machine.
Prints one JSON object per line: bench, case, impl, ops_per_s, us_per_op.
Usage: ``python bench/codec.py [--passes 30] [--cases a,b] [--profile CASE]``.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloudevents.core.v1.event import CloudEvent  # noqa: E402

from transforms.codec import decode_http, decode_kafka, encode_http, encode_kafka  # noqa: E402

ROOMS = ["room-7", "room-42", "room-99"]
COMMENTS = ["hello!", "great stream", "lol", "gg", "love it", "¡qué bueno! 🎉"]
GIFTS = [("rose", 10), ("rocket", 500), ("heart", 50), ("castle", 1000), ("star", 120)]
POOL = 1024  # distinct inputs of one pass (a fresh pool each pass for the cold cases)
CHUNK = 128  # calls timed together


def _documents(count: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    start = datetime(2026, 11, 28, 20, 0, 0, tzinfo=timezone.utc)
    docs = []
    for n in range(count):
        room = rng.choice(ROOMS)
        level = rng.choice([1, 3, 8, 15, 31, 45])
        data: dict[str, Any] = {
            "room": room,
            "user": {"id": f"u{rng.randrange(1000):03d}", "name": f"viewer {n}", "level": level,
                     "badges": ["vip"] if level >= 30 else rng.choice([[], ["fan"]])},
        }
        if rng.random() < 0.5:
            data["text"] = rng.choice(COMMENTS)
            type_ = "com.live.comment.posted"
        else:
            gift, coins = rng.choice(GIFTS)
            data.update(gift=gift, coins=coins)
            type_ = "com.live.gift.sent"
        docs.append({
            "specversion": "1.0",
            "id": f"evt-{n:05d}",
            "source": f"/live/rooms/{room}",
            "type": type_,
            "time": (start + timedelta(milliseconds=37 * n, microseconds=n)).isoformat().replace("+00:00", "Z"),
            "datacontenttype": "application/json",
            "partitionkey": room,
            "knativebrokerttl": 255,
            "data": data,
        })
    return docs


def _kafka_binary(doc: dict[str, Any]) -> tuple[list[tuple[str, bytes]], bytes]:
    headers = [(f"ce_{k}", str(v).encode()) for k, v in doc.items() if k not in ("data", "datacontenttype")]
    headers.append(("content-type", doc["datacontenttype"].encode()))
    return headers, json.dumps(doc["data"], separators=(",", ":"), ensure_ascii=False).encode()


def _kafka_structured(doc: dict[str, Any]) -> tuple[list[tuple[str, bytes]], bytes]:
    return ([("content-type", b"application/cloudevents+json; charset=utf-8")],
            json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode())


def _cases() -> dict[str, tuple[Callable[[Any], Any], Callable[[], list[Any]]]]:
    """name -> (operation on one input, factory of the input pool)."""
    docs = _documents(POOL)

    kafka_records = [_kafka_binary(d) for d in docs]

    def fresh_events() -> list[Any]:  # new event objects each pass: nothing cached from before
        return [decode_kafka(h, v) for h, v in kafka_records]

    def kept_events() -> list[Any]:  # as the job's intake decodes them
        return [decode_kafka(h, v, keep_payload=True) for h, v in kafka_records]

    kafka_structured = [_kafka_structured(d) for d in docs]
    # HTTP messages as a producer sends them (built once: decoding does not change them)
    http_binary = [encode_http(e, "binary") for e in fresh_events()]
    http_structured = [encode_http(e, "structured") for e in fresh_events()]
    one = fresh_events()[0]

    def sdk_events() -> list[Any]:  # as bench/delivery.py builds them
        return [CloudEvent({k: v for k, v in d.items() if k not in ("data", "time")}, d["data"]) for d in docs]

    return {
        "encode_http_binary": (lambda e: encode_http(e, "binary"), fresh_events),
        "encode_http_binary_sdk": (lambda e: encode_http(e, "binary"), sdk_events),
        "encode_http_structured": (lambda e: encode_http(e, "structured"), fresh_events),
        "encode_http_binary_fanout": (lambda e: encode_http(e, "binary"), lambda: [one] * POOL),
        "encode_kafka_binary": (lambda e: encode_kafka(e, "binary"), fresh_events),
        "encode_http_binary_kept": (lambda e: encode_http(e, "binary"), kept_events),
        "encode_http_structured_kept": (lambda e: encode_http(e, "structured"), kept_events),
        "decode_kafka_binary": (lambda r: decode_kafka(*r), lambda: kafka_records),
        "decode_kafka_binary_keep": (lambda r: decode_kafka(*r, keep_payload=True), lambda: kafka_records),
        "decode_kafka_structured": (lambda r: decode_kafka(*r), lambda: kafka_structured),
        "decode_http_binary": (lambda r: decode_http(*r), lambda: http_binary),
        "decode_http_binary_keep": (lambda r: decode_http(*r, keep_payload=True), lambda: http_binary),
        "decode_http_structured": (lambda r: decode_http(*r), lambda: http_structured),
    }


def _best(op: Callable[[Any], Any], factory: Callable[[], list[Any]], passes: int) -> float:
    """Seconds per call of the fastest chunk of ``CHUNK`` calls in ``passes`` passes over
    fresh inputs (built untimed)."""
    best = float("inf")
    clock = time.perf_counter
    for _ in range(passes):
        inputs = factory()
        for at in range(0, len(inputs), CHUNK):
            chunk = inputs[at:at + CHUNK]
            start = clock()
            for item in chunk:
                op(item)
            best = min(best, (clock() - start) / len(chunk))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=30, help="timed passes per case; the best counts")
    parser.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    parser.add_argument("--profile", default=None, help="cProfile one case instead and print the top functions")
    args = parser.parse_args(argv)
    cases = _cases()
    if args.profile:
        import cProfile
        import pstats

        op, factory = cases[args.profile]
        profiler = cProfile.Profile()
        for _ in range(10):
            inputs = factory()
            profiler.enable()
            for item in inputs:
                op(item)
            profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        return 0
    names = args.cases.split(",") if args.cases else list(cases)
    for name in names:
        op, factory = cases[name]
        op(factory()[0])  # warm up
        seconds = _best(op, factory, args.passes)
        print(json.dumps({"bench": "codec", "case": name, "impl": "codec", "ops_per_s": round(1 / seconds, 1),
                          "us_per_op": round(seconds * 1e6, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
