"""Delivery throughput: DeliveryEngine.attempt_many next to a bare client loop.

For each client implementation (``make_sender`` names), event loop (uvloop, asyncio),
consumer latency (0 ms, 20 ms) and concurrency (1, 16, 64, 256):

- ``bare``:   the same sender POSTing one pre-encoded CloudEvent from ``concurrency``
              coroutines, no engine (the ceiling for that client);
- ``bare_encode``: the same loop, but encoding the event (``codec.encode_http``) for each
              request, as any deliverer must: the gap to ``bare`` is the codec's cost, the
              gap from here to ``engine`` is the engine's own;
- ``engine``: ``DeliveryEngine.attempt_many`` over fresh tasks (POST with ``Prefer: reply``,
              then the outcome), counting ``Delivered`` outcomes. The tasks are read from
              task records of 256 distinct events, made as the runners make them
              (``first_attempts``): each carries its subscriber's request, encoded once per
              event at routing time, so an attempt does not encode (the encoding's cost is
              ``bare_encode`` - ``bare``, paid once per event, not once per trigger or attempt);
- ``engine_from_record``: the same, but each task is read from its record inside the
              measured time, as the Flink job's delivery operator does per record.

All cases run the same fixed number of requests (sized from a short calibration run to
last about ``--seconds``), so the tail where the last requests drain costs them the same.
The cases run in rounds, back to back, ``--repeats`` rounds, the order rotating
from round to round. ``ops_per_s`` is the best run of a case (the machine may be shared:
the best run is the one least disturbed); the ratios are medians of the per-round ratios,
each between runs a fraction of a second apart, so a slow spell of the machine that lasts
longer than a round cancels out instead of deciding the result (``best_ratio_to_bare`` is
the ratio of the best runs, for comparison). Many short rounds (the defaults) gave ratios
within a few percent of each other from run to run here; five rounds of 0.3 s did not.

The consumer is a minimal HTTP/1.1 keep-alive server (asyncio protocol on uvloop) in a
separate process, pinned to another core than the measured process, so the client side
is what is measured. The measured process is pinned to one core: with pyreqwest the Tokio
I/O thread shares that core, so "one core" holds for it too.

Prints one JSON object per line: bench, case, impl, loop, concurrency, latency_ms,
ops_per_s, requests, seconds (+ ratio_to_bare, ratio_to_bare_encode and best_ratio_to_bare
on engine rows), then a summary line.
Usage: ``python bench/delivery.py [--seconds 0.07] [--repeats 14] [--impls aiohttp,pyreqwest]
[--loops uvloop,asyncio] [--concurrency 1,16,64,256] [--latency 0,20]``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consumer import Consumer  # noqa: E402 - bench/consumer.py: the script's folder is on sys.path

# -- the measured side ------------------------------------------------------------------------
def _event(number: int = 1) -> Any:
    from cloudevents.core.v1.event import CloudEvent

    return CloudEvent(
        {
            "id": f"bench-{number}",
            "source": "/bench/producer",
            "type": "dev.knflow.bench",
            "specversion": "1.0",
            "datacontenttype": "application/json",
            "knativebrokerttl": 255,
        },
        {"order": 42, "items": ["a", "b", "c"], "total": 99.5},
    )


#: Distinct events the engine cycles through: fewer than the codec's caches hold (1,024),
#: as in the job, where an event is read just before its attempt.
_EVENTS = 256


def _events(count: int) -> list[Any]:
    """``count`` distinct events as the runners hand them to the engine: read back from a
    task record (the Flink job's async operator does exactly this), not built with the SDK.
    The difference is the ``time`` attribute: the codec remembers the text a time was read
    from, so sending a read event does not format its time again (an SDK-built event's time
    costs about 1 µs more per request)."""
    from transforms.delivery import DeliveryTask

    return [DeliveryTask.from_bytes(DeliveryTask("bench/t", _event(i)).to_bytes()).event for i in range(count)]


async def _bare(sender: Any, url: str, n: int, concurrency: int, encode: bool = False) -> float:
    """``n`` POSTs from ``concurrency`` coroutines; ``encode``: encode the event per request
    (as the engine must), else POST one pre-encoded body (the client's ceiling)."""
    from transforms.codec import encode_http

    event = _events(1)[0]
    headers, body = encode_http(event, "binary")
    headers["Prefer"] = "reply"
    remaining = iter(range(n))
    ok = 0

    async def worker() -> None:
        nonlocal ok
        post = sender.post
        for _ in remaining:
            if encode:
                h, b = encode_http(event, "binary")
                h["Prefer"] = "reply"
                response = await post(url, h, b, 30.0)
            else:
                response = await post(url, headers, body, 30.0)
            if response.status == 200:
                ok += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))
    elapsed = time.perf_counter() - start
    if ok != n:
        raise RuntimeError(f"bare loop: {ok} of {n} requests got 200")
    return elapsed


def _records(url: str, count: int) -> tuple[dict[str, Any], list[bytes]]:
    """The bench trigger's plan, and the task records of ``count`` distinct events, made the
    way the Flink job's intake makes them (``first_attempts``: encoded once, carried)."""
    from eventing.plan import DeliveryPolicy, Destination, TriggerPlan
    from filters.materialize import materialize_trigger
    from transforms.delivery import first_attempts

    plan = TriggerPlan(
        namespace="bench", name="t", broker="default", filter=materialize_trigger(None, None), filter_spec={},
        subscriber=Destination(uri=url), delivery=DeliveryPolicy(retry=3),
    )
    records = [first_attempts(event, [plan], 0.0)[0].to_bytes() for event in _events(count)]
    return {plan.key: plan}, records


async def _engine(sender: Any, url: str, n: int, concurrency: int, from_record: bool = False) -> float:
    """``attempt_many`` over ``n`` tasks; ``from_record``: each task is read from its record
    inside the measured time (what the Flink delivery operator does per record), else the
    tasks are read before the clock starts (what the engine itself does)."""
    from transforms.delivery import DeliveryEngine, DeliveryTask

    plans, records = _records(url, _EVENTS)
    engine = DeliveryEngine(plans, sender)
    batch = [records[i % _EVENTS] for i in range(n)]
    if from_record:
        outcomes: list[Any] = []
        pending = iter(batch)

        async def worker() -> None:
            attempt, read = engine.attempt, DeliveryTask.from_bytes
            for record in pending:
                outcomes.append(await attempt(read(record)))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))
        return _checked(outcomes, n, time.perf_counter() - start)
    tasks = [DeliveryTask.from_bytes(record) for record in batch]
    start = time.perf_counter()
    outcomes = await engine.attempt_many(tasks, concurrency)
    return _checked(outcomes, n, time.perf_counter() - start)


def _checked(outcomes: list[Any], n: int, elapsed: float) -> float:
    from transforms.delivery import Delivered

    delivered = sum(1 for o in outcomes if type(o) is Delivered)
    if delivered != n:
        raise RuntimeError(f"engine: {delivered} of {n} delivered ({outcomes[0]!r})")
    return elapsed


async def _measure(
    impl: str, url: str, concurrency: int, seconds: float, repeats: int
) -> tuple[int, dict[str, list[float]]]:
    """``n`` and the seconds of each round's run of each case (bare, bare_encode, engine)."""
    from transforms.sender import make_sender

    sender = make_sender(impl, limit=max(concurrency, 1))
    await sender.open()
    try:
        await _bare(sender, url, max(concurrency * 4, 50), concurrency)  # warm up the pool
        probe = max(concurrency * 8, 200)
        rate = probe / await _bare(sender, url, probe, concurrency)
        n = max(int(rate * seconds), concurrency * 4)
        cases = {
            "bare": lambda: _bare(sender, url, n, concurrency),
            "bare_encode": lambda: _bare(sender, url, n, concurrency, encode=True),
            "engine": lambda: _engine(sender, url, n, concurrency),
            "engine_from_record": lambda: _engine(sender, url, n, concurrency, from_record=True),
        }
        order = list(cases)
        runs: dict[str, list[float]] = {name: [] for name in order}
        for round_ in range(repeats):
            shift = round_ % len(order)
            for name in order[shift:] + order[:shift]:
                runs[name].append(await cases[name]())
        return n, runs
    finally:
        await sender.close()


def _median_ratio(base_seconds: list[float], engine_seconds: list[float]) -> float:
    """Median over rounds of engine rate / base rate (same ``n``: base time / engine time)."""
    return round(statistics.median(b / e for b, e in zip(base_seconds, engine_seconds)), 3)


def _ratios(runs: dict[str, list[float]], case: str) -> dict[str, float]:
    """``case``'s rate next to the bare loops: medians of per-round ratios, and of best runs."""
    return {
        "ratio_to_bare": _median_ratio(runs["bare"], runs[case]),
        "ratio_to_bare_encode": _median_ratio(runs["bare_encode"], runs[case]),
        "best_ratio_to_bare": round(min(runs["bare"]) / min(runs[case]), 3),
    }


def _run_loop(loop_name: str, coro_factory: Callable[[], Any]) -> Any:
    if loop_name == "uvloop":
        import uvloop

        return uvloop.run(coro_factory())
    return asyncio.run(coro_factory())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.07, help="target duration of one measured run")
    parser.add_argument("--repeats", type=int, default=14, help="rounds of the cases (see above)")
    parser.add_argument("--impls", default=None, help="sender names (default: all)")
    parser.add_argument("--loops", default="uvloop,asyncio")
    parser.add_argument("--concurrency", default="1,16,64,256")
    parser.add_argument("--latency", default="0,20", help="consumer latencies in ms")
    args = parser.parse_args(argv)

    from transforms.sender import sender_names

    impls = args.impls.split(",") if args.impls else list(sender_names())
    loops = args.loops.split(",")
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    latencies = [int(ms) for ms in args.latency.split(",")]

    cpus = sorted(os.sched_getaffinity(0))
    bench_cpu, consumer_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    consumer = Consumer(latencies, consumer_cpu)
    ports = consumer.ports
    if bench_cpu is not None:
        os.sched_setaffinity(0, {bench_cpu})  # before any client thread exists

    started = time.perf_counter()
    best: dict[tuple[str, int], dict[str, Any]] = {}
    try:
        for impl in impls:
            for loop_name in loops:
                for ms in latencies:
                    url = f"http://127.0.0.1:{ports[ms]}/"
                    for concurrency in concurrencies:
                        n, runs = _run_loop(
                            loop_name, lambda: _measure(impl, url, concurrency, args.seconds, args.repeats)
                        )
                        common = {"bench": "delivery", "impl": impl, "loop": loop_name,
                                  "concurrency": concurrency, "latency_ms": ms, "requests": n}
                        best_s = {name: min(times) for name, times in runs.items()}
                        for name in runs:
                            row = {**common, "case": name, "ops_per_s": round(n / best_s[name], 1),
                                   "seconds": round(best_s[name], 3)}
                            if name.startswith("engine"):
                                row.update(_ratios(runs, name))
                            print(json.dumps(row), flush=True)
                        engine_rate = n / best_s["engine"]
                        key = ("engine", ms)
                        if key not in best or engine_rate > best[key]["ops_per_s"]:
                            best[key] = {"impl": impl, "loop": loop_name, "concurrency": concurrency,
                                         "ops_per_s": round(engine_rate, 1), **_ratios(runs, "engine"),
                                         "from_record": _ratios(runs, "engine_from_record")}
    finally:
        consumer.stop()
    summary = {"bench": "delivery", "case": "summary", "wall_seconds": round(time.perf_counter() - started, 1),
               "bench_cpu": bench_cpu, "consumer_cpu": consumer_cpu,
               "best_engine_0ms": best.get(("engine", 0)), "best_engine_20ms": best.get(("engine", 20))}
    b0 = best.get(("engine", 0))
    if b0:
        summary["target_8000_per_s_one_core"] = b0["ops_per_s"] >= 8000
        summary["target_80pct_of_bare"] = b0["ratio_to_bare"] >= 0.8
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
