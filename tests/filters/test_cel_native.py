"""``--cel-native``: the compiled CEL filters built into C with Cython (``cel_compiler.native``).

The built functions must give exactly the Python functions' results: values and errors,
on the filter benchmark's live-streaming cases, a sample of the cel-spec conformance cases
and expressions and events drawn by the differential test's generators (one module for
all, built once per session into a fresh cache, so the build itself runs in CI; the
generated expressions are large, and a build of 150 of them took three minutes, so 40).
Then the cache, the constants of filters that share code, and what happens when no C
compiler is there: the router keeps the Python functions, ``knflow run`` says why.
"""
from __future__ import annotations

import importlib.util
import logging
import sys
import types
from pathlib import Path

import pytest

import json

from eventing.compiler import load_plan
from filters.base import EventView
from filters.cel import CelFilter, build_native, cel_filters, parse_source
from filters.cel_compiler import compile_expression, native
from filters.cel_compiler import runtime as rt
from filters.cel_compiler.ir import Unsupported
from pipelines.delivery_settings import DeliverySettings
from pipelines.event_loop import new_event_loop
from pipelines.runners import run_beam_direct
from tests.consumers import ConsumerServer, accept
from tests.filters import test_cel_conformance as conformance
from tests.pipelines.test_cli import EXAMPLE, knflow, run_example_on_beam_direct
from tests.plans import broker_yaml, plan_from_yaml, trigger_yaml
from transforms.broker_worker import BrokerWorker, LoopThread
from transforms.kafka_plane import Topics
from transforms.records import RawRecord
from transforms.codec import decode_structured
from transforms.router import Router

_BENCH = Path(__file__).resolve().parents[2] / "bench" / "filters.py"
#: Every n-th compiled conformance case joins the module (about 120 of them: a build of
#: all ~1,000 takes minutes).
SAMPLE_EVERY = 8


#: Expressions and events from the differential test's generators (a fixed seed).
GENERATED = 40


def _generated(count: int) -> list:
    """``count`` (compiled function, events) pairs drawn as the differential test draws
    them, derandomized: the same pairs every run."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.filters import test_cel_differential as diff

    out = []

    @settings(max_examples=count, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(diff.expressions(), diff.realistic()), st.lists(diff.events(), min_size=1, max_size=3))
    def draw(expression, events):
        try:
            out.append((compile_expression(parse_source(expression), expression), events))
        except Exception:  # parse errors and declined expressions are not native's
            pass

    draw()
    return out


#: Expressions where a C build could part from Python: constants kept in temporaries
#: whose identity is tested (the random differential run against the built module found
#: the first two while Cython inferred C types for such names)
NATIVE_PITFALLS = [
    'int(true) ? b"x".getDate() : nosuch ? blob : data.amount > 1.0',
    "0.0 ? [].getDate() || data.coins.exists(v, '') : {} > data.region in subject",
    "1 == 1.0 ? (2 > 1 ? priority : 0) : -1",
    "[0, 1, 2.5, true].exists(x, x == true) && !(0 in [false])",
]


def _bench_module():
    """``bench/filters.py`` (its cases and events); it imports ``bench/routing.py``."""
    spec = importlib.util.spec_from_file_location("knflow_bench_filters", _BENCH)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    sys.path.append(str(_BENCH.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(_BENCH.parent))
    return module


def _fresh(event):
    """An event view not converted yet (each function converts its own), or the test's
    activation as it is."""
    return EventView(dict(event.attributes), event.data) if isinstance(event, EventView) else event


def _outcome(fn, event) -> str:
    try:
        value = fn(event)
    except rt.CelError as exc:
        return f"error: {exc}"
    if isinstance(value, rt.CelError):
        return f"error: {value}"
    return f"{type(value).__name__} {conformance.canonical(value)!r}"


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """(python function, native function, inputs) for the bench cases and the sample."""
    bench = _bench_module()
    events = bench.live_events()
    rows = []
    for expression in [e for _, e in bench.CEL_CASES] + NATIVE_PITFALLS:
        rows.append((compile_expression(parse_source(expression), expression), [EventView(dict(e.attributes), e.data) for e in events]))
    compiled = []
    for case in conformance.cases():
        if case.skip or case.id in conformance.EXCEPTIONS:
            continue
        try:
            fn = compile_expression(parse_source(case.expr), case.expr)
        except (Unsupported, Exception):  # parse errors and declined expressions are not native's
            continue
        values = conformance.bindings(case.test)
        if any("." in name for name in values):
            continue  # qualified names: evaluate_values' path, not an event's
        compiled.append((fn, [types.SimpleNamespace(cel=rt.Activation(values))]))
    rows += compiled[::SAMPLE_EVERY]
    rows += _generated(GENERATED)
    functions = native.build([fn for fn, _ in rows], tmp_path_factory.mktemp("cel-cache"))
    return [(fn, nat, inputs) for (fn, inputs), nat in zip(rows, functions)]


def test_native_functions_give_the_python_functions_results(built):
    assert len(built) > 170
    differ = []
    for fn, nat, inputs in built:
        for event in inputs:
            ours, theirs = _outcome(fn, _fresh(event)), _outcome(nat, _fresh(event))
            if ours != theirs:
                differ.append(f"{fn.expression!r}: python {ours}, native {theirs}")
    assert not differ, "\n".join(differ[:20])
    assert all(type(nat).__name__ == "cython_function_or_method" for _, nat, _ in built)


def test_a_built_module_is_kept_and_loaded_from_the_cache(tmp_path, monkeypatch):
    fn = compile_expression(parse_source('type == "a"'), 'type == "a"')
    [first] = native.build([fn], tmp_path)
    [module] = [p for p in tmp_path.iterdir() if p.name.startswith("knflow_cel_")]

    def no_compiling(*args):
        raise AssertionError("built again")

    monkeypatch.setattr(native, "_compile", no_compiling)
    [again] = native.build([compile_expression(parse_source('type == "a"'), 'type == "a"')], tmp_path)
    event = EventView({"specversion": "1.0", "id": "1", "source": "/s", "type": "a"}, None)
    assert first(event) is True and again(event) is True
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == [module.name]


def test_an_interpreter_without_the_packages_builds_with_this_ones(tmp_path, monkeypatch):
    # PyFlink's thread mode embeds the virtualenv's base interpreter, whose own packages
    # lack Cython; knflow's are on the embedded interpreter's sys.path
    base = Path(sys._base_executable)
    assert base.exists()
    monkeypatch.setattr(native, "_python", lambda: str(base))
    [fn] = native.build([compile_expression(parse_source('type.endsWith(".b")'), 'type.endsWith(".b")')], tmp_path)
    assert fn(EventView({"specversion": "1.0", "id": "1", "source": "/s", "type": "a.b"}, None)) is True


def test_the_cache_keeps_the_most_recently_used_modules(tmp_path, monkeypatch):
    suffix = native.sysconfig.get_config_var("EXT_SUFFIX")
    files = [tmp_path / f"knflow_cel_{i}{suffix}" for i in range(5)]
    for age, path in enumerate(files):  # knflow_cel_0 the newest
        path.write_bytes(b"")
        native.os.utime(path, (1e9 - age * 100, 1e9 - age * 100))
    (tmp_path / "unrelated.txt").write_text("x")
    native._touch(files[4])  # loaded just now: the most recently used
    monkeypatch.setattr(native, "MAX_CACHED_MODULES", 3)
    native._prune(tmp_path, keep=files[3])
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {files[0].name, files[1].name, files[4].name, files[3].name, "unrelated.txt"}


def test_filters_with_the_same_code_keep_their_own_constants(tmp_path, monkeypatch):
    monkeypatch.setenv("KNFLOW_CEL_CACHE", str(tmp_path))
    a = CelFilter('type in ["com.a", "com.b"] && data.n > 1', "a")
    b = CelFilter('type in ["com.c"] && data.n > 1', "b")
    assert a._evaluate.event_source == b._evaluate.event_source  # one function's code serves both
    assert build_native([a, b]) == 2
    event = EventView({"specversion": "1.0", "id": "1", "source": "/s", "type": "com.c"}, {"n": 7})
    assert (a.engine, b.engine) == ("native", "native")
    assert a.filter(event).name == "FAIL" and b.filter(event).name == "PASS"


def test_router_builds_the_brokers_filters_and_routes_the_same(tmp_path, monkeypatch):
    monkeypatch.setenv("KNFLOW_CEL_CACHE", str(tmp_path))
    plan = load_plan([str(EXAMPLE)])
    broker = plan.brokers[0]
    python_router = Router(broker)
    plan_native = load_plan([str(EXAMPLE)])
    native_router = Router(plan_native.brokers[0], cel_native=True)
    engines = [n.engine for t in plan_native.brokers[0].triggers for n in _cel_nodes(t.filter)]
    assert engines and set(engines) == {"native"}
    for line in (EXAMPLE / "events.jsonl").read_text().splitlines()[:300]:
        event = decode_structured(line)
        assert [t.key for t in native_router.route(event)] == [t.key for t in python_router.route(event)], line
    assert native_router.matched == python_router.matched
    assert sum(native_router.matched.values()) > 300  # analytics takes every event, others some


def test_without_a_c_compiler_the_router_keeps_python_and_run_says_why(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("KNFLOW_CEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    plan = load_plan([str(EXAMPLE)])
    with caplog.at_level(logging.WARNING, logger="transforms.router"):
        router = Router(plan.brokers[0], cel_native=True)
    assert "the CEL filters stay Python" in caplog.text and "the C build failed" in caplog.text
    assert {n.engine for t in router.triggers for n in _cel_nodes(t.filter)} == {"compiled"}
    result = knflow("run", str(EXAMPLE), "--runner", "beam-direct", "--events-file", str(EXAMPLE / "events.jsonl"),
                    "--cel-native")
    assert result.returncode == 1
    assert "--cel-native: broker streaming/live: the C build failed" in result.stderr, result.stderr[-2000:]


def vip_plan(url: str):
    return plan_from_yaml(broker_yaml() + trigger_yaml("vip", url, "[{cel: 'data.level >= 30 && type.startsWith(\"com.live.\")'}]"))


def _engines(triggers) -> set[str]:
    return {n.engine for t in triggers for n in _cel_nodes(t.filter)}


def test_the_flink_operators_worker_routes_with_native_filters(tmp_path, monkeypatch):
    # BrokerWorker is what the Flink operator runs; flink_functions hands it settings.cel_native
    monkeypatch.setenv("KNFLOW_CEL_CACHE", str(tmp_path))
    plan = vip_plan("http://127.0.0.1:9/vip")
    engine = DeliverySettings().engine({t.key: t for t in plan.triggers()})
    worker = BrokerWorker(plan, Topics.for_job("w"), engine, LoopThread(lambda: new_event_loop("asyncio")), cel_native=True)
    [router] = worker.intake.routers.values()
    assert _engines(router.triggers) == {"native"}
    worker.loop.run(engine.close(), timeout=10)


def test_beam_direct_routes_with_native_filters(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("KNFLOW_CEL_CACHE", str(tmp_path))
    consumer = ConsumerServer(accept()).start()
    try:
        plan = vip_plan(consumer.url)
        records = [RawRecord.structured(json.dumps({"specversion": "1.0", "id": f"e{n}", "source": "/rooms/1",
                                                    "type": "com.live.gift.sent", "data": {"level": n}}), f"test:{n}")
                   for n in range(0, 60, 5)]
        with caplog.at_level(logging.INFO, logger="transforms.router"):
            run_beam_direct(plan.brokers[0], records, DeliverySettings(cel_native=True))
    finally:
        consumer.stop()
    assert sorted(r.headers["ce-id"] for r in consumer.requests) == sorted(f"e{n}" for n in range(30, 60, 5))
    assert "broker ns/b: 1 CEL filter(s) run as C (--cel-native)" in caplog.text


def test_beams_delivery_step_routes_replies_with_native_filters(tmp_path, monkeypatch):
    # the Deliver DoFn's dispatcher routes replies through the broker again
    from pipelines.beam_pipeline import _Deliver

    monkeypatch.setenv("KNFLOW_CEL_CACHE", str(tmp_path))
    plan = vip_plan("http://127.0.0.1:9/vip")
    deliver = _Deliver(plan.brokers[0], DeliverySettings(cel_native=True))
    deliver.setup()
    try:
        reply = decode_structured(json.dumps({"specversion": "1.0", "id": "r1", "source": "/s", "type": "com.live.x",
                                              "data": {"level": 31}}))
        assert [t.key for t in deliver.dispatcher.route(reply)] == ["ns/vip"]
        assert _engines(deliver.dispatcher._router.triggers) == {"native"}
    finally:
        deliver.teardown()


def test_knflow_run_builds_first_and_delivers_the_same(tmp_path, monkeypatch):
    monkeypatch.setenv("KNFLOW_CEL_CACHE", str(tmp_path))
    result = run_example_on_beam_direct("--cel-native")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--cel-native: 4 CEL filter(s) built as C in" in result.stdout
    rows = {line.split()[0]: line.split()[1:3] for line in result.stdout.splitlines() if line.startswith("streaming/")}
    # the example's counts (tests/pipelines/test_cli.py runs it without --cel-native)
    assert rows["streaming/analytics"] == ["300", "300"] and rows["streaming/vip-alerts"] == ["28", "28"]
    assert rows["streaming/moderation"] == ["53", "53"] and rows["streaming/gift-leaderboard"] == ["25", "25"]
    assert [p for p in tmp_path.iterdir() if p.name.startswith("knflow_cel_")]


def _cel_nodes(node):
    return [n for n in cel_filters([node]) if n.expression]
