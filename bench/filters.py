"""Filter evaluation benchmarks: one JSON object per line.

Each line has at least ``bench``, ``case``, ``impl`` and ``ops_per_s`` (evaluations per
second on one core). The CEL part compares, for realistic live-streaming trigger filters,

* ``celpy-interpreted``: celpy's InterpretedRunner (what ``cel:`` used before, and falls back to),
* ``celpy-compiled``:    celpy's CompiledRunner (celpy's transpiler),
* ``ours``:              ``filters.cel_compiler`` (what ``CelFilter`` uses now),

each evaluating on an event whose conversion is already cached (the steady state: an
event is converted once and shared by all triggers of a broker; the conversion itself
is reported as its own case). Every implementation must agree on every event, or the
script exits non-zero. A final ``summary`` line gives the median speed-ups.

Usage: ``python bench/filters.py [--quick] [--case NAME]``. Other benchmarks (routing,
the index) can add their own ``*_cases()`` + runner functions and call them in ``main``.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import celpy  # noqa: E402
from celpy.celparser import CELParser  # noqa: E402

from filters.base import EventView  # noqa: E402
from filters.cel import _ENV, celpy_activation  # noqa: E402
from filters.cel_compiler import compile_expression  # noqa: E402
from filters.cel_compiler import runtime as rt  # noqa: E402
from routing import pin_one_core  # noqa: E402


def emit(**fields: Any) -> None:
    print(json.dumps(fields, sort_keys=False), flush=True)


def rate(fn: Callable[[Any], Any], args: list, budget: float) -> float:
    """Calls per second of ``fn`` cycling over ``args`` for about ``budget`` seconds.

    An exception is an evaluation result too (a CEL error): it is caught, at the same
    cost for every implementation."""
    n = 0
    batch = max(1, 64 // len(args)) * len(args)
    loops = batch // len(args)
    start = time.perf_counter()
    deadline = start + budget
    while True:
        for _ in range(loops):
            for a in args:
                try:
                    fn(a)
                except Exception:
                    pass
        n += batch
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


# --------------------------------------------------------------------------------------
# CEL

T0 = datetime(2024, 11, 8, 19, 45, 12, 250000, tzinfo=timezone.utc)


def live_events() -> list[EventView]:
    """A few events of a live-streaming platform (gifts, chat, viewers, streams)."""
    base = {"specversion": "1.0", "datacontenttype": "application/json", "tenant": "acme", "region": "eu"}

    def event(i: int, type_: str, source: str, subject: str, data: Any, **ext: Any) -> EventView:
        attrs = dict(base, id=f"evt-{i}", type=type_, source=source, subject=subject, time=T0 + timedelta(hours=5 * i, minutes=7 * i), priority=i % 10)
        attrs.update(ext)
        return EventView(attrs, data)

    user = lambda level, vip: {"id": f"u{level}", "level": level, "vip": vip, "country": "DE"}  # noqa: E731
    return [
        event(1, "com.live.gift.sent", "/live/eu/channel/1207", "channel/1207/premium",
              {"amount": 25.0, "currency": "EUR", "user": user(7, True), "tags": ["vip", "top-fan"], "gift": {"kind": "rose", "count": 3},
               "viewers": 1523, "message": "free gift for everyone", "items": [{"sku": "rose", "price": 5.0}, {"sku": "crown", "price": 20.5}]}),
        event(2, "com.live.chat.message", "/live/eu/channel/1207", "channel/1207",
              {"user": user(3, False), "tags": ["new"], "viewers": 87, "message": "hello from Berlin", "items": []}),
        event(3, "com.live.viewer.joined", "/live/us/channel/88", "channel/88/premium",
              {"user": user(9, True), "tags": [], "viewers": 40211, "message": "", "items": []}, region="us"),
        event(4, "com.live.gift.sent", "/live/apac/channel/5/test", "channel/5",
              {"amount": 150.0, "currency": "JPY", "user": user(1, False), "tags": ["whale", "vip", "gifter", "new"],
               "gift": {"kind": "castle", "count": 1}, "viewers": 9, "message": "GIVEAWAY now", "items": [{"sku": "castle", "price": 150.0}]}),
        event(5, "com.live.subscription.created", "/live/eu/channel/9", "channel/9",
              {"amount": 4.99, "currency": "EUR", "user": user(5, True), "tags": ["vip"], "viewers": 2100, "message": "thanks!", "items": []}),
        event(6, "com.live.stream.started", "/live/eu/channel/1207", "channel/1207/premium", None),
    ]


CEL_CASES: list[tuple[str, str]] = [
    ("three_clause", 'type == "com.live.gift.sent" && data.amount >= 10.0 && source.startsWith("/live/eu/")'),
    ("chat_level", 'type == "com.live.chat.message" && data.user.level >= 5'),
    ("exists_vip_tag", 'data.tags.exists(t, t == "vip")'),
    ("type_in_list", 'type in ["com.live.gift.sent", "com.live.subscription.created"] && data.amount > 100.0'),
    ("has_and_bool", "has(data.user.vip) && data.user.vip == true"),
    ("subject_prefix_suffix", 'subject.startsWith("channel/") && subject.endsWith("/premium")'),
    ("message_contains_or_regex", 'data.message.contains("giveaway") || data.message.matches("(?i)free\\\\s+gift")'),
    ("prime_time_hours", "time.getHours() >= 18 && time.getHours() < 23"),
    ("weekend_in_berlin", 'time.getDayOfWeek("Europe/Berlin") in [0, 6]'),
    ("after_timestamp_and_priority", 'time > timestamp("2024-11-01T00:00:00Z") && priority >= 5'),
    ("tags_size_and_all", "size(data.tags) > 1 && data.tags.all(t, t.size() < 16)"),
    ("gift_ternary", 'data.gift.kind == "rose" ? data.gift.count >= 3 : data.amount > 50.0'),
    ("extensions_and_type_prefix", 'region == "eu" && tenant == "acme" && type.startsWith("com.live.")'),
    ("viewers_not_test", 'data.viewers > 1000 && !source.endsWith("/test")'),
    ("expensive_items_filter", "data.items.filter(i, i.price > 20.0).size() > 0"),
    ("or_of_types", 'type == "com.live.stream.started" || type == "com.live.viewer.joined" || data.user.level > 8'),
]


@dataclass
class CelCase:
    name: str
    expression: str
    runners: dict[str, Callable[[Any], Any]] = field(default_factory=dict)
    inputs: dict[str, list] = field(default_factory=dict)


def _transpiler_ast(expression: str) -> Any:
    """celpy's CompiledRunner needs TranspilerTree nodes, but celpy's parser is a
    singleton created with the first Environment's tree class: build a second one."""
    saved = CELParser.CEL_PARSER
    CELParser.CEL_PARSER = None
    try:
        env = celpy.Environment(runner_class=celpy.CompiledRunner)
        return env, env.compile(expression)
    finally:
        CELParser.CEL_PARSER = saved


def _normal(value: Any) -> Any:
    if isinstance(value, celpy.celtypes.BoolType):
        return bool(value)
    return value


def cel_cases(only: str | None = None) -> list[CelCase]:
    events = live_events()
    out = []
    for name, expression in CEL_CASES:
        if only and only != name:
            continue
        case = CelCase(name, expression)
        ast = _ENV.compile(expression)
        interpreted = _ENV.program(ast)
        env, tast = _transpiler_ast(expression)
        compiled = env.program(tast)
        ours = compile_expression(ast, expression)
        activations = [celpy_activation(e) for e in events]  # cached on the events
        for e in events:
            rt.activate(e)  # our conversion, cached as well
        case.runners = {"celpy-interpreted": interpreted.evaluate, "celpy-compiled": compiled.evaluate, "ours": ours}
        case.inputs = {"celpy-interpreted": activations, "celpy-compiled": activations, "ours": events}
        # every implementation must give the same result on every event
        for i, e in enumerate(events):
            results = {}
            for impl, fn in case.runners.items():
                try:
                    results[impl] = repr(_normal(fn(case.inputs[impl][i])))
                except Exception:  # an error result
                    results[impl] = "error"
            if results["ours"] != results["celpy-interpreted"]:
                raise SystemExit(f"{name}: ours and celpy disagree on event {i}: {results}")
            if results["celpy-compiled"] != results["celpy-interpreted"]:
                # celpy's transpiler is not its reference: note it, keep measuring
                emit(bench="cel", case=name, impl="celpy-compiled", ops_per_s=None, note=f"event {i}: CompiledRunner gives {results['celpy-compiled']}, InterpretedRunner {results['celpy-interpreted']}")
        out.append(case)
    return out


def run_cel(cases: list[CelCase], budget: float) -> dict[str, float]:
    speedups: dict[str, list[float]] = {"celpy-interpreted": [], "celpy-compiled": []}
    for case in cases:
        rates = {}
        for impl, fn in case.runners.items():
            # celpy is slow: a shorter budget gives the same precision in ops
            rates[impl] = rate(fn, case.inputs[impl], budget * (0.5 if impl != "ours" else 1.0))
            emit(bench="cel", case=case.name, impl=impl, ops_per_s=round(rates[impl], 1), expression=case.expression)
        for impl in speedups:
            speedups[impl].append(rates["ours"] / rates[impl])
    return {impl: statistics.median(v) for impl, v in speedups.items() if v}


def run_cel_conversion(budget: float) -> None:
    """Converting one event (once per event, shared by every trigger)."""
    events = live_events()

    def celpy_conv(e: EventView) -> Any:
        e.cache.clear()
        return celpy_activation(e)

    def ours_conv(e: EventView) -> Any:
        e.cache.clear()
        return rt.activate(e)

    for impl, fn in (("celpy", celpy_conv), ("ours", ours_conv)):
        emit(bench="cel", case="event_conversion", impl=impl, ops_per_s=round(rate(fn, events, budget), 1))


def run_cel_filter_path(budget: float) -> None:
    """Through ``CelFilter.filter`` and ``CelFilter.fast()`` (what the index calls)."""
    from filters.materialize import materialize

    events = live_events()
    f = materialize({"cel": CEL_CASES[0][1]})
    for e in events:
        f.filter(e)
    emit(bench="cel", case="celfilter_three_clause", impl=f"CelFilter.filter ({f.engine})", ops_per_s=round(rate(f.filter, events, budget), 1))
    emit(bench="cel", case="celfilter_three_clause", impl=f"CelFilter.fast() ({f.engine})", ops_per_s=round(rate(f.fast(), events, budget), 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing budget")
    parser.add_argument("--case", help="only this CEL case")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one core")
    args = parser.parse_args(argv)
    if not args.no_pin:
        pin_one_core()
    logging.getLogger("celpy").setLevel(logging.CRITICAL)  # celpy logs every error result
    budget = 0.15 if args.quick else 0.8
    started = time.perf_counter()
    cases = cel_cases(args.case)
    medians = run_cel(cases, budget)
    if not args.case:
        run_cel_conversion(budget / 2)
        run_cel_filter_path(budget / 2)
    emit(
        bench="cel",
        case="summary",
        impl="ours",
        ops_per_s=None,
        cases=len(cases),
        median_speedup_vs_celpy_compiled=round(medians.get("celpy-compiled", 0.0), 1),
        median_speedup_vs_celpy_interpreted=round(medians.get("celpy-interpreted", 0.0), 1),
        seconds=round(time.perf_counter() - started, 1),
    )
    if not args.case:
        # Routed events per second with 1, 10, 100 and 1,000 triggers (bench/routing.py).
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from routing import routing_cases

        routed = {}
        for row in routing_cases(seconds=0.5 if args.quick else 2.0):
            routed[(row["case"], row["impl"])] = row["ops_per_s"]
            emit(**row)
        emit(bench="routing", case="summary", impl="indexed", ops_per_s=routed[("1000-triggers", "indexed")],
             ratio_10_to_1000=round(routed[("10-triggers", "indexed")] / routed[("1000-triggers", "indexed")], 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
