"""cel-spec conformance (``tests/simple/testdata/*.textproto``) of knflow's CEL compiler.

The CEL specification is the contract: every applicable test must give the spec's
expected value or error (``test_conformance_summary`` prints the counts per file), the
strings extension's file (``PROJECT_DATA``) included. Sections that need protobuf messages
or the type checker are not applicable to trigger filters and skipped by name
(``SKIP_SECTIONS``, ``SKIP_TESTS``); the few cases knflow knowingly differs on are listed
in ``EXCEPTIONS`` with the reason (and the README), and must still fail (so the list
stays true).
"""
from __future__ import annotations

import datetime as dt
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import celpy
import pytest
from celpy import celtypes

from filters.cel import _ENV, parse_source
from filters.cel_compiler import Unsupported, compile_expression
from filters.cel_compiler import runtime as rt
from tests.conformance import conformance_path

# --------------------------------------------------------------------------------------
# A small protobuf text-format reader (enough for simple.proto / value.proto files)


class Message:
    """A parsed text-format message: ordered (name, value) pairs; value is str/bytes/Message."""

    def __init__(self) -> None:
        self.fields: list[tuple[str, Any]] = []

    def get(self, name: str, default: Any = None) -> Any:
        for key, value in self.fields:
            if key == name:
                return value
        return default

    def all(self, name: str) -> list:
        return [value for key, value in self.fields if key == name]

    def has(self, name: str) -> bool:
        return any(key == name for key, _ in self.fields)

    def names(self) -> list[str]:
        return [key for key, _ in self.fields]


class Scalar(str):
    """An unquoted scalar token (number, enum name, true/false)."""


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<punct>[{}<>:,;\[\]/])
  | (?P<scalar>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fFuU]?|[A-Za-z_][\w.]*))
    """,
    re.VERBOSE,
)

_SIMPLE_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, "'": 39, '"': 34, "?": 63}


def unescape(body: str) -> bytes:
    """C-style escapes of a text-format string literal, as bytes."""
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode("utf-8")
            i += 1
            continue
        n = body[i + 1]
        if n in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[n])
            i += 2
        elif n in "01234567":
            m = re.match(r"[0-7]{1,3}", body[i + 1 :])
            out.append(int(m.group(), 8) & 0xFF)
            i += 1 + len(m.group())
        elif n in "xX":
            m = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2 :])
            out.append(int(m.group(), 16))
            i += 2 + len(m.group())
        elif n == "u":
            out += chr(int(body[i + 2 : i + 6], 16)).encode("utf-8", "surrogatepass")
            i += 6
        elif n == "U":
            out += chr(int(body[i + 2 : i + 10], 16)).encode("utf-8", "surrogatepass")
            i += 10
        else:
            raise ValueError(f"unknown escape \\{n}")
    return bytes(out)


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"textproto: unexpected {text[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind != "ws":
            tokens.append((kind, m.group()))
    return tokens


class Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.tokens[self.i]
        if value is not None and tok[1] != value:
            raise ValueError(f"textproto: expected {value!r}, got {tok[1]!r}")
        self.i += 1
        return tok

    def message(self, end: str | None = None) -> Message:
        msg = Message()
        while True:
            tok = self.peek()
            if tok is None or (end is not None and tok[1] == end):
                if end is not None:
                    self.take(end)
                return msg
            if tok[1] in (",", ";"):
                self.take()
                continue
            if tok[1] == "[":  # extension or Any type URL
                self.take()
                parts = []
                while self.peek()[1] != "]":
                    parts.append(self.take()[1])
                self.take("]")
                name = "[" + "".join(parts) + "]"
            else:
                name = self.take()[1]
            if self.peek()[1] == ":":
                self.take()
            for value in self.values():
                msg.fields.append((name, value))

    def values(self) -> list:
        tok = self.peek()
        if tok[1] == "[":
            self.take()
            out = []
            while self.peek()[1] != "]":
                if self.peek()[1] == ",":
                    self.take()
                    continue
                out.extend(self.values())
            self.take("]")
            return out
        if tok[1] in ("{", "<"):
            self.take()
            return [self.message("}" if tok[1] == "{" else ">")]
        if tok[0] == "string":
            data = b""
            while self.peek() is not None and self.peek()[0] == "string":
                data += unescape(self.take()[1][1:-1])
            return [data]
        return [Scalar(self.take()[1])]


def parse_textproto(text: str) -> Message:
    return Parser(text).message()


# --------------------------------------------------------------------------------------
# What applies to trigger filters

_PROTO = "needs protobuf message types (TestAllTypes, google.protobuf.*), not available to filters"
_CONTAINER = "needs a protobuf message type and container-relative name resolution"

#: (file, section) -> why the whole section does not apply.
SKIP_SECTIONS: dict[tuple[str, str], str] = {
    ("comparisons", "eq_wrapper"): "protobuf wrapper types (google.protobuf.*Value) and messages",
    ("parse", "struct_field_names"): "protobuf message construction with reserved-word field names",
    ("parse", "whitespace"): "every test builds a cel.expr.conformance.proto3.TestAllTypes message",
    ("parse", "comments"): "the only test builds a cel.expr.conformance.proto3.TestAllTypes message",
}
#: (file, section, test) -> why it does not apply.
SKIP_TESTS: dict[tuple[str, str, str], str] = {
    ("comparisons", "eq_literal", "eq_dyn_json_null"): _PROTO,
    ("comparisons", "eq_literal", "not_eq_dyn_proto2_msg_null"): _CONTAINER,
    ("comparisons", "eq_literal", "not_eq_dyn_proto3_msg_null"): _CONTAINER,
    ("comparisons", "ne_literal", "ne_proto2"): _CONTAINER,
    ("comparisons", "ne_literal", "ne_proto3"): _CONTAINER,
    ("comparisons", "ne_literal", "ne_proto2_missing_fields_neq"): _CONTAINER,
    ("comparisons", "ne_literal", "ne_proto3_missing_fields_neq"): _CONTAINER,
    ("comparisons", "ne_literal", "ne_proto_nan_not_equal"): _CONTAINER,
    ("comparisons", "ne_literal", "ne_proto_different_types"): _CONTAINER,
    ("comparisons", "ne_literal", "ne_proto2_any_unpack"): _CONTAINER,
    ("comparisons", "ne_literal", "ne_proto2_any_unpack_bytewise_fallback"): _CONTAINER,
    ("comparisons", "ne_literal", "ne_proto3_any_unpack"): _CONTAINER,
    ("comparisons", "ne_literal", "ne_proto3_any_unpack_bytewise_fallback"): _CONTAINER,
    ("parse", "nest", "message_literal"): _CONTAINER,
    ("parse", "repeat", "select"): _CONTAINER,
    ("parse", "repeat", "message_literal"): _CONTAINER,
    ("string_ext", "format_errors", "object not allowed"): _CONTAINER,
    ("string_ext", "format_errors", "object inside list"): _CONTAINER,
    ("string_ext", "format_errors", "object inside map"): _CONTAINER,
    ("timestamps", "timestamp_conversions", "type_comparison"): _PROTO + " (type name google.protobuf.Timestamp)",
    ("timestamps", "duration_conversions", "type_comparison"): _PROTO + " (type name google.protobuf.Duration)",
}

#: case id -> why knflow knowingly differs from the specification (see the README).
EXCEPTIONS: dict[str, str] = {
    "string_ext/format/map support (all key types)": (
        "a map with both true and 1 (or false and 0) as keys is an error: maps are Python dicts, where True == 1"),
}

_PROTO_HINTS = ("TestAllTypes", "google.protobuf", "cel.expr.conformance", "GlobalEnum", "NestedEnum")


def _test_skip_reason(file: str, section: str, test: Message) -> str | None:
    """The explicit skip reason, if any. Tests that need what filters lack but are not
    listed raise, so nothing is skipped silently."""
    name = _text(test.get("name"))
    if (file, section) in SKIP_SECTIONS:
        return SKIP_SECTIONS[(file, section)]
    if (file, section, name) in SKIP_TESTS:
        return SKIP_TESTS[(file, section, name)]
    unlisted = []
    for option in ("check_only", "container", "unknown", "any_unknowns", "typed_result", "disable_macros"):
        if test.has(option):
            unlisted.append(option)
    if any(hint in _text(test.get("expr")) for hint in _PROTO_HINTS):
        unlisted.append("protobuf names in the expression")
    for binding in test.all("bindings"):
        value = binding.get("value")
        if value is not None and value.get("value") is not None and _needs_proto(value.get("value")):
            unlisted.append("protobuf binding")
    if test.get("value") is not None and _needs_proto(test.get("value")):
        unlisted.append("protobuf expected value")
    if unlisted:
        raise AssertionError(f"{file}/{section}/{name} needs {unlisted}: list it in SKIP_TESTS with a reason")
    return None


def _needs_proto(value: Message) -> bool:
    if value.has("object_value"):
        obj = value.get("object_value")
        url = obj.names()[0] if obj.names() else ""
        return not url.endswith(("google.protobuf.Timestamp]", "google.protobuf.Duration]"))
    if value.has("enum_value"):
        return True
    for sub in value.get("list_value", Message()).all("values"):
        if _needs_proto(sub):
            return True
    for entry in value.get("map_value", Message()).all("entries"):
        if _needs_proto(entry.get("key")) or _needs_proto(entry.get("value")):
            return True
    return False


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogatepass")
    return "" if value is None else str(value)


# --------------------------------------------------------------------------------------
# Expected values as the compiler's values (``filters.cel_compiler.runtime``)

_TYPE_NAMES = {
    "bool": rt.BOOL_T,
    "int": rt.INT_T,
    "uint": rt.UINT_T,
    "double": rt.DOUBLE_T,
    "string": rt.STRING_T,
    "bytes": rt.BYTES_T,
    "list": rt.LIST_T,
    "map": rt.MAP_T,
    "null_type": rt.NULL_T,
    "type": rt.TYPE_T,
    "google.protobuf.Timestamp": rt.TIMESTAMP_T,
    "google.protobuf.Duration": rt.DURATION_T,
}


def _number(token: str) -> float | int:
    t = token.lower()
    if re.fullmatch(r"[-+]?[0-9.]+(e[-+]?\d+)?[fu]", t):
        t = t[:-1]
    if t in ("inf", "infinity", "+inf"):
        return math.inf
    if t in ("-inf", "-infinity"):
        return -math.inf
    if t == "nan":
        return math.nan
    if t.startswith(("0x", "-0x")):
        return int(t, 16)
    if re.fullmatch(r"[-+]?\d+", t):
        return int(t)
    return float(t)


def to_value(value: Message) -> Any:
    """cel.expr.Value -> the compiler's value."""
    kind, raw = value.fields[0]
    if kind == "null_value":
        return None
    if kind == "bool_value":
        return str(raw) == "true"
    if kind == "int64_value":
        return int(_number(raw))
    if kind == "uint64_value":
        return rt.Uint(int(_number(raw)))
    if kind == "double_value":
        return float(_number(raw))
    if kind == "string_value":
        return _text(raw)
    if kind == "bytes_value":
        return bytes(raw)
    if kind == "list_value":
        return [to_value(v) for v in raw.all("values")]
    if kind == "map_value":
        return rt.CelMap({to_value(e.get("key")): to_value(e.get("value")) for e in raw.all("entries")})
    if kind == "type_value":
        name = _text(raw)
        if name not in _TYPE_NAMES:
            raise LookupError(f"type {name}")
        return _TYPE_NAMES[name]
    if kind == "object_value":
        url, body = raw.fields[0]
        seconds = int(_number(body.get("seconds", Scalar("0"))))
        nanos = int(_number(body.get("nanos", Scalar("0"))))
        us, ns = divmod(seconds * 10**9 + nanos, 1000)  # nanoseconds kept (runtime.NanoTimestamp/NanoDuration)
        delta = dt.timedelta(microseconds=us)
        if url.endswith("google.protobuf.Timestamp]"):
            return rt._make_ts(dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + delta, ns)
        return rt._make_dur(delta, ns)
    raise LookupError(f"value kind {kind}")


def from_celpy(value: Any) -> Any:
    """A celpy result (expressions the compiler declines) as the compiler's value."""
    if isinstance(value, celtypes.BoolType) or isinstance(value, bool):
        return bool(value)
    if isinstance(value, celtypes.UintType):
        return rt.Uint(int(value))
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, dt.datetime):
        return rt.timestamp_value(value)
    if isinstance(value, dt.timedelta):
        return dt.timedelta(value.days, value.seconds, value.microseconds)
    if isinstance(value, dict):
        return rt.CelMap({from_celpy(k): from_celpy(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return [from_celpy(v) for v in value]
    return value


# --------------------------------------------------------------------------------------
# Comparing results


def canonical(value: Any) -> Any:
    """A comparable form that keeps CEL types apart (1, 1u and 1.0 differ)."""
    t = type(value)
    if t is float:
        return ("double", "nan" if math.isnan(value) else value)
    if t is rt.CelMap:
        return ("map", tuple(sorted((repr(canonical(k)), canonical(v)) for k, v in value.items())))
    if t is list:
        return ("list", tuple(canonical(v) for v in value))
    if t is rt.CelType:
        return ("type", value.name)
    if t in (dt.timedelta, rt.NanoDuration):
        return ("duration", rt.format_duration(value))
    if t in (dt.datetime, rt.NanoTimestamp):
        return ("timestamp", rt.format_timestamp(value))
    return (rt.kind(value), value)


@dataclass
class Outcome:
    value: Any = None
    error: str | None = None  # the error's message ("parse error" when it does not parse)

    def __str__(self) -> str:
        return f"error({self.error})" if self.error else repr(self.value)


def run_celpy(ast: Any, values: dict) -> Outcome:
    activation = {k: rt_to_celpy(v) for k, v in values.items()}
    try:
        result = _ENV.program(ast).evaluate(activation)
    except Exception as exc:  # a CEL error, or celpy raising
        return Outcome(error=f"{type(exc).__name__}: {exc}")
    if isinstance(result, celpy.CELEvalError):
        return Outcome(error=str(result))
    return Outcome(from_celpy(result))


def rt_to_celpy(v: Any) -> Any:
    from filters.cel import to_cel

    t = type(v)
    if t is rt.Uint:
        return celtypes.UintType(int(v))
    if t is float:
        return celtypes.DoubleType(v)
    if t is list:
        return celtypes.ListType([rt_to_celpy(x) for x in v])
    if t is rt.CelMap:
        return celtypes.MapType({rt_to_celpy(k): rt_to_celpy(x) for k, x in v.items()})
    if t is dt.timedelta:
        return celtypes.DurationType(v)
    return to_cel(v)


def run_compiled(fn: Any, values: dict) -> Outcome:
    try:
        value = fn.evaluate_values(values)
    except rt.CelError as exc:
        return Outcome(error=str(exc) or "error")
    if isinstance(value, rt.CelError):  # a top-level &&/|| returns its error
        return Outcome(error=str(value) or "error")
    return Outcome(value)


def meets_spec(outcome: Outcome, test: Message) -> bool:
    if outcome.error == "parse error":
        return False
    if test.has("eval_error") or test.has("any_eval_errors"):
        return outcome.error is not None
    if outcome.error is not None:
        return False
    expected = test.get("value")
    if expected is None:  # an unspecified result means true
        return outcome.value is True
    try:
        want = to_value(expected)
    except LookupError:
        return False
    return canonical(outcome.value) == canonical(want)


# --------------------------------------------------------------------------------------
# Loading cases


@dataclass
class Case:
    file: str
    section: str
    name: str
    expr: str
    test: Message
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.file}/{self.section}/{self.name}"


def load_cases(folder: Path) -> list[Case]:
    cases = []
    for path in sorted(folder.glob("*.textproto")):
        doc = parse_textproto(path.read_text(encoding="utf-8"))
        file = path.stem
        for section in doc.all("section"):
            sname = _text(section.get("name"))
            for test in section.all("test"):
                cases.append(Case(file, sname, _text(test.get("name")), _text(test.get("expr")), test, _test_skip_reason(file, sname, test)))
    return cases


def bindings(test: Message) -> dict:
    out = {}
    for b in test.all("bindings"):
        out[_text(b.get("key"))] = to_value(b.get("value").get("value"))
    return out


_CASES: list[Case] | None = None


def cases() -> list[Case]:
    global _CASES
    if _CASES is None:
        _CASES = load_cases(conformance_path("cel-spec", "testdata")) + load_cases(PROJECT_DATA)
    return _CASES


# --------------------------------------------------------------------------------------
# Running


@dataclass
class FileStats:
    total: int = 0
    skipped: int = 0
    exceptions: int = 0  # documented exceptions (EXCEPTIONS), not run
    executed: int = 0
    compiler_pass: int = 0
    compiled: int = 0  # compiled (not Unsupported, so not evaluated by celpy)
    unsupported: dict = field(default_factory=lambda: defaultdict(int))
    failures: list = field(default_factory=list)


def run_case(case: Case, fold: bool = True) -> tuple[Outcome, bool, str | None]:
    """(knflow's outcome, compiled, why not compiled)."""
    expr = case.expr
    try:
        ast = parse_source(expr)
    except celpy.CELParseError:
        return Outcome(error="parse error"), False, "celpy cannot parse it"
    values = bindings(case.test)
    try:
        fn = compile_expression(ast, expr, fold=fold)
    except Unsupported as exc:
        # CelFilter then evaluates with celpy
        return run_celpy(ast, values), False, str(exc)
    return run_compiled(fn, values), True, None


_RESULTS: dict[str, FileStats] = {}
#: cel-spec files ../shared/conformance lacks (tests/filters/data/cel-spec/README.md)
PROJECT_DATA = Path(__file__).parent / "data" / "cel-spec"
FILES = ["basic", "comparisons", "conversions", "fields", "fp_math", "integer_math", "lists", "logic", "macros", "parse",
         "plumbing", "string", "timestamps", "string_ext"]


@pytest.mark.parametrize("file", FILES)
def test_conformance_file(file: str) -> None:
    stats = _run_file(file, fold=True)
    _RESULTS[file] = stats
    assert stats.total > 0, f"no tests loaded from {file}.textproto"
    assert not stats.failures, "knflow differs from the CEL specification:\n" + "\n".join(stats.failures[:20])


@pytest.mark.parametrize("file", FILES)
def test_conformance_file_without_folding(file: str) -> None:
    """The same with constant folding off, so run-time code paths see every case."""
    stats = _run_file(file, fold=False)
    assert not stats.failures, "knflow (no folding) differs from the CEL specification:\n" + "\n".join(stats.failures[:20])


def test_documented_exceptions_still_fail() -> None:
    """Each documented exception is real: drop it from EXCEPTIONS once it passes."""
    by_id = {c.id: c for c in cases()}
    for case_id in EXCEPTIONS:
        case = by_id[case_id]
        outcome, _, _ = run_case(case)
        assert not meets_spec(outcome, case.test), f"{case_id} passes now: remove it from EXCEPTIONS"


def _run_file(file: str, fold: bool) -> FileStats:
    stats = FileStats()
    for case in cases():
        if case.file != file:
            continue
        stats.total += 1
        if case.skip:
            stats.skipped += 1
            continue
        outcome, compiled, why = run_case(case, fold)
        if case.id in EXCEPTIONS:
            stats.exceptions += 1
            continue
        stats.executed += 1
        stats.compiled += compiled
        if why:
            stats.unsupported[why] += 1
        if meets_spec(outcome, case.test):
            stats.compiler_pass += 1
        else:
            stats.failures.append(f"{case.id}: {case.expr!r}: knflow {outcome}")
    return stats


#: Applicable tests the loader must find across the suite (1178 tests, 100 skipped).
MIN_EXECUTED = 1000


def test_conformance_summary() -> None:
    folder = conformance_path("cel-spec", "testdata")
    found = [p.stem for p in [*folder.glob("*.textproto"), *PROJECT_DATA.glob("*.textproto")]]
    assert sorted(found) == sorted(FILES), "a test data file is not run"
    if len(_RESULTS) < len(FILES):  # run alone: compute the missing files now
        for file in FILES:
            if file not in _RESULTS:
                _RESULTS[file] = _run_file(file, fold=True)
    head = f"{'file':14} {'total':>5} {'n/a':>5} {'exc':>4} {'run':>5} {'pass':>6} {'compiled':>8}"
    lines = ["cel-spec conformance: cases passing against the specification", head]
    totals = FileStats()
    for file in FILES:
        s = _RESULTS[file]
        lines.append(f"{file:14} {s.total:5} {s.skipped:5} {s.exceptions:4} {s.executed:5} {s.compiler_pass:6} {s.compiled:8}")
        for name in ("total", "skipped", "exceptions", "executed", "compiler_pass", "compiled"):
            setattr(totals, name, getattr(totals, name) + getattr(s, name))
        for why, n in s.unsupported.items():
            totals.unsupported[why] += n
    t = totals
    lines.append(f"{'TOTAL':14} {t.total:5} {t.skipped:5} {t.exceptions:4} {t.executed:5} {t.compiler_pass:6} {t.compiled:8}")
    lines.append(f"against the specification: {t.compiler_pass} of {t.executed + t.exceptions} applicable cases pass ({t.exceptions} documented exceptions, EXCEPTIONS)")
    for why, n in sorted(t.unsupported.items(), key=lambda kv: -kv[1]):
        lines.append(f"  not compiled ({n}, evaluated by celpy): {why}")
    report = "\n".join(lines)
    print("\n" + report)
    out = Path(__file__).resolve().parents[2] / ".pytest_cache" / "cel_conformance.txt"
    out.parent.mkdir(exist_ok=True)
    out.write_text(report + "\n")
    assert t.executed >= MIN_EXECUTED, f"only {t.executed} conformance tests executed: loader bug?"
    assert t.compiler_pass == t.executed, "some applicable case does not meet the specification"


def test_textproto_reader() -> None:
    doc = parse_textproto(
        """
        # comment
        name: "x" section { name: 'y' test: { name: "t\\x41\\101\\n" expr: "a" "b" value: { double_value: -1.5e-3 } } }
        section { test { name: "u" value { list_value { values { int64_value: -2 } values: { uint64_value: 3 } } } } }
        a: [1, 2] b: < c: FOO > d { [type.googleapis.com/google.protobuf.Duration] { seconds: 5 } }
        """
    )
    assert _text(doc.get("name")) == "x"
    sections = doc.all("section")
    assert len(sections) == 2
    test = sections[0].get("test")
    assert test.get("name") == b"tAA\n" and test.get("expr") == b"ab"
    assert to_value(test.get("value")) == -1.5e-3
    got = to_value(sections[1].get("test").get("value"))
    assert got == [-2, 3] and type(got[1]) is rt.Uint
    assert doc.all("a") == ["1", "2"] and doc.get("b").get("c") == "FOO"
    assert doc.get("d").names() == ["[type.googleapis.com/google.protobuf.Duration]"]
