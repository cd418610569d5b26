"""cel-spec conformance (``tests/simple/testdata/*.textproto``) for celpy and the compiler.

Every applicable test runs on both celpy (the reference implementation of the ``cel:``
dialect) and ``filters.cel_compiler``. Each is checked against the spec's expected
value or error, and the two are compared with each other: where celpy deviates from the
spec, the compiler must give celpy's result (the differential is the contract). Sections
that need protobuf messages, the type checker or extension libraries are skipped by name
(``SKIP_SECTIONS``), as are individual tests that need them (``SKIP_TESTS``).
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import celpy
import pytest
from celpy import celtypes

from filters.cel import _ENV
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
    ("timestamps", "timestamp_conversions", "type_comparison"): _PROTO + " (type name google.protobuf.Timestamp)",
    ("timestamps", "duration_conversions", "type_comparison"): _PROTO + " (type name google.protobuf.Duration)",
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
# Expected values as celpy values

_TYPE_NAMES = {
    "bool": celtypes.BoolType,
    "int": celtypes.IntType,
    "uint": celtypes.UintType,
    "double": celtypes.DoubleType,
    "string": celtypes.StringType,
    "bytes": celtypes.BytesType,
    "list": celtypes.ListType,
    "map": celtypes.MapType,
    "null_type": type(None),
    "type": celtypes.TypeType,
    "google.protobuf.Timestamp": celtypes.TimestampType,
    "google.protobuf.Duration": celtypes.DurationType,
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
    """cel.expr.Value -> celpy value."""
    kind, raw = value.fields[0]
    if kind == "null_value":
        return None
    if kind == "bool_value":
        return celtypes.BoolType(str(raw) == "true")
    if kind == "int64_value":
        return celtypes.IntType(_number(raw))
    if kind == "uint64_value":
        return celtypes.UintType(_number(raw))
    if kind == "double_value":
        return celtypes.DoubleType(_number(raw))
    if kind == "string_value":
        return celtypes.StringType(_text(raw))
    if kind == "bytes_value":
        return celtypes.BytesType(raw)
    if kind == "list_value":
        return celtypes.ListType([to_value(v) for v in raw.all("values")])
    if kind == "map_value":
        return celtypes.MapType({to_value(e.get("key")): to_value(e.get("value")) for e in raw.all("entries")})
    if kind == "type_value":
        name = _text(raw)
        if name not in _TYPE_NAMES:
            raise LookupError(f"type {name}")
        return _TYPE_NAMES[name]
    if kind == "object_value":
        url, body = raw.fields[0]
        seconds = int(_number(body.get("seconds", Scalar("0"))))
        nanos = int(_number(body.get("nanos", Scalar("0"))))
        if url.endswith("google.protobuf.Timestamp]"):
            import datetime

            base = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
            return celtypes.TimestampType(base + datetime.timedelta(seconds=seconds, microseconds=nanos // 1000))
        return celtypes.DurationType(seconds, nanos)
    raise LookupError(f"value kind {kind}")


# --------------------------------------------------------------------------------------
# Comparing results


def canonical(value: Any, strict: bool) -> Any:
    """A comparable form. ``strict`` keeps exact Python types (compiler vs celpy);
    otherwise values compare as CEL values (plain float counts as double, ...)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, celtypes.BoolType):
        return ("bool" if not strict else "BoolType", bool(value))
    if isinstance(value, celtypes.UintType):
        return ("uint", int(value))
    if isinstance(value, int):
        return ("int" if not strict else type(value).__name__, int(value))
    if isinstance(value, float):
        f = float(value)
        return ("double" if not strict else type(value).__name__, "nan" if math.isnan(f) else f)
    if isinstance(value, str):
        return ("string" if not strict else type(value).__name__, str(value))
    if isinstance(value, bytes):
        return ("bytes" if not strict else type(value).__name__, bytes(value))
    if value is None:
        return ("null",)
    if isinstance(value, celtypes.TimestampType):
        return ("timestamp", value.timestamp(), str(value) if strict else None)
    if isinstance(value, celtypes.DurationType):
        return ("duration", value.total_seconds())
    if isinstance(value, dict):
        items = sorted((repr(canonical(k, strict)), canonical(v, strict)) for k, v in value.items())
        return ("map" if not strict else type(value).__name__, tuple(items))
    if isinstance(value, (list, tuple)):
        return ("list" if not strict else type(value).__name__, tuple(canonical(v, strict) for v in value))
    if isinstance(value, type):
        return ("type", value.__name__)
    return ("other", repr(value))


@dataclass
class Outcome:
    value: Any = None
    error: str | None = None  # "error" (CEL error value) or "raised" (Python exception)

    def key(self) -> Any:
        return ("ERROR",) if self.error else canonical(self.value, strict=True)


def run_celpy(ast: Any, values: dict) -> Outcome:
    try:
        result = _ENV.program(ast).evaluate(values)
    except celpy.CELEvalError as exc:
        return Outcome(error=f"error: {exc.args[0] if exc.args else exc}")
    except Exception as exc:  # celpy crashed (raised a Python exception)
        return Outcome(error=f"raised {type(exc).__name__}: {exc}")
    return Outcome(result)


def run_compiled(fn: Any, values: dict) -> Outcome:
    try:
        result = fn.evaluate_celpy_values(values)
    except rt.CelError as exc:
        return Outcome(error=f"error: {exc}")
    except celpy.CELEvalError as exc:
        return Outcome(error=f"error: {exc.args[0] if exc.args else exc}")
    except Exception as exc:
        return Outcome(error=f"raised {type(exc).__name__}: {exc}")
    return Outcome(result)


def meets_spec(outcome: Outcome, test: Message) -> bool:
    if outcome.error == "parse error":
        return False
    if test.has("eval_error") or test.has("any_eval_errors"):
        return outcome.error is not None
    if outcome.error is not None:
        return False
    expected = test.get("value")
    if expected is None:  # an unspecified result means true
        return canonical(outcome.value, False) == ("bool", True)
    try:
        want = to_value(expected)
    except LookupError:
        return False
    return canonical(outcome.value, False) == canonical(want, False)


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
        _CASES = load_cases(conformance_path("cel-spec", "testdata"))
    return _CASES


# --------------------------------------------------------------------------------------
# Running


@dataclass
class FileStats:
    total: int = 0
    skipped: int = 0
    executed: int = 0
    celpy_pass: int = 0
    compiler_pass: int = 0
    agree: int = 0
    compiled: int = 0  # compiled natively (not Unsupported)
    runtime_celpy: int = 0  # compiled, but evaluated by celpy at run time (Fallback)
    unsupported: dict = field(default_factory=lambda: defaultdict(int))
    mismatches: list = field(default_factory=list)


def run_case(case: Case, fold: bool = True) -> tuple[Outcome, Outcome, bool, bool, str | None]:
    """(celpy outcome, compiler outcome, compiled natively, used celpy at run time, why not compiled)."""
    try:
        ast = _ENV.compile(case.expr)
    except celpy.CELParseError:
        # the compiler uses celpy's parser: neither can run it (the trigger is rejected)
        failed = Outcome(error="parse error")
        return failed, failed, False, False, "celpy cannot parse it"
    values = bindings(case.test)
    reference = run_celpy(ast, values)
    try:
        fn = compile_expression(ast, case.expr, fold=fold)
    except Unsupported as exc:
        # CelFilter then evaluates with celpy: the same outcome by construction
        return reference, run_celpy(ast, values), False, False, str(exc)
    before = fn.stats["celpy"]
    outcome = run_compiled(fn, values)
    return reference, outcome, True, fn.stats["celpy"] > before, None


_RESULTS: dict[str, FileStats] = {}
FILES = ["basic", "comparisons", "conversions", "fields", "fp_math", "integer_math", "lists", "logic", "macros", "parse", "plumbing", "string", "timestamps"]


@pytest.mark.parametrize("file", FILES)
def test_conformance_file(file: str) -> None:
    stats = _run_file(file, fold=True)
    _RESULTS[file] = stats
    assert stats.total > 0, f"no tests loaded from {file}.textproto"
    assert not stats.mismatches, "compiler differs from celpy:\n" + "\n".join(stats.mismatches[:20])
    assert stats.compiler_pass >= stats.celpy_pass


@pytest.mark.parametrize("file", FILES)
def test_conformance_file_without_folding(file: str) -> None:
    """The same with constant folding off, so run-time code paths see every case."""
    stats = _run_file(file, fold=False)
    assert stats.executed == stats.agree, "compiler differs from celpy:\n" + "\n".join(stats.mismatches[:20])


def _run_file(file: str, fold: bool) -> FileStats:
    stats = FileStats()
    for case in cases():
        if case.file != file:
            continue
        stats.total += 1
        if case.skip:
            stats.skipped += 1
            continue
        stats.executed += 1
        reference, outcome, compiled, runtime_celpy, why = run_case(case, fold)
        stats.compiled += compiled
        stats.runtime_celpy += runtime_celpy
        if why:
            stats.unsupported[why] += 1
        stats.celpy_pass += meets_spec(reference, case.test)
        stats.compiler_pass += meets_spec(outcome, case.test)
        if reference.key() == outcome.key():
            stats.agree += 1
        else:
            stats.mismatches.append(f"{case.id}: {case.expr!r}: celpy {reference} compiler {outcome}")
    return stats


#: Applicable tests the loader must find across the suite (1178 tests, 120 skipped).
MIN_EXECUTED = 1000


def test_conformance_summary() -> None:
    folder = conformance_path("cel-spec", "testdata")
    assert sorted(p.stem for p in folder.glob("*.textproto")) == sorted(FILES), "a test data file is not run"
    if len(_RESULTS) < len(FILES):  # run alone: compute the missing files now
        for file in FILES:
            if file not in _RESULTS:
                test_conformance_file(file)
    lines = [f"{'file':14} {'total':>5} {'skip':>5} {'run':>5} {'celpy':>6} {'compiler':>8} {'agree':>6} {'native':>6} {'rt-celpy':>8}"]
    totals = FileStats()
    for file in FILES:
        s = _RESULTS[file]
        lines.append(f"{file:14} {s.total:5} {s.skipped:5} {s.executed:5} {s.celpy_pass:6} {s.compiler_pass:8} {s.agree:6} {s.compiled:6} {s.runtime_celpy:8}")
        for name in ("total", "skipped", "executed", "celpy_pass", "compiler_pass", "agree", "compiled", "runtime_celpy"):
            setattr(totals, name, getattr(totals, name) + getattr(s, name))
        for why, n in s.unsupported.items():
            totals.unsupported[why] += n
    t = totals
    lines.append(f"{'TOTAL':14} {t.total:5} {t.skipped:5} {t.executed:5} {t.celpy_pass:6} {t.compiler_pass:8} {t.agree:6} {t.compiled:6} {t.runtime_celpy:8}")
    for why, n in sorted(t.unsupported.items(), key=lambda kv: -kv[1]):
        lines.append(f"  not compiled ({n}): {why}")
    report = "\n".join(lines)
    print("\n" + report)
    out = Path(__file__).resolve().parents[2] / ".pytest_cache" / "cel_conformance.txt"
    out.parent.mkdir(exist_ok=True)
    out.write_text(report + "\n")
    assert t.executed >= MIN_EXECUTED, f"only {t.executed} conformance tests executed: loader bug?"
    assert t.agree == t.executed
    for file in FILES:
        assert _RESULTS[file].compiler_pass >= _RESULTS[file].celpy_pass, file


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
    assert to_value(test.get("value")) == celtypes.DoubleType(-1.5e-3)
    assert to_value(sections[1].get("test").get("value")) == celtypes.ListType([celtypes.IntType(-2), celtypes.UintType(3)])
    assert doc.all("a") == ["1", "2"] and doc.get("b").get("c") == "FOO"
    assert doc.get("d").names() == ["[type.googleapis.com/google.protobuf.Duration]"]
