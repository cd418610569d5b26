"""Read Knative manifests: multi-document YAML files into plain ``Resource`` records.

Loading only checks the envelope (apiVersion, kind, metadata.name); what a resource
means is the compiler's job. Problems are collected, not raised one by one, so a user
sees every mistake in one run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from eventing.errors import Problem

DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class Resource:
    file: str
    api_version: str
    kind: str
    name: str
    namespace: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    spec: Mapping[str, Any] = field(default_factory=dict)
    #: the resource's other top-level fields (a Secret's ``data``, ``stringData``, ``type``)
    body: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def annotations(self) -> Mapping[str, Any]:
        value = self.metadata.get("annotations") or {}
        return value if isinstance(value, Mapping) else {}

    def problem(self, field_path: str, message: str) -> Problem:
        return Problem(self.file, self.kind, self.name, field_path, message)


def load_documents(text: str, file: str) -> tuple[list[Resource], list[Problem]]:
    """Parse one file's YAML documents into resources plus the problems found."""
    resources: list[Resource] = []
    problems: list[Problem] = []
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        detail = getattr(exc, "problem", None) or str(exc)
        return [], [Problem(file, "", "", "", f"invalid YAML: {where}{detail}")]
    for index, doc in enumerate(documents):
        if doc is None:
            continue
        label = f"document {index + 1}"
        if not isinstance(doc, Mapping):
            problems.append(Problem(file, "", "", label, f"expected a Kubernetes resource (a mapping), got {type(doc).__name__}"))
            continue
        if doc.get("kind") == "List" and str(doc.get("apiVersion", "v1")) == "v1":
            # `kubectl get -o yaml` writes a v1 List of the resources (items may be empty or null).
            items = doc.get("items") or []
            if not isinstance(items, list):
                problems.append(Problem(file, "List", f"<{label}>", "items", f"must be a list of resources, got {type(items).__name__}"))
                continue
            for item_index, item in enumerate(items):
                _add(item, file, f"{label} items[{item_index}]", resources, problems)
            continue
        _add(doc, file, label, resources, problems)
    return resources, problems


def _add(doc: Any, file: str, label: str, resources: list[Resource], problems: list[Problem]) -> None:
    if not isinstance(doc, Mapping):
        problems.append(Problem(file, "", "", label, f"expected a Kubernetes resource (a mapping), got {type(doc).__name__}"))
        return
    kind = doc.get("kind")
    api_version = doc.get("apiVersion")
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    shown_kind = kind if isinstance(kind, str) and kind else "?"
    shown_name = name if isinstance(name, str) and name else f"<{label}>"
    ok = True
    for field_name, value in (("kind", kind), ("apiVersion", api_version)):
        if not isinstance(value, str) or not value:
            problems.append(Problem(file, shown_kind, shown_name, field_name, "is required"))
            ok = False
    if not isinstance(metadata, Mapping):
        problems.append(Problem(file, shown_kind, shown_name, "metadata", "is required (with a name)"))
        return
    if not isinstance(name, str) or not name:
        problems.append(Problem(file, shown_kind, shown_name, "metadata.name", "is required"))
        ok = False
    namespace = metadata.get("namespace", DEFAULT_NAMESPACE)
    if not isinstance(namespace, str) or not namespace:
        problems.append(Problem(file, shown_kind, shown_name, "metadata.namespace", "must be a non-empty string"))
        ok = False
    spec = doc.get("spec", {})
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        problems.append(Problem(file, shown_kind, shown_name, "spec", f"must be a mapping, got {type(spec).__name__}"))
        ok = False
    if ok:
        body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata", "spec")}
        resources.append(Resource(file, api_version, kind, name, namespace, dict(metadata), dict(spec), body))


def load_files(paths: Iterable[str | Path]) -> tuple[list[Resource], list[Problem]]:
    """Load every file (a directory means every *.yaml / *.yml in it, sorted)."""
    resources: list[Resource] = []
    problems: list[Problem] = []
    for path in expand_paths(paths):
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            problems.append(Problem(str(path), "", "", "", f"cannot read: {exc.strerror or exc}"))
            continue
        found, bad = load_documents(text, str(path))
        resources.extend(found)
        problems.extend(bad)
    return resources, problems


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")))
        else:
            out.append(path)
    return out
