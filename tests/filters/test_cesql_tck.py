"""The CloudEvents SQL v1 TCK (../shared/conformance/cesql-tck/*.yaml), one test per case.

Each case gives an expression, optionally an event (or overrides of a default one), the
expected value and the expected error kind. Every case runs through ``compile_cesql`` and
``evaluate``; a case that cannot pass must be listed in ``KNOWN_EXCEPTIONS`` with its
reason (it then runs as a strict xfail), never skipped.
"""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from filters.base import EventView
from filters.cesql import BUILTINS, CesqlParseError, FunctionRegistry, compile_cesql, register_function
from tests.conformance import CONFORMANCE, conformance_path

TCK = CONFORMANCE / "cesql-tck"

#: 275 cases in the TCK proper + 8 in user_defined_functions.yaml (see conformance/README.md).
EXPECTED_CASES = 283

#: case id -> why it cannot pass. Empty: every case passes.
KNOWN_EXCEPTIONS: dict[str, str] = {}

#: What the TCK means by "any valid event" when a case gives only eventOverrides.
DEFAULT_EVENT = {"specversion": "1.0", "id": "tck-id", "source": "tck-source", "type": "tck-type"}


class _TckLoader(yaml.SafeLoader):
    """YAML for the TCK: ``expression`` stays the raw text, elsewhere only what the TCK means.

    PyYAML's defaults would turn the expression ``TRUE`` into a bool, ``-10`` into an int,
    and ``2018-04-26T14:48:09+02:00`` into a datetime. Here ``expression`` values are
    taken as written; other scalars resolve to bool only for true/false spellings, to int
    only for decimal integers, and are strings otherwise (no timestamps, floats, yes/no).
    """

    def construct_mapping(self, node, deep=False):
        mapping = super().construct_mapping(node, deep)
        for key_node, value_node in node.value:
            if key_node.value == "expression" and isinstance(value_node, yaml.ScalarNode):
                mapping["expression"] = value_node.value
        return mapping


_TckLoader.yaml_implicit_resolvers = {}
_TckLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_TckLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789"))
_TckLoader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
_TckLoader.add_constructor("tag:yaml.org,2002:int", lambda loader, node: int(loader.construct_scalar(node), 10))


def _load_cases() -> list[Any]:
    """``pytest.param``s for every case of every file, with ids ``file::case name``."""
    if not TCK.is_dir():  # the test then skips, naming the missing folder
        return [pytest.param("", {}, id="cesql-tck-absent")]
    params = []
    seen: dict[str, int] = {}
    for path in sorted(TCK.glob("*.yaml")):
        suite = yaml.load(path.read_text(encoding="utf-8"), Loader=_TckLoader)
        for case in suite["tests"]:
            case_id = f"{path.stem}::{case['name']}"
            seen[case_id] = seen.get(case_id, 0) + 1
            if seen[case_id] > 1:  # not_operator.yaml names two cases "Not true with casting"
                case_id = f"{case_id} #{seen[case_id]}"
            marks = []
            if case_id in KNOWN_EXCEPTIONS:
                marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_EXCEPTIONS[case_id]))
            params.append(pytest.param(path.stem, case, id=case_id, marks=marks))
    return params


CASES = _load_cases()


def _udf_registry() -> FunctionRegistry:
    """The functions user_defined_functions.yaml expects, in a registry of their own."""
    registry = FunctionRegistry(parent=BUILTINS)
    register_function("HASPREFIX", (str, str), lambda s, prefix: s.startswith(prefix), returns=bool, registry=registry)
    register_function("KONKAT", (), lambda *parts: "".join(parts), returns=str, variadic=str, registry=registry)
    return registry


UDF = _udf_registry()


def _event(case: dict) -> EventView:
    attributes = dict(case["event"]) if "event" in case else {**DEFAULT_EVENT, **case.get("eventOverrides", {})}
    if isinstance(attributes.get("time"), str):  # as the codec gives it: a datetime
        attributes["time"] = datetime.fromisoformat(attributes["time"].replace("Z", "+00:00"))
    return EventView(attributes)


def _instant(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.utcoffset() is not None else None


def _same(actual: Any, expected: Any) -> bool:
    """Equal values of the same CESQL type (``True`` is not ``1``).

    A Timestamp is a String in CESQL, and one instant has many RFC 3339 spellings: the
    TCK writes the event's own offset (``...14:48:09+02:00``), our events render ``time``
    in UTC (``...12:48:09Z``), as Knative's engine does. Timestamps compare as instants.
    """
    if type(actual) is not type(expected):
        return False
    if actual == expected:
        return True
    if type(expected) is str:
        a, e = _instant(actual), _instant(expected)
        return a is not None and e is not None and a == e
    return False


@pytest.mark.parametrize("suite,case", CASES)
def test_tck_case(suite: str, case: dict) -> None:
    conformance_path("cesql-tck")
    functions = UDF if suite == "user_defined_functions" else None
    expression = case["expression"]
    if case.get("error") == "parse":
        with pytest.raises(CesqlParseError) as raised:
            compile_cesql(expression, functions)
        assert raised.value.kind == "parse"
        return  # a parse error leaves no expression to evaluate, hence no value
    value, error = compile_cesql(expression, functions).evaluate(_event(case))
    if "error" in case:
        assert error is not None, f"expected a {case['error']} error, got value {value!r} and no error"
        assert error.kind == case["error"], f"expected a {case['error']} error, got {error}"
    else:
        assert error is None, f"unexpected error {error}"
    if "result" in case:
        assert _same(value, case["result"]), f"value {value!r}, expected {case['result']!r}"


def test_every_tck_case_was_collected() -> None:
    """A loader bug that finds no (or fewer) cases must fail, not pass vacuously."""
    folder: Path = conformance_path("cesql-tck")
    assert folder == TCK
    assert len(CASES) == EXPECTED_CASES
    assert len({p.id for p in CASES}) == EXPECTED_CASES
    assert set(KNOWN_EXCEPTIONS) <= {p.id for p in CASES}
