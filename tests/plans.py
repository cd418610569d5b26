"""Build Plans from inline YAML in tests (the same compiler users run)."""
from __future__ import annotations

import textwrap

import yaml

from eventing.compiler import compile_plan
from eventing.manifests import load_documents
from eventing.plan import Plan


def plan_from_yaml(text: str, file: str = "test.yaml") -> Plan:
    resources, problems = load_documents(textwrap.dedent(text), file)
    return compile_plan(resources, problems)


def broker_yaml(name: str = "b", namespace: str = "ns", delivery: str = "") -> str:
    spec = f"\nspec:\n  delivery:\n{textwrap.indent(textwrap.dedent(delivery), '    ')}" if delivery else ""
    return f"apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: {name}, namespace: {namespace}}}{spec}\n"


def trigger_yaml(name: str, subscriber: str, filters: str = "", *, broker: str = "b", namespace: str = "ns",
                 delivery: str = "", annotations: str = "") -> str:
    out = f"---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
    if annotations:
        out += f"  annotations: {annotations}\n"
    out += f"spec:\n  broker: {broker}\n  subscriber: {{uri: \"{subscriber}\"}}\n"
    if filters:
        out += f"  filters: {filters}\n"
    if delivery:
        out += "  delivery:\n" + textwrap.indent(textwrap.dedent(delivery), "    ")
    return out


def configured_broker_yaml(namespace: str, config: dict[str, str], secret: dict[str, str] | None = None,
                           name: str = "live") -> str:
    """A Broker whose ``spec.config`` names Knative's Kafka broker ConfigMap
    (``knative-eventing/kafka-broker-config``, ``config`` its data) and, with ``secret``, the
    Secret ``kafka-auth`` (``secret`` its stringData) that the ConfigMap's
    ``auth.secret.ref.name`` then names: the documents as kubectl would take them."""
    docs = []
    data = dict(config)
    if secret is not None:
        docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kafka-auth", "namespace": "knative-eventing"},
                     "stringData": secret})
        data["auth.secret.ref.name"] = "kafka-auth"
    docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "kafka-broker-config", "namespace": "knative-eventing"}, "data": data})
    docs.append({"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "metadata": {"name": name, "namespace": namespace},
                 "spec": {"config": {"apiVersion": "v1", "kind": "ConfigMap", "name": "kafka-broker-config",
                                     "namespace": "knative-eventing"}}})
    return yaml.safe_dump_all(docs, sort_keys=False)
