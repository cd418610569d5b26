"""Probe: what knflow's compiled CEL would gain from being compiled to C. JSON lines.

``bench/filters.py`` measures knflow's CEL compiler, which generates one Python function
per filter. Issue #12 asks for 3x the fastest native engine with bindings reused (cel-rust
in all but one case); in CPython seven of its sixteen cases stay at 2.2x - 2.9x, because a
Python call and each type-checked clause have a floor (``filters.py``'s ``call_floor``).

This probe answers the question that leaves: would compiling the *same generated source*
to a C extension with Cython close the gap, and by how much? It takes each case's
generated ``_cel_event`` unchanged, builds all of them into one extension module in a
temporary directory (Cython, then the C compiler Python was built with), checks that the
extension gives the same result as the Python function on every event, and measures the
Python function, the extension and the native engines (cel-cpp, cel-rust) in interleaved
rounds on one core, as ``filters.py`` does.

It is a measurement, not a backend: knflow does not compile filters to C (that would need
Cython and a C compiler with Python's headers on every worker, and seconds of compiling
per set of filters: ~13 s for these sixteen here, printed as ``build_seconds``). Needs ``pip install cython`` (not in ``requirements.txt``); without it,
the script says so and exits 2.

Usage: ``python bench/cel_native_probe.py [--case NAME] [--no-pin]``
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))

from filters.cel import _ENV  # noqa: E402
from filters.cel_compiler import codegen, compile_expression  # noqa: E402
from filters.cel_compiler import runtime as rt  # noqa: E402
from routing import pin_one_core  # noqa: E402

ROUNDS = 5


def _load_bench_filters() -> Any:
    """``bench/filters.py`` (its cases, events and harness), under another name: its own
    name is the project's ``filters`` package's."""
    spec = importlib.util.spec_from_file_location("bench_filters", Path(__file__).resolve().parent / "filters.py")
    module = sys.modules["bench_filters"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_filters = _load_bench_filters()
_CONST = re.compile(r"\b_K(\d+)\b")


def module_source(functions: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """One module holding every case's generated ``_cel_event`` as ``cel_<case>``, and
    the constants to bind into it after import (each case's ``_K<n>`` renamed per case).
    Cython resolves a module's global names when it compiles, so the names the generated
    code reads from ``codegen.BASE_GLOBALS`` are bound by assignment at the top."""
    lines = ["from filters.cel_compiler.codegen import BASE_GLOBALS as _BASE"]
    lines += [f"{name} = _BASE[{name!r}]" for name in codegen.BASE_GLOBALS if name.isidentifier()]
    consts: dict[str, Any] = {}
    for i, (case, fn) in enumerate(functions.items()):
        body = fn.source.split("\n\ndef _cel_activation")[0]
        body = _CONST.sub(lambda m: f"_K{m.group(1)}_{i}", body).replace("def _cel_event(", f"def cel_{case}(", 1)
        for name, value in fn.__globals__.items():
            if _CONST.fullmatch(name):
                consts[f"{name}_{i}"] = value
        lines += [f"{name} = None" for name in consts if name.endswith(f"_{i}")]
        lines += ["", body]
    return "\n".join(lines) + "\n", consts


def build(source: str, workdir: Path) -> Any:
    """Cython + the C compiler: ``source`` as an imported extension module."""
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    py = workdir / "knflow_cel_probe.py"
    py.write_text(source)
    ext = cythonize([Extension("knflow_cel_probe", [str(py)])], language_level=3, quiet=True, build_dir=str(workdir))
    cmd = Distribution({"ext_modules": ext}).get_command_obj("build_ext")
    cmd.build_lib = cmd.build_temp = str(workdir)
    cmd.ensure_finalized()
    cmd.run()
    path = next(workdir.glob("knflow_cel_probe*.so"))
    spec = importlib.util.spec_from_file_location("knflow_cel_probe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help="only this CEL case")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one core")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per engine and case (default 1)")
    args = parser.parse_args(argv)
    try:
        import Cython
    except ImportError:
        print("cel_native_probe: needs Cython (pip install cython)", file=sys.stderr)
        return 2
    events = bench_filters.live_events()
    for e in events:
        rt.activate(e)
    cases = {name: expr for name, expr in bench_filters.CEL_CASES if not args.case or name == args.case}
    if not cases:
        parser.error(f"no case {args.case!r}")
    ours = {name: compile_expression(_ENV.compile(expr), expr) for name, expr in cases.items()}
    source, consts = module_source(ours)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="knflow-cel-probe-") as tmp:
        module = build(source, Path(tmp))
    bench_filters.emit(bench="cel_native_probe", case="build", impl=f"cython {Cython.__version__}", ops_per_s=None,
                       functions=len(ours), build_seconds=round(time.perf_counter() - started, 1))
    for name, value in consts.items():
        setattr(module, name, value)
    if not args.no_pin:
        pin_one_core()
    ratios = {"python": [], "cython": []}
    for name, expr in cases.items():
        native = getattr(module, f"cel_{name}")
        for i, e in enumerate(events):
            py, c = bench_filters._result(ours[name], e), bench_filters._result(native, e)
            if py != c:
                raise SystemExit(f"{name}: the extension gives {c} and the Python function {py} on event {i}")
        runners = {"knflow python": (ours[name], events), "knflow cython": (native, events)}
        for engine, (reused, inputs, _per_event, _per_event_inputs) in bench_filters._native(expr, events).items():
            runners[engine] = (reused, inputs)
        rates = dict.fromkeys(runners, 0.0)
        for _ in range(ROUNDS):
            for impl, (fn, inputs) in runners.items():
                rates[impl] = max(rates[impl], bench_filters.rate(fn, inputs, args.budget / ROUNDS))
        for impl, r in rates.items():
            bench_filters.emit(bench="cel_native_probe", case=name, impl=impl, ops_per_s=round(r, 1), ns_per_call=round(1e9 / r, 1))
        fastest = max(bench_filters.NATIVE, key=rates.__getitem__)
        ratios["python"].append(rates["knflow python"] / rates[fastest])
        ratios["cython"].append(rates["knflow cython"] / rates[fastest])
        bench_filters.emit(bench="cel_native_probe", case=name, impl="knflow / fastest native", ops_per_s=None, fastest=fastest,
                           python=round(ratios["python"][-1], 2), cython=round(ratios["cython"][-1], 2))
    bench_filters.emit(bench="cel_native_probe", case="summary", impl="knflow / fastest native", ops_per_s=None, cases=len(cases),
                       **{f"{k}_{stat}": round(fn(v), 2) for k, v in ratios.items() for stat, fn in (("min", min), ("median", statistics.median))},
                       **{f"{k}_at_3x": sum(r >= 3 for r in v) for k, v in ratios.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
