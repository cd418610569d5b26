"""The Plan: the one typed contract between the manifest compiler and the data planes.

Like eventing-kafka-broker's ``contract.proto``: everything an engine needs to run the
brokers, and nothing about YAML. Immutable; filters are compiled trees that pickle as
their specs, so a Plan ships to Beam or Flink workers as it is.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Mapping

from filters.base import Filter
from transforms.tls_trust import certificates
from eventing.kafka_auth import KafkaAuth

UNORDERED = "unordered"
ORDERED = "ordered"
#: The Knative Kafka broker annotation that selects a trigger's delivery order.
DELIVERY_ORDER_ANNOTATION = "kafka.eventing.knative.dev/delivery.order"


@dataclass(frozen=True)
class Ref:
    """A Kubernetes object reference (an addressable: Service, Sink, Broker...)."""

    kind: str
    name: str
    namespace: str
    api_version: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Destination:
    """Where events go: a resolved ``uri``, a ``ref`` (resolved per run), or both.

    With both, Knative semantics: the ref's address plus ``uri`` as a relative path.
    """

    uri: str | None = None
    ref: Ref | None = None
    #: set when the ref is a KafkaSink: events go to this Kafka topic instead of HTTP.
    kafka_topic: str | None = None
    kafka_content_mode: str = "binary"
    #: Knative's ``CACerts``: PEM CA certificates trusted, besides the system's, for this
    #: destination's https address (``transforms.tls_trust``).
    ca_certs: str | None = None

    def url(self, ref_urls: Mapping[str, str] | None = None) -> str:
        """The URL to POST to; ``ref_urls`` maps ``name`` or ``namespace/name`` to a URL."""
        if self.kafka_topic is not None:
            raise ValueError(f"{self.describe()} is a Kafka topic, not an HTTP address")
        if self.ref is None:
            assert self.uri is not None
            return self.uri
        ref_urls = ref_urls or {}
        base = ref_urls.get(self.ref.key) or ref_urls.get(self.ref.name)
        if base is None:
            base = f"http://{self.ref.name}.{self.ref.namespace}.svc.cluster.local"
        if self.uri:
            return base.rstrip("/") + "/" + self.uri.lstrip("/")
        return base

    def describe(self) -> str:
        if self.ref is None:
            return self.uri or ""
        text = f"{self.ref.kind}/{self.ref.key}"
        if self.kafka_topic is not None:
            return f"{text} (Kafka topic {self.kafka_topic})"
        return text + (f" + {self.uri}" if self.uri else "")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.uri is not None:
            out["uri"] = self.uri
        if self.ref is not None:
            out["ref"] = {"kind": self.ref.kind, "name": self.ref.name, "namespace": self.ref.namespace}
            if self.ref.api_version:
                out["ref"]["apiVersion"] = self.ref.api_version
        if self.kafka_topic is not None:
            out["kafkaTopic"] = self.kafka_topic
            out["contentMode"] = self.kafka_content_mode
        if self.ca_certs is not None:
            count = len(certificates(self.ca_certs))
            out["CACerts"] = f"{count} PEM certificate{'s' if count != 1 else ''}"
        return out


@dataclass(frozen=True)
class DeliveryPolicy:
    """Knative ``DeliverySpec`` plus our extensions; durations are seconds.

    Defaults follow Knative: no retries unless asked; exponential backoff of 0.2 s when
    retrying. ``timeout`` None means the job option ``--delivery-timeout`` applies.
    """

    retry: int = 0
    backoff_policy: str = "exponential"
    backoff_delay: float = 0.2
    backoff_max: float | None = None  # extension: cap on one backoff interval
    timeout: float | None = None
    retry_after_max: float | None = None
    max_retry_duration: float | None = None  # extension: cap on total time in retries
    dead_letter_sink: Destination | None = None
    format: str | None = None  # "binary" | "json" (structured); None = binary

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "retry": self.retry,
            "backoffPolicy": self.backoff_policy,
            "backoffDelaySeconds": self.backoff_delay,
        }
        for key, value in (
            ("backoffMaxSeconds", self.backoff_max),
            ("timeoutSeconds", self.timeout),
            ("retryAfterMaxSeconds", self.retry_after_max),
            ("maxRetryDurationSeconds", self.max_retry_duration),
            ("format", self.format),
        ):
            if value is not None:
                out[key] = value
        if self.dead_letter_sink is not None:
            out["deadLetterSink"] = self.dead_letter_sink.to_dict()
        return out


@dataclass(frozen=True)
class TriggerPlan:
    namespace: str
    name: str
    broker: str
    filter: Filter
    filter_spec: Mapping[str, Any]
    subscriber: Destination
    delivery: DeliveryPolicy
    ordering: str = UNORDERED
    source_file: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "filter": dict(self.filter_spec),
            "subscriber": self.subscriber.to_dict(),
            "delivery": self.delivery.to_dict(),
            "ordering": self.ordering,
        }


@dataclass(frozen=True)
class TopicLayout:
    """How knflow creates one topic when it is missing, as the manifests size it: a
    Broker's ConfigMap (``default.topic.partitions``, ``default.topic.replication.factor``)
    or a KafkaSink (``numPartitions``, ``replicationFactor``). None: the command's default
    (``--partitions``; replication factor 1). ``origin`` names where the sizes come from,
    for errors (``ConfigMap knative-eventing/kafka-broker-config``). Existing topics are
    left as they are, as Knative leaves them."""

    partitions: int | None
    replication_factor: int | None
    origin: str

    def describe(self) -> str:
        sizes = [f"{self.partitions} partitions" if self.partitions else "",
                 f"replication factor {self.replication_factor}" if self.replication_factor else ""]
        return f"{', '.join(s for s in sizes if s)} ({self.origin})"

    def differs(self, other: "TopicLayout") -> str | None:
        """The field (KafkaSink spelling) whose size differs from ``other``'s, or None."""
        if self.partitions != other.partitions:
            return "numPartitions"
        if self.replication_factor != other.replication_factor:
            return "replicationFactor"
        return None


@dataclass(frozen=True)
class BrokerPlan:
    namespace: str
    name: str
    topic: str
    delivery: DeliveryPolicy
    triggers: tuple[TriggerPlan, ...] = ()
    source_file: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def ingress_path(self) -> str:
        return f"/{self.namespace}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "topic": self.topic,
            "ingressPath": self.ingress_path,
            "delivery": self.delivery.to_dict(),
            "triggers": [t.to_dict() for t in self.triggers],
        }


KAFKA_SOURCE = "KafkaSource"
ROCKETMQ_SOURCE = "RocketMQSource"
PING_SOURCE = "PingSource"


@dataclass(frozen=True, kw_only=True)
class SourcePlan:
    """An event source: where its events come from and where they flow.

    A source whose sink is a Broker ref feeds that broker: ``broker`` is the broker's
    ``namespace/name`` and ``topic`` its Kafka topic, and its events enter where the broker
    topic enters. Otherwise ``broker`` is None and the events go straight to ``sink`` (a
    service ref or a uri) with ``delivery``, through the same delivery engine.
    """

    kind: str
    namespace: str
    name: str
    sink: Destination
    delivery: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    broker: str | None = None
    topic: str | None = None
    #: ``spec.ceOverrides.extensions``: set on every event the source emits.
    ce_overrides: Mapping[str, str] = field(default_factory=dict)
    source_file: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def flows_to(self) -> str:
        if self.broker is not None:
            return f"Broker/{self.broker} (topic {self.topic})"
        return self.sink.describe()

    def reads(self) -> str:
        """What the source reads, in one line (for ``knflow plan``)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "name": self.name, "namespace": self.namespace,
                               "sink": self.sink.to_dict()}
        if self.broker is not None:
            out["broker"] = self.broker
            out["topic"] = self.topic
        else:
            out["delivery"] = self.delivery.to_dict()
        if self.ce_overrides:
            out["ceOverrides"] = {"extensions": dict(self.ce_overrides)}
        return out


@dataclass(frozen=True, kw_only=True)
class KafkaSourcePlan(SourcePlan):
    """``sources.knative.dev/v1`` (or v1beta1) KafkaSource, with Knative's defaults applied."""

    bootstrap_servers: tuple[str, ...]
    topics: tuple[str, ...]
    consumer_group: str
    initial_offset: str = "latest"
    consumers: int = 1
    ordering: str = ORDERED
    #: the ``kafkasources.sources.knative.dev/key-type`` label: string | int | float | byte-array
    key_type: str = "string"
    #: ``spec.net``: SASL and/or TLS (``eventing.kafka_auth``), None for plaintext
    auth: KafkaAuth | None = None

    def reads(self) -> str:
        net = f", {self.auth.describe()}" if self.auth is not None else ""
        return (f"Kafka topics {', '.join(self.topics)} at {','.join(self.bootstrap_servers)} "
                f"(group {self.consumer_group}, initialOffset {self.initial_offset}, key-type {self.key_type}{net})")

    def kafka_properties(self, relocated: str = "") -> dict[str, str]:
        """The Java consumer's security properties (empty for plaintext); ``relocated``:
        see ``KafkaAuth.java_properties``."""
        return self.auth.java_properties(relocated) if self.auth is not None else {}

    def librdkafka_config(self) -> dict[str, str]:
        """The same for librdkafka (confluent-kafka)."""
        return self.auth.librdkafka_config() if self.auth is not None else {}

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.update({"bootstrapServers": list(self.bootstrap_servers), "topics": list(self.topics),
                    "consumerGroup": self.consumer_group, "initialOffset": self.initial_offset,
                    "consumers": self.consumers, "ordering": self.ordering, "keyType": self.key_type})
        if self.auth is not None:
            out["net"] = self.auth.describe()
        return out


@dataclass(frozen=True, kw_only=True)
class RocketMQSourcePlan(SourcePlan):
    """The community Knative RocketMQSource (``rocketmq-knative``), plus ``selectorExpression``
    and ``initialOffset``."""

    topic_name: str
    namesrv_addr: tuple[str, ...]
    group_name: str
    #: RocketMQ tag expression: ``*`` (every tag) or ``TagA || TagB``
    selector_expression: str = "*"
    initial_offset: str = "latest"
    #: ``spec.accessToken.secretKeyRef`` as (secret name, key), if set
    access_token: tuple[str, str] | None = None

    @property
    def kafka_topic(self) -> str:
        """The Kafka topic the bridge (``knflow rocketmq-bridge``) writes this source's events
        to: its broker's topic, or, for a service or uri sink, the internal topic
        ``knflow-rocketmq-<ns>-<name>`` that the job reads as a direct source."""
        if self.broker is not None and self.topic is not None:
            return self.topic
        return rocketmq_topic(self.namespace, self.name)

    def flows_to(self) -> str:
        if self.broker is not None:
            return super().flows_to()
        return f"Kafka topic {self.kafka_topic}, then {self.sink.describe()}"

    def reads(self) -> str:
        return (f"RocketMQ topic {self.topic_name} tags {self.selector_expression!r} at {';'.join(self.namesrv_addr)} "
                f"(group {self.group_name}, initialOffset {self.initial_offset})")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.update({"rocketmqTopic": self.topic_name, "namesrvAddr": list(self.namesrv_addr),
                    "groupName": self.group_name, "selectorExpression": self.selector_expression,
                    "initialOffset": self.initial_offset})
        if self.broker is None:
            out["kafkaTopic"] = self.kafka_topic
        if self.access_token is not None:
            out["accessToken"] = {"secretKeyRef": {"name": self.access_token[0], "key": self.access_token[1]}}
        return out


@dataclass(frozen=True, kw_only=True)
class PingSourcePlan(SourcePlan):
    """``sources.knative.dev/v1`` PingSource. ``data`` is the event's data as Knative sets it:
    the parsed JSON object for ``contentType: application/json``, else bytes (``dataBase64``
    decoded), or None."""

    schedule: str
    timezone: str | None = None
    content_type: str | None = None
    data: Any = None

    @property
    def tick_topic(self) -> str:
        """The pseudo topic the job's ticks of this source carry (``knflow-ping/<ns>/<name>``):
        no Kafka topic has a slash, so it meets no real one. A tick enters the job as a
        record of this topic, partition 0, offset and timestamp the tick's epoch ms."""
        return f"knflow-ping/{self.namespace}/{self.name}"

    def reads(self) -> str:
        return f"schedule {self.schedule!r}" + (f" in {self.timezone}" if self.timezone else " (UTC)")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["schedule"] = self.schedule
        for key, value in (("timezone", self.timezone), ("contentType", self.content_type)):
            if value is not None:
                out[key] = value
        if isinstance(self.data, bytes):
            out["dataBase64"] = base64.b64encode(self.data).decode("ascii")
        elif self.data is not None:
            out["data"] = self.data
        return out


def direct_name(source: SourcePlan) -> str:
    """The name of the broker and trigger a source with a direct sink is delivered as
    (``Plan.direct_sources``); no Knative name has a colon, so it meets no trigger's."""
    return f"{source.kind}:{source.name}"


@dataclass(frozen=True)
class Plan:
    brokers: tuple[BrokerPlan, ...] = ()
    sources: tuple[SourcePlan, ...] = ()
    #: resources of the manifests that route no events (a Knative Service, a Deployment, ...),
    #: as ``file: apiVersion Kind/namespace/name``; skipped, listed by ``knflow validate`` and ``plan``.
    ignored: tuple[str, ...] = ()
    #: How knflow's own Kafka clients (the ingress, the job's broker topics, topic creation)
    #: log in: the Secret named by the brokers' ConfigMap (``auth.secret.ref.name``), None
    #: for plaintext.
    kafka_auth: KafkaAuth | None = None
    #: Kafka's address from the brokers' ConfigMap (``bootstrap.servers``), if it is given:
    #: what the commands use when ``--bootstrap-servers`` is not given
    kafka_bootstrap: str | None = None
    #: topic -> how to create it when missing, for the topics the manifests size (broker
    #: topics from their ConfigMap, KafkaSink topics); others get the command's defaults
    topic_layouts: Mapping[str, TopicLayout] = field(default_factory=dict, hash=False)
    #: fields Knative reads that knflow accepts and does not use (a destination's
    #: ``audience``, a Broker's ``spec.config``), as ``file: Kind/name: field: why``; listed by ``validate`` and ``plan``.
    unused: tuple[str, ...] = ()

    def broker(self, key: str) -> BrokerPlan:
        """Look a broker up by ``namespace/name`` or by bare name when unambiguous."""
        matches = [b for b in self.brokers if b.key == key or ("/" not in key and b.name == key)]
        if len(matches) != 1:
            known = ", ".join(b.key for b in self.brokers) or "none"
            what = "ambiguous" if matches else "unknown"
            raise KeyError(f"{what} broker {key!r} (known: {known})")
        return matches[0]

    def triggers(self) -> tuple[TriggerPlan, ...]:
        return tuple(t for b in self.brokers for t in b.triggers)

    def direct_sources(self) -> tuple[BrokerPlan, ...]:
        """Each source whose sink is not a Broker, as a broker of one trigger named
        ``<Kind>:<name>``: no filter, the source's sink, delivery and ordering (how Knative's
        sources dispatch to their sink; a PingSource or RocketMQSource has no ``delivery``
        in its CRD, so it gets the defaults, and is unordered). Its topic is empty: the job
        reads the source's own topics (a KafkaSource's, a RocketMQSource's internal topic
        that the bridge writes) or its ticks, and writes no replies for it (a source has no
        reply path)."""
        from filters.materialize import materialize_trigger

        out = []
        for source in self.sources:
            if source.kind not in (KAFKA_SOURCE, PING_SOURCE, ROCKETMQ_SOURCE) or source.broker is not None:
                continue
            name = direct_name(source)
            trigger = TriggerPlan(source.namespace, name, "", materialize_trigger(None, None), {}, source.sink,
                                  source.delivery, getattr(source, "ordering", UNORDERED), source.source_file)
            out.append(BrokerPlan(source.namespace, name, "", source.delivery, (trigger,), source.source_file))
        return tuple(out)

    def delivery_triggers(self) -> tuple[TriggerPlan, ...]:
        """Every destination the job delivers to: the brokers' triggers and the direct sources'."""
        return self.triggers() + tuple(t for b in self.direct_sources() for t in b.triggers)

    def kafka_sink_topics(self) -> tuple[str, ...]:
        """Topics of the KafkaSinks that triggers dead-letter into."""
        topics = {t.delivery.dead_letter_sink.kafka_topic for t in self.triggers()
                  if t.delivery.dead_letter_sink is not None and t.delivery.dead_letter_sink.kafka_topic}
        return tuple(sorted(topics))

    def rocketmq_topics(self) -> tuple[str, ...]:
        """The internal Kafka topics of the RocketMQSources with a service or uri sink: the
        bridge writes them, the job reads them with its own consumer group."""
        return tuple(sorted({s.kafka_topic for s in self.sources
                             if isinstance(s, RocketMQSourcePlan) and s.broker is None}))

    def sources_of(self, broker_key: str) -> tuple[SourcePlan, ...]:
        """The sources feeding one broker (``namespace/name``)."""
        return tuple(s for s in self.sources if s.broker == broker_key)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"brokers": [b.to_dict() for b in self.brokers],
                               "sources": [s.to_dict() for s in self.sources]}
        if self.kafka_auth is not None:
            out["kafka"] = self.kafka_auth.describe()
        if self.topic_layouts:
            out["topicLayouts"] = {topic: {"partitions": layout.partitions, "replicationFactor": layout.replication_factor,
                                           "from": layout.origin}
                                   for topic, layout in sorted(self.topic_layouts.items())}
        return out

    def kafka_properties(self, relocated: str = "") -> dict[str, str]:
        """The Java clients' security properties for the broker topics (empty: plaintext)."""
        return self.kafka_auth.java_properties(relocated) if self.kafka_auth is not None else {}

    def librdkafka_config(self) -> dict[str, str]:
        """The same for librdkafka (the ingress, the RocketMQ bridge)."""
        return self.kafka_auth.librdkafka_config() if self.kafka_auth is not None else {}

    def kafka_python_config(self) -> dict[str, Any]:
        """The same for kafka-python (topic creation, the outcome reader)."""
        return self.kafka_auth.kafka_python_config() if self.kafka_auth is not None else {}


#: Knative's Kafka broker: the broker uses this existing topic instead of its own.
EXTERNAL_TOPIC_ANNOTATION = "kafka.eventing.knative.dev/external.topic"


def broker_topic(namespace: str, name: str, annotations: Mapping[str, Any] | None = None) -> str:
    """The Kafka topic of a broker, named as Knative's Kafka broker names it: the topic of its
    ``kafka.eventing.knative.dev/external.topic`` annotation, else ``knative-broker-<ns>-<name>``."""
    external = (annotations or {}).get(EXTERNAL_TOPIC_ANNOTATION)
    if isinstance(external, str) and external:
        return external
    return f"knative-broker-{namespace}-{name}"


def rocketmq_topic(namespace: str, name: str) -> str:
    """The internal Kafka topic of a RocketMQSource with a service or uri sink."""
    return f"knflow-rocketmq-{namespace}-{name}"
