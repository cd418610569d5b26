"""Filter evaluation benchmarks: one JSON object per line.

Each line has at least ``bench``, ``case``, ``impl`` and ``ops_per_s`` (evaluations per
second on one core). The CEL part compares, for realistic live-streaming trigger filters,

* ``celpy-interpreted``: celpy's InterpretedRunner (what ``cel:`` falls back to),
* ``celpy-compiled``:    celpy's CompiledRunner (celpy's transpiler),
* ``cel-cpp``:           Google's cel-cpp through ``cel-expr-python`` (the reference),
* ``cel-rust``:          the Rust interpreter through ``common-expression-language``,
* ``knflow``:            ``filters.cel_compiler`` (what ``CelFilter`` uses),
* ``knflow native``:     the same functions built into C (``cel_compiler.native``, the job
                         option ``--cel-native``; the build's seconds are printed),

with bindings reused (built once per event outside the measured time: celpy's
activation, cel-cpp's ``Activation``, cel-rust's ``Context``, knflow's converted event
view, as the router shares it among all triggers) and, for the native engines and knflow,
``per event``: the bindings built from the event inside the measured time (cel-cpp and
cel-rust from the plain attribute/payload dict; knflow converts its event view). The
native engines see ``type`` as ``ce_type`` (cel-cpp refuses a variable named ``type``).
knflow must agree with cel-cpp on every event, or the script exits non-zero; other
disagreements are noted. A ``knflow / fastest native`` line per case and a final
``summary`` line give the ratios.

Usage: ``python bench/filters.py [--quick] [--case NAME] [--cel-only] [--table]``. Other benchmarks (routing,
the index) can add their own ``*_cases()`` + runner functions and call them in ``main``.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
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
from filters.cel_compiler import compile_expression, native  # noqa: E402
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
    notes: dict[str, str] = field(default_factory=dict)


#: Engines with bindings reused (built once per event, outside the measured time) ...
REUSED = ["celpy-interpreted", "celpy-compiled", "cel-cpp", "cel-rust", "knflow", "knflow native"]
#: ... and with the bindings built per evaluation (knflow: its event view's conversion).
PER_EVENT = ["cel-cpp per event", "cel-rust per event", "knflow per event", "knflow native per event"]
NATIVE = ["cel-cpp", "cel-rust"]
ROUNDS = 5


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


_TYPE_IDENT = re.compile(r"\btype\b(?!\s*\()")


def _bindings(e: EventView) -> dict:
    """The event as plain Python bindings for the native engines (attributes by name,
    ``type`` renamed ``ce_type``: cel-cpp refuses a variable named ``type``)."""
    out = {("ce_type" if k == "type" else k): v for k, v in e.attributes.items()}
    if e.data is not None:
        out["data"] = e.data
    return out


def _native(expression: str, events: list[EventView]) -> dict[str, tuple]:
    """(reused evaluate, reused inputs, per-event evaluate, per-event inputs) per engine."""
    import cel as cel_rust
    from cel_expr_python import cel as cel_cpp

    renamed = _TYPE_IDENT.sub("ce_type", expression)
    bindings = [_bindings(e) for e in events]
    names = {k for b in bindings for k in b}
    env = cel_cpp.NewEnv(variables={k: (cel_cpp.Type.TIMESTAMP if k == "time" else cel_cpp.Type.DYN) for k in names})
    cpp = env.compile(renamed, disable_check=True)
    activations = [env.Activation(b) for b in bindings]
    rust = cel_rust.compile(renamed)
    contexts = [cel_rust.Context(b) for b in bindings]
    return {
        "cel-cpp": (lambda a: cpp.eval(a).value(), activations, lambda b: cpp.eval(data=b).value(), bindings),
        "cel-rust": (rust.execute, contexts, rust.execute, bindings),
    }


def _result(fn: Callable[[Any], Any], arg: Any) -> str:
    try:
        value = fn(arg)
    except Exception:  # an error result
        return "error"
    if isinstance(value, celpy.celtypes.BoolType):
        value = bool(value)
    if isinstance(value, rt.CelError):  # knflow returns a top-level &&/|| error
        return "error"
    if isinstance(value, str) and value.startswith(("INVALID_ARGUMENT", "NOT_FOUND", "UNKNOWN", "OUT_OF_RANGE")):
        return "error"  # cel-expr-python returns errors as values
    return repr(value)


def _per_event(evaluate: Callable[[Any], Any]) -> Callable[[EventView], Any]:
    """``evaluate`` with the event's view converted inside the measured time."""

    def per_event(e: EventView) -> Any:
        e.cel = None
        return evaluate(e)

    return per_event


def cel_cases(only: str | None = None) -> list[CelCase]:
    events = live_events()
    out = []
    compiled = []
    for name, expression in CEL_CASES:
        if only and only != name:
            continue
        case = CelCase(name, expression)
        ast = _ENV.compile(expression)
        interpreted = _ENV.program(ast)
        env, tast = _transpiler_ast(expression)
        transpiled = env.program(tast)
        ours = compile_expression(ast, expression)
        compiled.append(ours)
        activations = [celpy_activation(e) for e in events]  # cached on the events
        fresh = [EventView(dict(e.attributes), e.data) for e in events]
        for e in events:
            rt.activate(e)  # knflow's conversion, cached as the router shares it
        case.runners = {"celpy-interpreted": interpreted.evaluate, "celpy-compiled": transpiled.evaluate, "knflow": ours,
                        "knflow per event": _per_event(ours)}
        case.inputs = {"celpy-interpreted": activations, "celpy-compiled": activations, "knflow": events,
                       "knflow native": events, "knflow per event": fresh, "knflow native per event": fresh}
        for engine, (reused, r_inputs, per_event, p_inputs) in _native(expression, events).items():
            case.runners[engine], case.inputs[engine] = reused, r_inputs
            case.runners[f"{engine} per event"], case.inputs[f"{engine} per event"] = per_event, p_inputs
        out.append(case)
    started = time.perf_counter()
    for case, evaluate in zip(out, native.build(compiled)):
        case.runners["knflow native"], case.runners["knflow native per event"] = evaluate, _per_event(evaluate)
    emit(bench="cel", case="native_build", impl="knflow native", ops_per_s=None, functions=len(compiled),
         seconds=round(time.perf_counter() - started, 1), cache=str(native.cache_dir()))
    for case in out:
        # knflow must agree with cel-cpp (the reference) on every event; others are noted
        for i in range(len(events)):
            results = {impl: _result(fn, case.inputs[impl][i]) for impl, fn in case.runners.items()}
            ours = {results[impl] for impl in ("knflow", "knflow per event", "knflow native", "knflow native per event")}
            if ours != {results["cel-cpp"]}:
                raise SystemExit(f"{case.name}: knflow and cel-cpp disagree on event {i}: {results}")
            for impl in ("cel-rust", "celpy-interpreted", "celpy-compiled"):
                if results[impl] != results["cel-cpp"] and impl not in case.notes:
                    case.notes[impl] = f"event {i}: {results[impl]}, cel-cpp {results['cel-cpp']}"
    return out


def run_cel(cases: list[CelCase], budget: float) -> list[dict]:
    rows = []
    for case in cases:
        rates: dict[str, float] = {impl: 0.0 for impl in REUSED + PER_EVENT}
        # the machine is shared: every engine runs in each of ROUNDS interleaved rounds
        # and keeps its best, so a slow moment hits all of them alike
        for _ in range(ROUNDS):
            for impl in REUSED + PER_EVENT:
                # celpy is slow: a shorter budget gives the same precision in ops
                share = budget / ROUNDS * (0.4 if impl.startswith("celpy") else 1.0)
                rates[impl] = max(rates[impl], rate(case.runners[impl], case.inputs[impl], share))
        for impl in REUSED + PER_EVENT:
            emit(bench="cel", case=case.name, impl=impl, ops_per_s=round(rates[impl], 1), note=case.notes.get(impl.split(" ")[0], ""))
        fastest = max(NATIVE, key=lambda n: rates[n])
        fastest_per_event = max(NATIVE, key=lambda n: rates[f"{n} per event"])
        row = {
            "case": case.name,
            "rates": rates,
            "vs_native": rates["knflow"] / rates[fastest],
            "fastest": fastest,
            "per_event_vs_native": rates["knflow per event"] / rates[f"{fastest_per_event} per event"],
            "fastest_per_event": fastest_per_event,
            "native_vs_native": rates["knflow native"] / rates[fastest],
            "native_per_event_vs_native": rates["knflow native per event"] / rates[f"{fastest_per_event} per event"],
        }
        rows.append(row)
        emit(bench="cel", case=case.name, impl="knflow / fastest native", ops_per_s=None,
             reused=round(row["vs_native"], 2), reused_fastest=fastest,
             per_event=round(row["per_event_vs_native"], 2), per_event_fastest=fastest_per_event,
             native_reused=round(row["native_vs_native"], 2), native_per_event=round(row["native_per_event_vs_native"], 2))
    return rows


def table(rows: list[dict]) -> str:
    """The measurements as a Markdown table (thousands of evaluations per second)."""
    head = ["case", *REUSED, *PER_EVENT, "knflow / fastest native (reused)", "(per event)", "knflow native / fastest native (reused)", "(per event)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["case"]] + [f"{r['rates'][i] / 1000:,.1f}k" for i in REUSED + PER_EVENT]
        cells += [f"{r['vs_native']:.1f}x ({r['fastest']})", f"{r['per_event_vs_native']:.1f}x ({r['fastest_per_event']})",
                  f"{r['native_vs_native']:.1f}x", f"{r['native_per_event_vs_native']:.1f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_cel_conversion(budget: float) -> None:
    """Converting one event (once per event, shared by every trigger)."""
    events = live_events()

    def celpy_conv(e: EventView) -> Any:
        e.cache.clear()
        return celpy_activation(e)

    def ours_conv(e: EventView) -> Any:
        e.cel = None
        return rt.activate(e)

    for impl, fn in (("celpy", celpy_conv), ("knflow", ours_conv)):
        emit(bench="cel", case="event_conversion", impl=impl, ops_per_s=round(rate(fn, events, budget), 1))


def run_cel_floor(budget: float) -> None:
    """What a call costs before any evaluation, in this harness: an empty Python function,
    each engine on ``true``, and ``type == "x"`` (the first clause most filters leave at)
    by cel-rust and by knflow, with the view passed directly to a hand-written function
    (the floor of any Python evaluation). Nanoseconds per call; the 3x goal's arithmetic."""
    import cel as cel_rust

    events = live_events()
    for e in events:
        rt.activate(e)
    contexts = [cel_rust.Context(_bindings(e)) for e in events]
    views = [e.cel for e in events]
    true_rust, type_rust = cel_rust.compile("true"), cel_rust.compile('ce_type == "x"')
    true_ours = compile_expression(_ENV.compile("true"), "true")
    type_ours = compile_expression(_ENV.compile('type == "x"'), 'type == "x"')

    def by_hand(view: dict) -> bool:
        return view["type"] == "x"

    for impl, fn, args in (("python empty function", lambda e: None, events),
                           ("cel-rust true", true_rust.execute, contexts), ("knflow true", true_ours, events),
                           ("cel-rust type == x", type_rust.execute, contexts), ("knflow type == x", type_ours, events),
                           ("python by hand, view passed", by_hand, views)):
        emit(bench="cel", case="call_floor", impl=impl, ns_per_call=round(1e9 / rate(fn, args, budget), 1))


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
    parser.add_argument("--table", action="store_true", help="also print the CEL engines as a Markdown table (stderr)")
    parser.add_argument("--cel-only", action="store_true", help="skip the routing part")
    args = parser.parse_args(argv)
    if not args.no_pin:
        pin_one_core()
    logging.getLogger("celpy").setLevel(logging.CRITICAL)  # celpy logs every error result
    budget = 0.25 if args.quick else 1.0
    started = time.perf_counter()
    cases = cel_cases(args.case)
    rows = run_cel(cases, budget)
    if not args.case:
        run_cel_conversion(budget / 2)
        run_cel_filter_path(budget / 2)
        run_cel_floor(budget / 2)
    ratios = [r["vs_native"] for r in rows]
    per_event = [r["per_event_vs_native"] for r in rows]
    native_ratios = [r["native_vs_native"] for r in rows]
    native_per_event = [r["native_per_event_vs_native"] for r in rows]
    emit(
        bench="cel",
        case="summary",
        impl="knflow",
        ops_per_s=None,
        cases=len(rows),
        knflow_vs_fastest_native_min=round(min(ratios), 2),
        knflow_vs_fastest_native_median=round(statistics.median(ratios), 2),
        per_event_vs_fastest_native_min=round(min(per_event), 2),
        per_event_vs_fastest_native_median=round(statistics.median(per_event), 2),
        native_vs_fastest_native_min=round(min(native_ratios), 2),
        native_vs_fastest_native_median=round(statistics.median(native_ratios), 2),
        native_per_event_vs_fastest_native_min=round(min(native_per_event), 2),
        native_cases_at_3x=sum(r >= 3 for r in native_ratios),
        cases_at_3x=sum(r >= 3 for r in ratios),
        median_speedup_vs_celpy_compiled=round(statistics.median(r["rates"]["knflow"] / r["rates"]["celpy-compiled"] for r in rows), 1),
        median_speedup_vs_celpy_interpreted=round(statistics.median(r["rates"]["knflow"] / r["rates"]["celpy-interpreted"] for r in rows), 1),
        seconds=round(time.perf_counter() - started, 1),
    )
    if args.table:
        print(table(rows), file=sys.stderr)
    if not args.case and not args.cel_only:
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
