"""The Plan: the one typed contract between the manifest compiler and the data planes.

Like eventing-kafka-broker's ``contract.proto``: everything an engine needs to run the
brokers, and nothing about YAML. Immutable; filters are compiled trees that pickle as
their specs, so a Plan ships to Beam or Flink workers as it is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from filters.base import Filter

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


@dataclass(frozen=True)
class SourcePlan:
    """An event source (KafkaSource, PingSource, RocketMQSource) feeding a broker."""

    kind: str
    namespace: str
    name: str
    sink: Destination
    spec: Mapping[str, Any] = field(default_factory=dict)
    source_file: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "namespace": self.namespace,
                "sink": self.sink.to_dict(), "spec": dict(self.spec)}


@dataclass(frozen=True)
class Plan:
    brokers: tuple[BrokerPlan, ...] = ()
    sources: tuple[SourcePlan, ...] = ()

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

    def kafka_sink_topics(self) -> tuple[str, ...]:
        """Topics of the KafkaSinks that triggers dead-letter into."""
        topics = {t.delivery.dead_letter_sink.kafka_topic for t in self.triggers()
                  if t.delivery.dead_letter_sink is not None and t.delivery.dead_letter_sink.kafka_topic}
        return tuple(sorted(topics))

    def to_dict(self) -> dict[str, Any]:
        return {"brokers": [b.to_dict() for b in self.brokers],
                "sources": [s.to_dict() for s in self.sources]}


def broker_topic(namespace: str, name: str) -> str:
    """The Kafka topic of a broker, named as Knative's Kafka broker names it."""
    return f"knative-broker-{namespace}-{name}"
