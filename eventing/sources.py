"""Validate event sources (KafkaSource, RocketMQSource, PingSource) into typed ``SourcePlan``s.

Knative's own field names and defaults; an unknown field is an error; every problem is
reported as ``file: Kind/name: field: message`` like the rest of ``eventing/``.

- KafkaSource (``sources.knative.dev/v1`` and ``v1beta1``), as eventing-kafka-broker's
  ``control-plane/pkg/apis/sources/v1/kafka_types.go``, ``kafka_defaults.go`` and
  ``kafka_validation.go`` define it: ``topics`` and ``bootstrapServers`` required,
  ``initialOffset`` earliest | latest (default latest), ``ordering`` ordered | unordered
  (default ordered), ``consumers`` (default 1), the label
  ``kafkasources.sources.knative.dev/key-type`` (string | int | float | byte-array; Knative's
  controller falls back to string on any other value, knflow reports it).
  ``consumerGroup`` defaults to ``knative-kafka-source-<namespace>-<name>``: Knative's
  webhook picks ``knative-kafka-source-<random uuid>`` once and stores it, which a compiler
  run on every start cannot do without losing the group's offsets.
- PingSource (``sources.knative.dev/v1``, and ``v1beta2``, which Knative still serves and
  converts to v1 field for field), as ``knative.dev/eventing``
  ``pkg/apis/sources/v1/ping_validation.go``: ``schedule`` (5-field cron or a descriptor such
  as ``@hourly``), ``timezone`` (an IANA name), ``data`` xor ``dataBase64``, and for
  ``contentType: application/json`` the data must be a JSON object. Knative's webhook
  rejects ``@every``; knflow accepts ``@every <duration>`` as an extension (see
  ``transforms/sources.py``).
- RocketMQSource: the community source's CRD (``apache/rocketmq-externals``
  ``rocketmq-knative/source/pkg/apis/sources/v1alpha1/rocketmqsource_types.go``, group
  ``sources.eventing.knative.dev/v1alpha1``): ``topic``, ``namesrvAddr`` (space- or
  ``;``-separated), ``groupName`` (in its sample), ``accessToken.secretKeyRef``,
  ``serviceAccountName`` (accepted, unused) and ``sink`` (an ObjectReference there; a
  Knative Destination is accepted too), plus knflow's ``selectorExpression`` (the RocketMQ
  tag expression, default ``*``) and ``initialOffset``.

A sink that is a Broker ref must name a Broker in the manifests; its events then enter that
broker's topic. Any other sink (a service ref or a uri) is delivered directly.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Callable, Iterable, Mapping

from eventing.delivery_spec import parse_delivery
from eventing.destinations import DestinationError, parse_destination
from eventing.errors import Problem
from eventing.kafka_auth import parse_net
from eventing.manifests import Resource
from eventing.secrets import Secrets
from eventing.plan import (
    KAFKA_SOURCE, ORDERED, PING_SOURCE, ROCKETMQ_SOURCE, UNORDERED, DeliveryPolicy, Destination,
    KafkaSourcePlan, PingSourcePlan, Ref, RocketMQSourcePlan, SourcePlan, broker_topic,
)

SOURCES_V1 = "sources.knative.dev/v1"
SOURCES_V1BETA1 = "sources.knative.dev/v1beta1"
SOURCES_V1BETA2 = "sources.knative.dev/v1beta2"
#: The community RocketMQ source's group (its CRD), and the same version in Knative's group.
ROCKETMQ_VERSIONS = ("sources.eventing.knative.dev/v1alpha1", "sources.knative.dev/v1alpha1")
API_VERSIONS = {
    KAFKA_SOURCE: (SOURCES_V1, SOURCES_V1BETA1),
    PING_SOURCE: (SOURCES_V1, SOURCES_V1BETA2),
    ROCKETMQ_SOURCE: ROCKETMQ_VERSIONS,
}
SOURCE_KINDS = frozenset(API_VERSIONS)

KEY_TYPE_LABEL = "kafkasources.sources.knative.dev/key-type"
KEY_TYPES = ("string", "int", "float", "byte-array")
OFFSETS = ("earliest", "latest")

KAFKA_FIELDS = ("bootstrapServers", "topics", "consumerGroup", "initialOffset", "consumers", "ordering",
                "delivery", "sink", "ceOverrides", "net")
PING_FIELDS = ("schedule", "timezone", "contentType", "data", "dataBase64", "sink", "ceOverrides")
ROCKETMQ_FIELDS = ("topic", "namesrvAddr", "groupName", "accessToken", "serviceAccountName", "sink",
                   "selectorExpression", "initialOffset")

Report = Callable[[str, str], None]


def compile_source(res: Resource, brokers: Mapping[str, Resource], problems: list[Problem],
                   secrets: Secrets | None = None) -> SourcePlan | None:
    """The typed plan of one source resource, or None after reporting its problems;
    ``secrets``: the Secrets of the manifests (``eventing.secrets``), for ``secretKeyRef``s."""
    start = len(problems)

    def report(field: str, message: str) -> None:
        problems.append(res.problem(field, message))

    versions = API_VERSIONS[res.kind]
    if res.api_version not in versions:
        report("apiVersion", f"{res.api_version} is not supported for {res.kind}; use {' or '.join(versions)}")
        return None
    known = {KAFKA_SOURCE: KAFKA_FIELDS, PING_SOURCE: PING_FIELDS, ROCKETMQ_SOURCE: ROCKETMQ_FIELDS}[res.kind]
    for key in res.spec:
        if key not in known:
            report(f"spec.{key}", f"unknown field (known: {', '.join(known)})")
    common = _common(res, brokers, report)
    if res.kind == KAFKA_SOURCE:
        specific = _kafka(res, report, secrets or {})
    else:
        specific = {PING_SOURCE: _ping, ROCKETMQ_SOURCE: _rocketmq}[res.kind](res, report)
    if len(problems) > start or common is None or specific is None:
        return None
    cls = {KAFKA_SOURCE: KafkaSourcePlan, PING_SOURCE: PingSourcePlan, ROCKETMQ_SOURCE: RocketMQSourcePlan}[res.kind]
    return cls(kind=res.kind, namespace=res.namespace, name=res.name, source_file=res.file, **common, **specific)


# ---------------------------------------------------------------------------------------
# what every source has: sink (+ where it flows), delivery, ceOverrides
# ---------------------------------------------------------------------------------------


def _common(res: Resource, brokers: Mapping[str, Resource], report: Report) -> dict[str, Any] | None:
    spec = res.spec
    out: dict[str, Any] = {}
    sink = _sink(spec.get("sink"), res, report)
    if sink is not None:
        out["sink"] = sink
        ref = sink.ref
        if ref is not None and ref.kind == "Broker":
            if ref.key not in brokers:
                ns = ref.namespace
                known = sorted(k.split("/", 1)[1] for k in brokers if k.startswith(ns + "/"))
                report("spec.sink.ref.name", f"broker {ref.name!r} not found in namespace {ns!r} "
                                              f"(known: {', '.join(known) or 'none'})")
            elif sink.uri:
                report("spec.sink.uri", "a Broker sink takes no uri path (events enter the broker's topic)")
            else:
                out["broker"] = ref.key
                out["topic"] = broker_topic(ref.namespace, ref.name, brokers[ref.key].annotations)
        elif ref is not None and ref.kind == "KafkaSink":
            report("spec.sink.ref", "a KafkaSink is not supported as a source sink in knflow (use a Broker, a service or a uri)")
    if res.kind == KAFKA_SOURCE and spec.get("delivery") is not None:
        delivery = parse_delivery(spec["delivery"], "spec.delivery", res.namespace, report)
        if delivery is not None and delivery.dead_letter_sink is not None and delivery.dead_letter_sink.ref is not None \
                and delivery.dead_letter_sink.ref.kind == "KafkaSink":
            report("spec.delivery.deadLetterSink.ref", "a KafkaSink dead-letter sink is not supported for sources yet")
            delivery = None
        if delivery is None:
            return None
        out["delivery"] = delivery
    else:
        out["delivery"] = DeliveryPolicy()
    overrides = _ce_overrides(spec.get("ceOverrides"), report)
    if overrides is None:
        return None
    out["ce_overrides"] = overrides
    return out if sink is not None else None


def _sink(value: Any, res: Resource, report: Report) -> Destination | None:
    if value is None:
        report("spec.sink", "is required (a Broker ref, a service ref or a uri)")
        return None
    if res.kind == ROCKETMQ_SOURCE and isinstance(value, Mapping) and "kind" in value and "ref" not in value:
        # The community CRD's sink is a corev1.ObjectReference: {apiVersion, kind, name, namespace}.
        if not _fields_ok(value, "spec.sink", ("apiVersion", "kind", "name", "namespace"), ("kind", "name"), report):
            return None
        namespace = value.get("namespace", res.namespace)
        if not isinstance(namespace, str) or not namespace:
            report("spec.sink.namespace", "must be a non-empty string")
            return None
        return Destination(ref=Ref(kind=value["kind"], name=value["name"], namespace=namespace,
                                   api_version=str(value.get("apiVersion", ""))))
    try:
        return parse_destination(value, "spec.sink", res.namespace)
    except DestinationError as exc:
        report(exc.field, str(exc))
        return None


_EXTENSION_NAME = re.compile(r"[a-z0-9]+\Z")


def _ce_overrides(value: Any, report: Report) -> dict[str, str] | None:
    """``spec.ceOverrides.extensions``. Knative's webhook also lets upper case through; a
    CloudEvents attribute name is lower case letters and digits only, so knflow refuses it."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        report("spec.ceOverrides", f"must be a mapping with extensions, got {type(value).__name__}")
        return None
    ok = True
    for key in value:
        if key != "extensions":
            report(f"spec.ceOverrides.{key}", "unknown field (known: extensions)")
            ok = False
    extensions = value.get("extensions") or {}
    if not isinstance(extensions, Mapping):
        report("spec.ceOverrides.extensions", f"must be a map of name to string, got {type(extensions).__name__}")
        return None
    out: dict[str, str] = {}
    for name, text in extensions.items():
        where = f"spec.ceOverrides.extensions.{name}"
        if not isinstance(name, str) or not _EXTENSION_NAME.match(name):
            report(where, "extension names are lower case letters a-z and digits 0-9 (CloudEvents attribute names)")
            ok = False
        elif name in ("id", "source", "type", "specversion", "data", "time", "subject", "datacontenttype", "dataschema"):
            report(where, f"{name!r} is a CloudEvents context attribute, not an extension")
            ok = False
        elif not isinstance(text, str):
            report(where, f"must be a string, got {type(text).__name__}")
            ok = False
        else:
            out[name] = text
    return out if ok else None


def _string_list(value: Any, field: str, report: Report, *, split: str | None = None) -> tuple[str, ...] | None:
    """A required list of non-empty strings (a single string is accepted; ``split`` splits it)."""
    if value is None:
        report(field, "is required")
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        report(field, f"must be a list of strings, got {type(value).__name__}")
        return None
    out: list[str] = []
    for index, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            report(f"{field}[{index}]", f"must be a non-empty string, got {item!r}")
            return None
        if split:
            out.extend(part for part in re.split(split, item.strip()) if part)
        else:
            out.append(item.strip())
    if not out:
        report(field, "must not be empty")
        return None
    return tuple(out)


def _name_or_default(spec: Mapping[str, Any], key: str, default: str, report: Report) -> str | None:
    """``spec.<key>``: a non-empty string, or ``default`` when absent; None after reporting."""
    value = spec.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or not value:
        report(f"spec.{key}", f"must be a non-empty string, got {value!r}")
        return None
    return value


def _choice(value: Any, field: str, allowed: Iterable[str], default: str, report: Report) -> str | None:
    if value is None:
        return default
    allowed = tuple(allowed)
    if value not in allowed:
        report(field, f"must be {' or '.join(allowed)}, got {value!r}")
        return None
    return value


# ---------------------------------------------------------------------------------------
# KafkaSource
# ---------------------------------------------------------------------------------------


def _kafka(res: Resource, report: Report, secrets: Secrets) -> dict[str, Any] | None:
    spec = res.spec
    out: dict[str, Any] = {}
    servers = _string_list(spec.get("bootstrapServers"), "spec.bootstrapServers", report, split=r"\s*,\s*")
    topics = _string_list(spec.get("topics"), "spec.topics", report)
    offset = _choice(spec.get("initialOffset"), "spec.initialOffset", OFFSETS, "latest", report)
    ordering = _choice(spec.get("ordering"), "spec.ordering", (ORDERED, UNORDERED), ORDERED, report)
    group = _name_or_default(spec, "consumerGroup", f"knative-kafka-source-{res.namespace}-{res.name}", report)
    consumers = spec.get("consumers", 1)
    if isinstance(consumers, bool) or not isinstance(consumers, int) or consumers < 1:
        report("spec.consumers", f"must be a positive integer, got {consumers!r}")
        consumers = None
    labels = res.metadata.get("labels") or {}
    key_type = labels.get(KEY_TYPE_LABEL, "string") if isinstance(labels, Mapping) else "string"
    if key_type not in KEY_TYPES:
        report(f"metadata.labels[{KEY_TYPE_LABEL}]", f"must be one of {', '.join(KEY_TYPES)}, got {key_type!r}")
        key_type = None
    auth = parse_net(spec["net"], res.namespace, secrets, report) if spec.get("net") is not None else None
    if None in (servers, topics, offset, ordering, group, consumers, key_type):
        return None
    out.update(bootstrap_servers=servers, topics=topics, initial_offset=offset, ordering=ordering,
               consumer_group=group, consumers=consumers, key_type=key_type, auth=auth)
    return out


# ---------------------------------------------------------------------------------------
# PingSource
# ---------------------------------------------------------------------------------------


def _ping(res: Resource, report: Report) -> dict[str, Any] | None:
    from transforms.sources import CronError, parse_schedule

    spec = res.spec
    ok = True
    schedule = spec.get("schedule")
    timezone = spec.get("timezone")
    if timezone is not None and (not isinstance(timezone, str) or not timezone):
        report("spec.timezone", f"must be an IANA time zone name such as Europe/Paris, got {timezone!r}")
        ok, timezone = False, None
    if not isinstance(schedule, str) or not schedule.strip():
        report("spec.schedule", "is required (a cron schedule such as '*/5 * * * *' or '@hourly')")
        ok = False
    else:
        try:
            parse_schedule(schedule, timezone)
        except CronError as exc:
            report(f"spec.{exc.field}", exc.message)
            ok = False
    content_type = spec.get("contentType")
    if content_type is not None and (not isinstance(content_type, str) or not content_type):
        report("spec.contentType", f"must be a media type such as application/json, got {content_type!r}")
        ok = False
    data, data64 = spec.get("data"), spec.get("dataBase64")
    payload: Any = None
    if data not in (None, "") and data64 not in (None, ""):
        report("spec.data", "expected exactly one of data and dataBase64, got both")
        ok = False
    elif data64 not in (None, ""):
        if not isinstance(data64, str):
            report("spec.dataBase64", f"must be a base64 string, got {type(data64).__name__}")
            return None
        try:
            payload = base64.b64decode(data64, validate=True)
        except (binascii.Error, ValueError) as exc:
            report("spec.dataBase64", f"invalid base64: {exc}")
            return None
        if content_type == "application/json" and _json_object_error(payload) is not None:
            report("spec.dataBase64", f"decoded data is not a JSON object ({_json_object_error(payload)}), "
                                      "but contentType is application/json")
            ok = False
    elif data not in (None, ""):
        if not isinstance(data, str):
            report("spec.data", f"must be a string, got {type(data).__name__} (write JSON as a string)")
            return None
        if content_type == "application/json":
            error = _json_object_error(data.encode("utf-8"))
            if error is not None:
                report("spec.data", f"is not a JSON object ({error}), but contentType is application/json")
                ok = False
            else:
                payload = json.loads(data)
        else:
            payload = data.encode("utf-8")
    if not ok:
        return None
    return {"schedule": schedule.strip(), "timezone": timezone, "content_type": content_type, "data": payload}


def _json_object_error(raw: bytes) -> str | None:
    """Knative unmarshals the data into a map: it must be a JSON object."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"invalid JSON: {exc}"
    return None if isinstance(value, dict) else f"a JSON {type(value).__name__}, not an object"


# ---------------------------------------------------------------------------------------
# RocketMQSource
# ---------------------------------------------------------------------------------------


def _rocketmq(res: Resource, report: Report) -> dict[str, Any] | None:
    spec = res.spec
    topic = spec.get("topic")
    if not isinstance(topic, str) or not topic:
        report("spec.topic", "is required (the RocketMQ topic to consume)")
        topic = None
    namesrv = _string_list(spec.get("namesrvAddr"), "spec.namesrvAddr", report, split=r"[\s;]+")
    group = _name_or_default(spec, "groupName", f"knative-rocketmq-source-{res.namespace}-{res.name}", report)
    selector = spec.get("selectorExpression", "*")
    if not isinstance(selector, str) or not selector.strip():
        report("spec.selectorExpression", f"must be a tag expression such as '*' or 'TagA || TagB', got {selector!r}")
        selector = None
    offset = _choice(spec.get("initialOffset"), "spec.initialOffset", OFFSETS, "latest", report)
    access = _secret_ref(spec.get("accessToken"), "spec.accessToken", report)
    account = spec.get("serviceAccountName")
    if account is not None and not isinstance(account, str):
        report("spec.serviceAccountName", f"must be a string, got {type(account).__name__}")
        return None
    if None in (topic, namesrv, group, selector, offset) or access is False:
        return None
    return {"topic_name": topic, "namesrv_addr": namesrv, "group_name": group,
            "selector_expression": selector.strip(), "initial_offset": offset, "access_token": access}


def _secret_ref(value: Any, field: str, report: Report) -> tuple[str, str] | None | bool:
    """``{secretKeyRef: {name, key}}`` -> (name, key); None when absent; False when invalid."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) - {"secretKeyRef"}:
        report(field, "must be {secretKeyRef: {name, key}}")
        return False
    ref = value.get("secretKeyRef")
    if ref is None:
        return None
    if not isinstance(ref, Mapping):
        report(f"{field}.secretKeyRef", "must be a mapping with name and key")
        return False
    if not _fields_ok(ref, f"{field}.secretKeyRef", ("name", "key", "optional"), ("name", "key"), report):
        return False
    return ref["name"], ref["key"]


def _fields_ok(value: Mapping[str, Any], field: str, known: tuple[str, ...], required: tuple[str, ...],
               report: Report) -> bool:
    """No field outside ``known``, and every ``required`` one a non-empty string; reports the first fault."""
    for key in value:
        if key not in known:
            report(f"{field}.{key}", f"unknown field (known: {', '.join(known)})")
            return False
    for key in required:
        if not isinstance(value.get(key), str) or not value.get(key):
            report(f"{field}.{key}", "is required")
            return False
    return True
