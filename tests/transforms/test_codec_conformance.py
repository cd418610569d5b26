"""The codec against the CloudEvents conformance material in ../shared/conformance/cloudevents.

- ``yaml/**/*.yaml``: event documents (ContextAttributes, Extensions, Data, optional Mode).
  Each v1.0 document is put on the wire (HTTP and Kafka, in its mode or both), decoded,
  checked, re-encoded in every mode and decoded again. v0.3 documents must be rejected
  with a specversion error in every form.
- ``features/*.feature``: Gherkin scenarios, run by the tiny parser below (Background,
  Scenario, Scenario Outline + Examples, docstrings, tables). An unknown step fails.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conformance import conformance_path
from transforms.codec import (
    CodecError,
    decode_http,
    decode_kafka,
    encode_http,
    encode_kafka,
    event_from_dict,
    event_to_dict,
)

EXPECTED_V1_DOCS = 8  # yaml/v1.yaml (2) + yaml/v1.0/v1_minimum.yaml (6)
EXPECTED_V03_DOCS = 7  # yaml/v03.yaml (1) + yaml/v0.3/v03_minimum.yaml (6)
EXPECTED_SCENARIOS = {"http-protocol-binding.feature": 4, "kafka-protocol-binding.feature": 3}


def _root() -> Path | None:
    try:
        return conformance_path("cloudevents")
    except pytest.skip.Exception:  # absent: the count tests below report the skip
        return None


ROOT = _root()


def _params(cases: list[tuple[str, Any]]) -> list[Any]:
    if ROOT is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason="conformance data not found"))]
    return [pytest.param(case, id=case_id) for case_id, case in cases]


# --------------------------------------------------------------------------------------
# YAML event documents
# --------------------------------------------------------------------------------------


@dataclass
class YamlDoc:
    path: str
    index: int
    attributes: dict[str, str]  # context attributes and extensions, all strings as written
    data: str | None
    modes: tuple[str, ...]
    transport: dict[str, str]


def load_yaml_docs(root: Path | None) -> list[YamlDoc]:
    docs: list[YamlDoc] = []
    if root is None:
        return docs
    for path in sorted((root / "yaml").rglob("*.yaml")):
        # BaseLoader: every scalar is a string ("1.0" stays "1.0", times are not parsed)
        for index, doc in enumerate(yaml.load_all(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)):
            if not doc:
                continue
            context = dict(doc["ContextAttributes"])
            extensions = context.pop("Extensions", None) or {}
            mode = doc.get("Mode")
            docs.append(
                YamlDoc(
                    path=str(path.relative_to(root)),
                    index=index,
                    attributes={**context, **extensions},
                    data=doc.get("Data"),
                    modes=(mode,) if mode else ("binary", "structured"),
                    transport=dict(doc.get("TransportExtensions") or {}),
                )
            )
    return docs


YAML_DOCS = load_yaml_docs(ROOT)
V1_DOCS = [d for d in YAML_DOCS if d.attributes.get("specversion") == "1.0"]
V03_DOCS = [d for d in YAML_DOCS if d.attributes.get("specversion") == "0.3"]


def _doc_id(doc: YamlDoc) -> str:
    return f"{doc.path}#{doc.index}:{doc.attributes.get('id')}"


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    subtype = content_type.split(";")[0].strip().lower().partition("/")[2]
    return subtype == "json" or subtype.endswith("+json")


def _percent_encode(value: str) -> str:
    """The HTTP binding's header value encoding, written independently of the codec."""
    out = []
    for char in value:
        if "\x21" <= char <= "\x7e" and char not in '"%':
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def structured_form(doc: YamlDoc) -> dict[str, Any]:
    obj: dict[str, Any] = dict(doc.attributes)
    if doc.data is not None:
        content_type = obj.get("datacontenttype")
        # JSON format: no datacontenttype means application/json
        obj["data"] = json.loads(doc.data) if content_type is None or _is_json(content_type) else doc.data
    return obj


def expected_attributes(doc: YamlDoc) -> dict[str, Any]:
    expected: dict[str, Any] = dict(doc.attributes)
    if "time" in expected:
        expected["time"] = datetime.fromisoformat(expected["time"])
    return expected


def expected_data(doc: YamlDoc, mode: str) -> Any:
    content_type = doc.attributes.get("datacontenttype")
    if doc.data is None:
        return None
    if mode == "structured":
        return structured_form(doc)["data"]
    if _is_json(content_type):
        return json.loads(doc.data)
    if content_type is not None and content_type.lower().startswith("text/"):
        return doc.data
    return doc.data.encode("utf-8")  # binary mode without a JSON or text type: bytes


def wire_forms(doc: YamlDoc, mode: str) -> dict[str, Any]:
    """The document as an HTTP request and a Kafka record in ``mode``, built by hand."""
    content_type = doc.attributes.get("datacontenttype")
    if mode == "structured":
        body = json.dumps(structured_form(doc)).encode("utf-8")
        return {
            "http": ({"Content-Type": "application/cloudevents+json; charset=utf-8", **doc.transport}, body),
            "kafka": ([("content-type", b"application/cloudevents+json")], body),
        }
    http_headers = {f"ce-{k}": _percent_encode(v) for k, v in doc.attributes.items() if k != "datacontenttype"}
    kafka_headers = [(f"ce_{k}", v.encode("utf-8")) for k, v in doc.attributes.items() if k != "datacontenttype"]
    if content_type is not None:
        http_headers["Content-Type"] = content_type
        kafka_headers.append(("content-type", content_type.encode("utf-8")))
    body = b"" if doc.data is None else doc.data.encode("utf-8")
    return {"http": ({**http_headers, **doc.transport}, body), "kafka": (kafka_headers, body or None)}


def check(event, attributes: dict[str, Any], data: Any) -> None:
    assert event.get_attributes() == attributes
    assert type(event.get_data()) is type(data)
    assert event.get_data() == data


def test_yaml_documents_loaded():
    root = conformance_path("cloudevents")
    assert len(load_yaml_docs(root)) == EXPECTED_V1_DOCS + EXPECTED_V03_DOCS
    assert len(V1_DOCS) == EXPECTED_V1_DOCS
    assert len(V03_DOCS) == EXPECTED_V03_DOCS


@pytest.mark.parametrize("doc", _params([(_doc_id(d), d) for d in V1_DOCS]))
def test_yaml_v1_decodes_and_round_trips(doc: YamlDoc):
    attributes = expected_attributes(doc)
    for mode in doc.modes:
        wire = wire_forms(doc, mode)
        data = expected_data(doc, mode)
        [from_http] = decode_http(*wire["http"])
        check(from_http, attributes, data)
        check(decode_kafka(*wire["kafka"]), attributes, data)
        if mode == "structured":
            check(event_from_dict(structured_form(doc)), attributes, data)
            assert event_to_dict(from_http) == structured_form(doc)
        # re-encode in every mode and binding
        for out_mode in ("binary", "structured"):
            want_attributes, want_data = attributes, data
            if (mode, out_mode) == ("structured", "binary"):
                want_attributes, want_data = through_binary(attributes, data)
            [again] = decode_http(*encode_http(from_http, out_mode))
            check(again, want_attributes, want_data)
            _key, headers, value = encode_kafka(from_http, out_mode)
            check(decode_kafka(headers, value), want_attributes, want_data)


def through_binary(attributes: dict[str, Any], data: Any) -> tuple[dict[str, Any], Any]:
    """What a structured-mode event becomes after a trip through binary mode.

    JSON format: no datacontenttype means application/json, and binary mode states it on
    the wire. A string with a type that is neither JSON nor text/* comes back as bytes.
    """
    content_type = attributes.get("datacontenttype")
    if data is None or isinstance(data, bytes):
        return attributes, data
    if content_type is None:
        return {**attributes, "datacontenttype": "application/json"}, data
    if not _is_json(content_type) and not content_type.lower().startswith("text/"):
        return attributes, data.encode("utf-8")
    return attributes, data


@pytest.mark.parametrize("doc", _params([(_doc_id(d), d) for d in V03_DOCS]))
def test_yaml_v03_rejected_with_specversion_error(doc: YamlDoc):
    unsupported = re.escape("unsupported specversion '0.3' (only '1.0' is supported)")
    for mode in ("binary", "structured"):
        wire = wire_forms(doc, mode)
        with pytest.raises(CodecError, match=unsupported):
            decode_http(*wire["http"])
        with pytest.raises(CodecError, match=unsupported):
            decode_kafka(*wire["kafka"])
    with pytest.raises(CodecError, match=rf"attribute 'specversion': {unsupported}"):
        event_from_dict(structured_form(doc))


# --------------------------------------------------------------------------------------
# Gherkin features
# --------------------------------------------------------------------------------------

STEP = re.compile(r"(Given|When|Then|And|But)\s+(.*)")


@dataclass
class Step:
    text: str
    docstring: str | None = None
    table: list[list[str]] | None = None


@dataclass
class Scenario:
    name: str
    steps: list[Step] = field(default_factory=list)
    examples: list[list[str]] | None = None


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def parse_feature(text: str) -> list[Scenario]:
    """Background + Scenario (Outline) blocks -> scenarios, outlines expanded per example."""
    background: list[Step] = []
    scenarios: list[Scenario] = []
    block: list[Step] | None = None  # where steps go
    current: Scenario | None = None
    in_examples = False
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        i += 1
        if stripped.startswith('"""'):
            if block is None or not block:
                raise ValueError(f"line {i}: docstring without a step")
            indent = len(line) - len(line.lstrip())
            body = []
            while i < len(lines) and lines[i].strip() != '"""':
                body.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i].lstrip())
                i += 1
            if i == len(lines):
                raise ValueError("unterminated docstring")
            i += 1
            block[-1].docstring = "\n".join(body)
        elif stripped.startswith("|"):
            if in_examples and current is not None:
                current.examples = (current.examples or []) + [_cells(stripped)]
            elif block:
                block[-1].table = (block[-1].table or []) + [_cells(stripped)]
            else:
                raise ValueError(f"line {i}: table without a step")
        elif stripped.startswith("Background:"):
            block, current, in_examples = background, None, False
        elif stripped.startswith(("Scenario:", "Scenario Outline:", "Scenario Template:")):
            current = Scenario(stripped.partition(":")[2].strip())
            scenarios.append(current)
            block, in_examples = current.steps, False
        elif stripped.startswith(("Examples:", "Scenarios:")):
            in_examples = True
        elif (match := STEP.match(stripped)) and block is not None and not in_examples:
            block.append(Step(match.group(2)))
        # anything else (Feature line, tags, descriptions, comments) carries no steps
    out: list[Scenario] = []
    for scenario in scenarios:
        steps = background + scenario.steps
        if scenario.examples is None:
            out.append(Scenario(scenario.name, steps))
            continue
        header, *rows = scenario.examples
        if not rows:
            raise ValueError(f"outline {scenario.name!r} has no examples")
        for row in rows:
            values = dict(zip(header, row, strict=True))

            def fill(s: str, values=values) -> str:
                return re.sub(r"<([^<>]+)>", lambda m: values.get(m.group(1), m.group(0)), s)

            out.append(
                Scenario(
                    fill(scenario.name),
                    [
                        Step(
                            fill(step.text),
                            None if step.docstring is None else fill(step.docstring),
                            None if step.table is None else [[fill(c) for c in r] for r in step.table],
                        )
                        for step in steps
                    ],
                )
            )
    return out


def load_scenarios(root: Path | None) -> list[tuple[str, Scenario]]:
    if root is None:
        return []
    cases = []
    for path in sorted((root / "features").glob("*.feature")):
        for scenario in parse_feature(path.read_text(encoding="utf-8")):
            cases.append((f"{path.name}:{scenario.name}", scenario))
    return cases


SCENARIOS = load_scenarios(ROOT)


def _table_dict(table: list[list[str]] | None) -> dict[str, str]:
    assert table and table[0] == ["key", "value"], f"expected a key/value table, got {table!r}"
    return {key: value for key, value in table[1:]}


def _parse_http_request(text: str) -> tuple[dict[str, str], bytes]:
    head, _, body = text.partition("\n\n")
    request_line, *header_lines = head.splitlines()
    assert request_line.split()[0] in {"POST", "PUT"}, request_line
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    return headers, body.encode("utf-8")


def run_scenario(scenario: Scenario) -> None:
    http: tuple[dict[str, str], bytes] | None = None
    kafka_value: bytes | None = None
    kafka_headers: list[tuple[str, bytes]] = []
    event = None
    checked = set()
    for step in scenario.steps:
        text = step.text.rstrip(":")
        if text in ("HTTP Protocol Binding is supported", "Kafka Protocol Binding is supported"):
            continue
        if text == "an HTTP request":
            http = _parse_http_request(step.docstring or "")
        elif text == "a Kafka message with payload":
            kafka_value = (step.docstring or "").encode("utf-8")
        elif text == "Kafka headers":
            kafka_headers = [(k, v.encode("utf-8")) for k, v in _table_dict(step.table).items()]
        elif text == "parsed as HTTP request":
            assert http is not None
            [event] = decode_http(*http)
        elif text == "parsed as Kafka message":
            event = decode_kafka(kafka_headers, kafka_value)
        elif text == "the attributes are":
            assert event is not None
            expected = _table_dict(step.table)
            written = {k: v for k, v in event_to_dict(event).items() if k not in ("data", "data_base64")}
            assert {k: str(v) for k, v in written.items()} == expected
            if "time" in expected:
                assert event.get_time() == datetime.fromisoformat(expected["time"])
            checked.add("attributes")
        elif text == "the data is equal to the following JSON":
            assert event is not None
            assert event.get_data() == json.loads(step.docstring or "")
            checked.add("data")
        else:
            raise AssertionError(f"unknown step {step.text!r} in scenario {scenario.name!r}")
    assert checked, f"scenario {scenario.name!r} checks nothing"


def test_feature_scenarios_loaded():
    root = conformance_path("cloudevents")
    counts: dict[str, int] = {}
    for case_id, _ in load_scenarios(root):
        name = case_id.split(":")[0]
        counts[name] = counts.get(name, 0) + 1
    assert counts == EXPECTED_SCENARIOS


@pytest.mark.parametrize("scenario", _params(SCENARIOS))
def test_feature_scenario(scenario: Scenario):
    run_scenario(scenario)


def test_gherkin_parser_on_a_sample():
    sample = '''
@tag
Feature: sample
  Some description.
  Background:
  Given thing is supported

  Scenario Outline: outline (<x>)
  Given a doc
      """
      line <x>
        indented
      """
  Then the table:
      | key | value |
      | a   | <x>   |
  Examples:
  | x |
  | 1 |
  | 2 |

  Scenario: plain
  When it runs
'''
    scenarios = parse_feature(sample)
    assert [s.name for s in scenarios] == ["outline (1)", "outline (2)", "plain"]
    first = scenarios[0]
    assert [s.text for s in first.steps] == ["thing is supported", "a doc", "the table:"]
    assert first.steps[1].docstring == "line 1\n  indented"
    assert first.steps[2].table == [["key", "value"], ["a", "1"]]
    assert [s.text for s in scenarios[2].steps] == ["thing is supported", "it runs"]
