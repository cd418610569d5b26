"""Validate Knative resources and compile them into a ``Plan``.

Every problem is collected (never the first one only) and reported as
``file: Kind/name: field: message``. A CEL or CESQL syntax error names its position.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple

from eventing.delivery_spec import parse_delivery
from eventing.destinations import DestinationError, parse_destination
from eventing.errors import ManifestError, Problem
from eventing.manifests import Resource, load_files
from eventing.plan import (
    DELIVERY_ORDER_ANNOTATION, EXTERNAL_TOPIC_ANNOTATION, ORDERED, UNORDERED, BrokerPlan, DeliveryPolicy, Plan,
    SourcePlan, TopicLayout, TriggerPlan, broker_topic,
)
from eventing.kafka_auth import BROKER_SECRET_KEYS, KafkaAuth, broker_auth
from eventing.secrets import collect_secrets, is_secret, readable_values
from eventing.sources import SOURCE_KINDS, compile_source
from filters.errors import FilterSpecError
from filters.materialize import materialize, materialize_trigger

EVENTING_V1 = "eventing.knative.dev/v1"
KAFKA_SINK_VERSION = "eventing.knative.dev/v1alpha1"
#: Knative Eventing's API groups: a kind of these that knflow does not read is an error, as
#: it would route events. Other groups (core v1, apps, serving.knative.dev, ...) route none.
EVENTING_GROUPS = ("eventing.knative.dev", "messaging.knative.dev", "flows.knative.dev", "sources.knative.dev",
                   "sinks.knative.dev", "bindings.knative.dev", "sources.eventing.knative.dev")
TRIGGER_FIELDS = ("broker", "brokerRef", "filter", "filters", "subscriber", "delivery")
BROKER_FIELDS = ("config", "delivery")


def load_plan(paths: Iterable[str | Path] | str | Path, *,
              allow_sources: bool | Callable[[SourcePlan], bool] = False) -> Plan:
    """Load manifest files (or directories of them) and compile them; raises ``ManifestError``
    listing all problems. One path is taken as itself, never as an iterable of characters.

    Sources are validated and compiled always. ``allow_sources``: True accepts every
    source (validate, plan); a predicate accepts the sources an engine runs (the Flink job:
    ``runs_in_job``); False refuses any (one problem per source)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    resources, problems = load_files(paths)
    plan = compile_plan(resources, problems)
    if allow_sources is not True:
        refused = [s for s in plan.sources if not (callable(allow_sources) and allow_sources(s))]
        if refused:
            raise ManifestError([_not_wired(source) for source in refused])
    return plan


def runs_in_job(source: SourcePlan) -> bool:
    """The sources the Flink job runs: KafkaSources (their topics enter the job where the
    broker topic enters), PingSources (a keyed timer per source emits each tick where the
    broker topic enters) and RocketMQSources, with `knflow rocketmq-bridge` beside the job
    (it writes their events to the broker's topic, or to the source's internal topic that
    the job reads); one whose sink is a service or uri is delivered to it directly."""
    return source.kind in ("KafkaSource", "PingSource", "RocketMQSource")


def _not_wired(source: SourcePlan) -> Problem:
    return Problem(source.source_file, source.kind, source.name, "kind",
                   f"this {source.kind} (sink {source.flows_to()}) is not run here: the Flink job (`knflow run`, "
                   f"`knflow submit`) runs KafkaSources, PingSources and RocketMQSources (with `knflow rocketmq-bridge` "
                   f"beside it), and `knflow validate` and `knflow plan` accept every source (leave it out of the "
                   f"manifests given here)")


def compile_plan(resources: list[Resource], problems: list[Problem] | None = None) -> Plan:
    problems = list(problems or [])
    brokers: dict[str, Resource] = {}
    triggers: list[Resource] = []
    source_resources: list[Resource] = []
    kafka_sinks: dict[str, tuple[str, str]] = {}
    kafka_sink_resources: list[Resource] = []
    sink_layouts: list[tuple[Resource, str, TopicLayout]] = []  # (KafkaSink, its topic, its sizes)
    seen: dict[tuple[str, str], Resource] = {}
    ignored: list[str] = []
    secrets = collect_secrets(resources, problems)
    for res in resources:
        if is_secret(res):
            continue  # read above, for the fields that name one
        if not _routes_events(res):
            # A file of Knative YAML often holds the subscriber's Service or Deployment beside its
            # Trigger; kubectl applies them all, and they take no part in routing.
            ignored.append(_ignored_entry(res))
            continue
        ident = (res.kind, res.key)
        if ident in seen:
            first = seen[ident]
            problems.append(res.problem("metadata.name", f"duplicate {res.kind} {res.key!r} (first defined in {first.file})"))
            continue
        seen[ident] = res
        if res.kind == "Broker" and res.api_version.startswith("eventing.knative.dev/"):
            if _check_version(res, problems):
                brokers[res.key] = res
        elif res.kind == "Trigger" and res.api_version.startswith("eventing.knative.dev/"):
            if _check_version(res, problems):
                triggers.append(res)
        elif res.kind == "KafkaSink" and res.api_version.startswith("eventing.knative.dev/"):
            sink = _kafka_sink(res, problems)
            if sink is not None:
                kafka_sinks[res.key] = sink
                kafka_sink_resources.append(res)
                layout = _kafka_sink_layout(res, problems)
                if layout is not None:
                    sink_layouts.append((res, sink[0], layout))
        elif res.kind in SOURCE_KINDS:
            source_resources.append(res)
        else:
            problems.append(res.problem("kind", f"unsupported kind {res.api_version}/{res.kind}; knflow reads {EVENTING_V1} Broker and Trigger, {KAFKA_SINK_VERSION} KafkaSink as a dead-letter sink, and the sources {', '.join(sorted(SOURCE_KINDS))}"))

    broker_delivery: dict[str, DeliveryPolicy] = {}
    topic_owner: dict[str, Resource] = {}
    for key, res in brokers.items():
        _unknown_fields(res, BROKER_FIELDS, problems)
        external = res.annotations.get(EXTERNAL_TOPIC_ANNOTATION)
        if external is not None and (not isinstance(external, str) or not external):
            problems.append(res.problem(f"metadata.annotations[{EXTERNAL_TOPIC_ANNOTATION}]",
                                        f"must be the name of a Kafka topic, got {external!r}"))
        topic = broker_topic(res.namespace, res.name, res.annotations)
        if topic in topic_owner:
            problems.append(res.problem(f"metadata.annotations[{EXTERNAL_TOPIC_ANNOTATION}]",
                                        f"topic {topic!r} is also Broker {topic_owner[topic].key}'s; a job reads each topic once"))
        topic_owner.setdefault(topic, res)
        policy = parse_delivery(res.spec.get("delivery"), "spec.delivery", res.namespace, _reporter(res, problems))
        policy = _resolve_kafka_sink(policy, kafka_sinks, _reporter(res, problems))
        if policy is not None:
            broker_delivery[key] = policy

    compiled: dict[str, list[TriggerPlan]] = defaultdict(list)
    for res in triggers:
        trigger = _compile_trigger(res, brokers, broker_delivery, kafka_sinks, problems)
        if trigger is not None:
            compiled[f"{trigger.namespace}/{trigger.broker}"].append(trigger)

    sources = tuple(source for source in (compile_source(res, brokers, problems, secrets) for res in source_resources)
                    if source is not None)
    kafka = _brokers_kafka(brokers, resources, secrets, problems)
    config_read = kafka.read
    read_entries = {_ignored_entry(r) for r in config_read.values()}
    ignored = [entry for entry in ignored if entry not in read_entries]  # the ConfigMaps read: not ignored
    layouts = {topic: kafka.layouts[res.key] for topic, res in topic_owner.items() if res.key in kafka.layouts}
    for res, topic, layout in sink_layouts:  # every sizing of a topic agrees with the first: its broker's, a sink's
        first = layouts.setdefault(topic, layout)
        differs = layout.differs(first)
        if differs:
            both = "both KafkaSinks" if first.origin.startswith("KafkaSink") else "both"
            problems.append(res.problem(f"spec.{differs}", f"topic {topic!r} is sized {layout.describe()} here and "
                                                           f"{first.describe()} there: give {both} the same sizes"))

    if problems:
        raise ManifestError(problems)
    plans = tuple(
        BrokerPlan(
            namespace=res.namespace, name=res.name, topic=broker_topic(res.namespace, res.name, res.annotations),
            delivery=broker_delivery[key], triggers=tuple(compiled.get(key, ())), source_file=res.file,
        )
        for key, res in brokers.items()
    )
    unused = [note for res in [*brokers.values(), *triggers, *source_resources, *kafka_sink_resources]
              for note in _unused_fields(res, config_read)]
    return Plan(brokers=plans, sources=sources, ignored=tuple(ignored), unused=tuple(unused), kafka_auth=kafka.auth,
                kafka_bootstrap=kafka.bootstrap, topic_layouts=layouts)


def _ignored_entry(res: Resource) -> str:
    """How ``Plan.ignored`` lists a resource: ``file: apiVersion Kind/namespace/name``."""
    return f"{res.file}: {res.api_version} {res.kind}/{res.key}"


def _one_per_job(per_broker: Mapping[str, tuple[Any, str, str]], brokers: Mapping[str, Resource],
                 problems: list[Problem]) -> Any:
    """The value the brokers' ConfigMaps give (None when none does): one job has one Kafka
    connection, so a broker whose value differs from the first's is a problem.
    ``per_broker``: broker key -> (value, how that broker's is shown, how the first's is)."""
    if not per_broker:
        return None
    (first, (value, _, as_first)), *others = per_broker.items()
    for key, (other, as_other, _) in others:
        if other != value:
            problems.append(brokers[key].problem("spec.config", f"{as_other}, Broker {first}{as_first}: one job "
                                                                "has one Kafka connection"))
    return value


class BrokersKafka(NamedTuple):
    """What the brokers' ConfigMaps say of Kafka (see :func:`_brokers_kafka`)."""

    auth: KafkaAuth | None
    bootstrap: str | None
    #: broker key -> its topic's sizes
    layouts: dict[str, TopicLayout]
    #: broker key -> the ConfigMap read
    read: dict[str, Resource]


def _brokers_kafka(brokers: Mapping[str, Resource], resources: list[Resource], secrets: Any,
                   problems: list[Problem]) -> BrokersKafka:
    """Knative's Kafka broker ConfigMaps among the manifests (a Broker's ``spec.config``,
    v1 ConfigMap): how knflow's own Kafka clients log in (``auth.secret.ref.name`` names a
    Secret, in the ConfigMap's namespace, in the format of Knative's Kafka broker), Kafka's
    address (``bootstrap.servers``) and the sizes of each broker's topic
    (``default.topic.partitions``, ``default.topic.replication.factor``). One job has one
    Kafka connection: brokers whose ConfigMaps name different logins or addresses are a
    problem; topic sizes are per broker, as in Knative."""
    config_maps = {(r.namespace, r.name): r for r in resources if r.kind == "ConfigMap" and r.api_version == "v1"}
    logins: dict[str, tuple[KafkaAuth | None, str, str]] = {}
    addresses: dict[str, tuple[str, str, str]] = {}
    read: dict[str, Resource] = {}
    layouts: dict[str, TopicLayout] = {}
    for key, res in brokers.items():
        config = res.spec.get("config")
        if not isinstance(config, Mapping) or config.get("kind", "ConfigMap") != "ConfigMap":
            continue
        name, namespace = config.get("name"), config.get("namespace", res.namespace)
        config_map = config_maps.get((namespace, name))
        if config_map is None:
            continue
        read[key] = config_map
        data = config_map.body.get("data") or {}
        layout = _config_map_layout(config_map, data, _reporter(res, problems))
        if layout is not None:
            layouts[key] = layout
        servers = data.get("bootstrap.servers") if isinstance(data, Mapping) else None
        if isinstance(servers, str) and servers.strip():
            address = ",".join(s.strip() for s in servers.split(",") if s.strip())
            addresses[key] = (address, f"bootstrap.servers {address!r}", f"'s {address!r}")
        secret_name = data.get("auth.secret.ref.name") if isinstance(data, Mapping) else None
        if not secret_name:
            logins[key] = (None, "logs in with no Secret", " with no Secret")
            continue
        report = _reporter(res, problems)
        secret = secrets.get((namespace, secret_name))
        where = f"spec.config: ConfigMap {namespace}/{name}: auth.secret.ref.name: Secret {namespace}/{secret_name}"
        if secret is None:
            report(where, "is not in the manifests: knflow runs outside Kubernetes and reads a Secret from the "
                          "files given, so give its YAML as one of them")
            continue
        values = readable_values(secret, BROKER_SECRET_KEYS, where, report)
        auth = broker_auth(values, where, report) if values is not None else None
        if auth is not None:
            what = f"Secret {namespace}/{secret_name}"
            logins[key] = (auth, f"logs in with {what}", f" with {what}")
    return BrokersKafka(_one_per_job(logins, brokers, problems), _one_per_job(addresses, brokers, problems),
                        layouts, read)


#: The keys of Knative's Kafka broker ConfigMap that knflow reads.
BROKER_CONFIG_KEYS = ("bootstrap.servers", "auth.secret.ref.name", "default.topic.partitions",
                      "default.topic.replication.factor")


def _config_map_layout(config_map: Resource, data: Any, report: Callable[[str, str], None]) -> TopicLayout | None:
    """A broker topic's sizes from its ConfigMap's ``default.topic.partitions`` and
    ``default.topic.replication.factor`` (strings holding positive integers, as
    ConfigMap data is), or None when it gives neither."""
    if not isinstance(data, Mapping):
        return None
    return _topic_layout(data, "default.topic.partitions", "default.topic.replication.factor",
                         f"spec.config: ConfigMap {config_map.key}: ", f"ConfigMap {config_map.key}", report)


def _topic_layout(values: Mapping[str, Any], partitions_key: str, factor_key: str, where: str, origin: str,
                  report: Callable[[str, str], None]) -> TopicLayout | None:
    """A topic's sizes from ``values`` (a ConfigMap's data, a KafkaSink's spec), each checked
    by :func:`_positive_int` and reported as ``where`` + its key; None when neither is given."""
    partitions = _positive_int(values.get(partitions_key), where + partitions_key, report)
    factor = _positive_int(values.get(factor_key), where + factor_key, report, MAX_REPLICATION_FACTOR)
    if partitions is None and factor is None:
        return None
    return TopicLayout(partitions, factor, origin)


#: Kafka's limits: a topic's partition count is an int32, its replication factor an int16.
MAX_PARTITIONS, MAX_REPLICATION_FACTOR = 2**31 - 1, 2**15 - 1


def _positive_int(value: Any, field: str, report: Callable[[str, str], None], limit: int = MAX_PARTITIONS) -> int | None:
    """A topic size given as an integer or a string of ASCII digits, with an optional ``+``
    (ConfigMap data, read as Go's strconv.Atoi reads it), from 1 to ``limit``; None when
    absent; anything else is a problem of ``field``."""
    if value is None:
        return None
    text = str(value).strip().removeprefix("+") if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    if text.isascii() and text.isdigit() and 0 < int(text) <= limit:
        return int(text)
    report(field, f"must be an integer from 1 to {limit}, got {value!r}")
    return None


#: Fields of a Knative destination that knflow accepts (Knative's YAML has them) and does not
#: use, and what that means for the user.
UNUSED_DESTINATION_FIELDS = {
    "audience": "not used: knflow sends no OIDC token, so a sink that requires one refuses the deliveries",
}


#: A Broker's ``spec.config`` (Knative's Kafka broker: a ConfigMap with the bootstrap servers,
#: partitions and replication of its topic, and ``auth.secret.ref.name``).
BROKER_CONFIG_UNUSED = ("not used: the ConfigMap is not in the manifests (give its YAML with them, and knflow reads "
                        "its bootstrap.servers, auth.secret.ref.name and default.topic.* keys); without it Kafka's "
                        "address comes from --bootstrap-servers, the topic's partitions from --partitions, and "
                        "knflow logs in with no Secret")


def _broker_config_partly(unread: list[str]) -> str:
    return (f"read for {', '.join(BROKER_CONFIG_KEYS)} (bootstrap.servers unless --bootstrap-servers is given); "
            f"its other keys are not used: {', '.join(unread)}")


#: A KafkaSource's ``spec.consumers`` (Knative: consumers of the source's group, across its
#: dispatcher replicas).
KAFKA_SOURCE_CONSUMERS_UNUSED = ("not used: the job's --parallelism decides how many consumers read the source's "
                                 "topics (each topic's partitions are spread over them)")


#: A KafkaSink's fields that knflow accepts and does not use: it writes the sink's topic on
#: the job's own Kafka, as it writes its dead letters.
KAFKA_SINK_UNUSED = {
    "bootstrapServers": "not used: knflow writes the KafkaSink's topic on the job's Kafka (--bootstrap-servers)",
    "auth": "not used: knflow writes the topic with the job's own Kafka connection",
}


def _unused_fields(res: Resource, config_read: Mapping[str, Resource]) -> list[str]:
    """``file: Kind/name: field: why`` for each field of ``res``'s spec that knflow accepts and
    does not use: a destination's ``audience``, a Broker's ``config``, a KafkaSource's
    ``consumers`` other than 1, a RocketMQSource's ``serviceAccountName``, a KafkaSink's
    ``bootstrapServers`` and ``auth``."""
    notes: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, Mapping):
            if "uri" in value or "ref" in value:
                notes.extend(str(res.problem(f"{path}.{name}", why))
                             for name, why in UNUSED_DESTINATION_FIELDS.items() if name in value)
            for key, item in value.items():
                walk(item, f"{path}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")

    if res.kind == "Broker" and res.spec.get("config") is not None:
        config_map = config_read.get(res.key)
        if config_map is None:
            notes.append(str(res.problem("spec.config", BROKER_CONFIG_UNUSED)))
        else:
            data = config_map.body.get("data")
            unread = sorted(str(k) for k in data if k not in BROKER_CONFIG_KEYS) if isinstance(data, Mapping) else []
            if unread:
                notes.append(str(res.problem("spec.config", _broker_config_partly(unread))))
    if res.kind == "KafkaSource" and res.spec.get("consumers", 1) != 1:
        notes.append(str(res.problem("spec.consumers", KAFKA_SOURCE_CONSUMERS_UNUSED)))
    if res.kind == "KafkaSink":
        notes.extend(str(res.problem(f"spec.{name}", why)) for name, why in KAFKA_SINK_UNUSED.items()
                     if res.spec.get(name) is not None)
    if res.kind == "RocketMQSource" and res.spec.get("serviceAccountName") is not None:
        notes.append(str(res.problem("spec.serviceAccountName", "not used: knflow runs outside Kubernetes; the "
                                                                "bridge runs as the user who starts it")))
    walk(res.spec, "spec")
    return notes


def _routes_events(res: Resource) -> bool:
    """Whether a resource may route events: a kind of Knative Eventing's groups, or any source."""
    group = res.api_version.rpartition("/")[0]
    return group in EVENTING_GROUPS or res.kind in SOURCE_KINDS or res.kind.endswith("Source")


def _check_version(res: Resource, problems: list[Problem]) -> bool:
    if res.api_version != EVENTING_V1:
        problems.append(res.problem("apiVersion", f"{res.api_version} is not supported; use {EVENTING_V1}"))
        return False
    return True


def _reporter(res: Resource, problems: list[Problem]):
    return lambda field, message: problems.append(res.problem(field, message))


def _unknown_fields(res: Resource, known: tuple[str, ...], problems: list[Problem]) -> None:
    for key in res.spec:
        if key not in known:
            problems.append(res.problem(f"spec.{key}", f"unknown field (known: {', '.join(known)})"))


def _kafka_sink(res: Resource, problems: list[Problem]) -> tuple[str, str] | None:
    """A KafkaSink (usable as a deadLetterSink): (topic, content mode)."""
    if res.api_version != KAFKA_SINK_VERSION:
        problems.append(res.problem("apiVersion", f"{res.api_version} is not supported; use {KAFKA_SINK_VERSION}"))
        return None
    ok = True
    for key in res.spec:
        if key not in ("topic", "bootstrapServers", "contentMode", "numPartitions", "replicationFactor", "auth"):
            problems.append(res.problem(f"spec.{key}", "unknown field (known: topic, bootstrapServers, contentMode, numPartitions, replicationFactor, auth)"))
            ok = False
    topic = res.spec.get("topic")
    if not isinstance(topic, str) or not topic:
        problems.append(res.problem("spec.topic", "is required (the Kafka topic dead letters are written to)"))
        ok = False
    mode = res.spec.get("contentMode", "binary")
    if mode not in ("binary", "structured"):
        problems.append(res.problem("spec.contentMode", f"must be binary or structured, got {mode!r}"))
        ok = False
    return (topic, mode) if ok else None


def _kafka_sink_layout(res: Resource, problems: list[Problem]) -> TopicLayout | None:
    """A KafkaSink's ``numPartitions`` and ``replicationFactor``: how its topic is created
    when missing (None when it gives neither)."""
    return _topic_layout(res.spec, "numPartitions", "replicationFactor", "spec.", f"KafkaSink {res.key}",
                         _reporter(res, problems))


def _resolve_kafka_sink(policy: DeliveryPolicy | None, kafka_sinks: Mapping[str, tuple[str, str]], report) -> DeliveryPolicy | None:
    """A deadLetterSink ref to a KafkaSink becomes that sink's topic."""
    if policy is None or policy.dead_letter_sink is None or policy.dead_letter_sink.ref is None:
        return policy
    ref = policy.dead_letter_sink.ref
    if ref.kind != "KafkaSink":
        return policy
    sink = kafka_sinks.get(ref.key)
    if sink is None:
        known = ", ".join(sorted(kafka_sinks)) or "none"
        report("spec.delivery.deadLetterSink.ref.name", f"KafkaSink {ref.key!r} not found in the manifests (known: {known})")
        return None
    return replace(policy, dead_letter_sink=replace(policy.dead_letter_sink, kafka_topic=sink[0], kafka_content_mode=sink[1]))


def _compile_trigger(res: Resource, brokers: Mapping[str, Resource], broker_delivery: Mapping[str, DeliveryPolicy],
                     kafka_sinks: Mapping[str, tuple[str, str]], problems: list[Problem]) -> TriggerPlan | None:
    start = len(problems)
    report = _reporter(res, problems)
    _unknown_fields(res, TRIGGER_FIELDS, problems)
    spec = res.spec

    broker, broker_field = _trigger_broker(res, report)
    if broker is not None and f"{res.namespace}/{broker}" not in brokers:
        known = sorted(k.split("/", 1)[1] for k in brokers if k.startswith(res.namespace + "/"))
        report(broker_field, f"broker {broker!r} not found in namespace {res.namespace!r} (known: {', '.join(known) or 'none'})")

    subscriber = None
    if spec.get("subscriber") is None:
        report("spec.subscriber", "is required (uri or ref)")
    else:
        try:
            subscriber = parse_destination(spec["subscriber"], "spec.subscriber", res.namespace)
        except DestinationError as exc:
            report(exc.field, str(exc))
        else:
            if subscriber.ref is not None and subscriber.ref.kind == "KafkaSink":
                report("spec.subscriber.ref", "a KafkaSink can only be a deadLetterSink in knflow (subscribers are HTTP)")

    filter_spec, root = _trigger_filter(res, report)

    delivery = None
    broker_res = brokers.get(f"{res.namespace}/{broker}") if broker is not None else None
    if spec.get("delivery") is not None:
        raw = spec["delivery"]
        if isinstance(raw, Mapping) and broker_res is not None and f"{res.namespace}/{broker}" in broker_delivery:
            # Knative's Kafka broker merges the two field by field, the trigger's winning
            # (MergeEgressConfig); the channel-based broker falls back to the broker's dead-letter sink.
            inherited = broker_res.spec.get("delivery") or {}
            raw = {**{k: v for k, v in inherited.items() if v is not None}, **{k: v for k, v in raw.items() if v is not None}}
        delivery = _resolve_kafka_sink(parse_delivery(raw, "spec.delivery", res.namespace, report),
                                       kafka_sinks, report)
    elif broker is not None:
        delivery = broker_delivery.get(f"{res.namespace}/{broker}", DeliveryPolicy())

    ordering = res.annotations.get(DELIVERY_ORDER_ANNOTATION, UNORDERED)
    if ordering not in (ORDERED, UNORDERED):
        report(f"metadata.annotations[{DELIVERY_ORDER_ANNOTATION}]", f"must be {ORDERED} or {UNORDERED}, got {ordering!r}")

    if len(problems) > start:
        return None
    return TriggerPlan(
        namespace=res.namespace, name=res.name, broker=broker, filter=root, filter_spec=filter_spec,
        subscriber=subscriber, delivery=delivery, ordering=ordering, source_file=res.file,
    )


def _trigger_broker(res: Resource, report) -> tuple[str | None, str]:
    """The trigger's broker name and the field naming it: ``spec.broker``, or ``spec.brokerRef``
    (a KReference; Knative takes exactly one of the two). A brokerRef into another namespace
    needs Knative's cross-namespace-event-links feature, which knflow does not implement."""
    name, ref = res.spec.get("broker"), res.spec.get("brokerRef")
    if ref is None:
        if not isinstance(name, str) or not name:
            report("spec.broker", "is required (the name of a Broker in the same namespace, or spec.brokerRef)")
            return None, "spec.broker"
        return name, "spec.broker"
    if name not in (None, ""):
        report("spec.brokerRef", "expected exactly one of spec.broker and spec.brokerRef, got both")
        return None, "spec.brokerRef"
    if not isinstance(ref, Mapping):
        report("spec.brokerRef", f"must be a mapping with name (and kind Broker), got {type(ref).__name__}")
        return None, "spec.brokerRef"
    ok = True
    for key in ref:
        if key not in ("apiVersion", "kind", "name", "namespace", "group"):
            report(f"spec.brokerRef.{key}", "unknown field (known: apiVersion, kind, name, namespace, group)")
            ok = False
    if ref.get("kind", "Broker") != "Broker":
        report("spec.brokerRef.kind", f"must be Broker, got {ref.get('kind')!r}")
        ok = False
    namespace = ref.get("namespace")
    if namespace not in (None, "", res.namespace):
        report("spec.brokerRef.namespace", f"a broker in another namespace ({namespace!r}) needs Knative's "
                                           f"cross-namespace-event-links feature, which knflow does not support; "
                                           f"put the Trigger in namespace {namespace!r}")
        ok = False
    name = ref.get("name")
    if not isinstance(name, str) or not name:
        report("spec.brokerRef.name", "is required (the name of a Broker)")
        ok = False
    return (name if ok else None), "spec.brokerRef.name"


def _trigger_filter(res: Resource, report) -> tuple[dict[str, Any], Any]:
    """Knative precedence: non-empty ``spec.filters`` wins over ``spec.filter.attributes``."""
    legacy = res.spec.get("filter")
    attributes: Any = None
    if legacy is not None:
        if not isinstance(legacy, Mapping):
            report("spec.filter", f"must be a mapping with attributes, got {type(legacy).__name__}")
            return {}, None
        for key in legacy:
            if key != "attributes":
                report(f"spec.filter.{key}", "unknown field (spec.filter holds only attributes; use spec.filters for dialects)")
        attributes = legacy.get("attributes")
        if attributes is not None and not isinstance(attributes, Mapping):
            report("spec.filter.attributes", f"must be a map of attribute to value, got {type(attributes).__name__}")
            return {}, None
    filters = res.spec.get("filters")
    if filters is not None and not isinstance(filters, list):
        report("spec.filters", f"must be a list of filters, got {type(filters).__name__}")
        return {}, None
    if filters:
        # Compile each top-level filter on its own first, so every bad one is reported.
        failed = False
        for position, entry in enumerate(filters):
            try:
                materialize(entry, f"spec.filters[{position}]")
            except FilterSpecError as exc:
                report(exc.path, exc.message)
                failed = True
        if failed:
            return {}, None
    try:
        root = materialize_trigger(attributes, filters)
    except FilterSpecError as exc:
        report(exc.path, exc.message)
        return {}, None
    if filters:
        return {"filters": list(filters)}, root
    return ({"filter": {"attributes": dict(attributes)}} if attributes else {}), root
