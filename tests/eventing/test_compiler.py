"""The manifest compiler: every error kind names file, resource, field; valid input compiles."""
from __future__ import annotations

import pickle
import textwrap

import pytest

from eventing.compiler import compile_plan, load_plan
from eventing.errors import ManifestError
from eventing.manifests import load_documents
from eventing.plan import ORDERED, UNORDERED
from filters.base import EventView

BROKER = """
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: live, namespace: streaming}
spec:
  delivery: {retry: 2, backoffPolicy: linear, backoffDelay: PT0.5S, deadLetterSink: {uri: "http://dls.local/x"}}
"""


def trigger(name: str = "t", **spec_fields) -> str:
    import yaml

    spec = {"broker": "live", "subscriber": {"uri": "http://sub.local/"}}
    spec.update(spec_fields)
    return yaml.safe_dump({"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
                           "metadata": {"name": name, "namespace": "streaming"}, "spec": spec})


def compile_text(*docs: str, file: str = "m.yaml"):
    resources, problems = load_documents("\n---\n".join(textwrap.dedent(d) for d in docs), file)
    return compile_plan(resources, problems)


def problems_of(*docs: str) -> list[str]:
    with pytest.raises(ManifestError) as info:
        compile_text(*docs)
    return [str(p) for p in info.value.problems]


def test_valid_manifests_compile_to_plan():
    plan = compile_text(BROKER, trigger("a", filters=[{"exact": {"type": "x"}}]),
                        trigger("b", delivery={"retry": 7, "timeout": "PT3S"}))
    broker = plan.broker("streaming/live")
    assert broker.topic == "knative-broker-streaming-live"
    assert broker.ingress_path == "/streaming/live"
    a, b = broker.triggers
    assert a.delivery.retry == 2 and a.delivery.backoff_policy == "linear" and a.delivery.backoff_delay == 0.5
    assert a.delivery.dead_letter_sink.url() == "http://dls.local/x"
    # A trigger's delivery fields win; those it leaves out come from the broker's, as Knative's Kafka
    # broker merges them (MergeEgressConfig): the dead-letter sink, the backoff.
    assert b.delivery.retry == 7 and b.delivery.timeout == 3.0
    assert b.delivery.dead_letter_sink.url() == "http://dls.local/x"
    assert b.delivery.backoff_policy == "linear" and b.delivery.backoff_delay == 0.5
    assert a.ordering == UNORDERED
    assert a.filter.filter(EventView({"type": "x"})).delivers
    assert not a.filter.filter(EventView({"type": "y"})).delivers
    assert plan.broker("live") is broker


def test_trigger_delivery_overrides_the_brokers_field_by_field():
    # docs/versioned/eventing/event-delivery.md: a Broker with a dead-letter sink and retries; a Trigger
    # that sets only its timeout still retries and dead-letters like its broker (Knative's Kafka broker
    # merges the trigger's delivery over the broker's; both brokers fall back to the broker's sink).
    plan = compile_text(BROKER, trigger("slow", delivery={"timeout": "PT5S"}),
                        trigger("own", delivery={"deadLetterSink": {"uri": "http://mine.local/"}, "retry": 0}))
    slow, own = plan.broker("streaming/live").triggers
    assert (slow.delivery.timeout, slow.delivery.retry, slow.delivery.backoff_policy, slow.delivery.backoff_delay) == (5.0, 2, "linear", 0.5)
    assert slow.delivery.dead_letter_sink.url() == "http://dls.local/x"
    assert own.delivery.dead_letter_sink.url() == "http://mine.local/" and own.delivery.retry == 0
    # A problem in the broker's delivery is the broker's alone: not reported again on its triggers.
    bad_broker = BROKER.replace("backoffDelay: PT0.5S", "backoffDelay: 2s")
    messages = problems_of(bad_broker, trigger("t", delivery={"timeout": "PT5S"}))
    assert messages == ["m.yaml: Broker/live: spec.delivery.backoffDelay: invalid ISO-8601 duration '2s' "
                        "(expected e.g. PT0.2S, PT1M30S, P1D; years and months are not allowed)"]


def test_broker_ref_names_the_broker_like_spec_broker():
    # Knative's TriggerSpec takes spec.broker or spec.brokerRef (a KReference); a brokerRef in the
    # trigger's own namespace needs no feature flag (test/rekt/resources/trigger/trigger.yaml renders it).
    ref = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "live"}
    plan = compile_text(BROKER, trigger("a", broker=None, brokerRef=ref),
                        trigger("b", broker=None, brokerRef=dict(ref, namespace="streaming")))
    a, b = plan.broker("streaming/live").triggers
    assert (a.broker, b.broker) == ("live", "live")
    assert a.delivery.retry == 2 and a.delivery.dead_letter_sink.url() == "http://dls.local/x"


def test_external_topic_annotation_names_the_brokers_topic():
    # Knative's Kafka broker (docs/versioned/eventing/brokers/broker-types/kafka-broker/README.md):
    # kafka.eventing.knative.dev/external.topic makes the broker use that topic instead of its own.
    import yaml

    doc = yaml.safe_load(BROKER)
    doc["metadata"]["annotations"] = {"eventing.knative.dev/broker.class": "Kafka",
                                      "kafka.eventing.knative.dev/external.topic": "my-topic-name"}
    ping = yaml.safe_dump({"apiVersion": "sources.knative.dev/v1", "kind": "PingSource",
                           "metadata": {"name": "p", "namespace": "streaming"},
                           "spec": {"schedule": "@hourly", "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1",
                                                                            "kind": "Broker", "name": "live"}}}})
    plan = compile_text(yaml.safe_dump(doc), ping)
    assert plan.broker("streaming/live").topic == "my-topic-name"
    assert plan.sources[0].topic == "my-topic-name"
    other = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
             "metadata": {"name": "other", "namespace": "streaming",
                          "annotations": {"kafka.eventing.knative.dev/external.topic": "my-topic-name"}}}
    [message] = problems_of(yaml.safe_dump(doc), yaml.safe_dump(other))
    assert message == ("m.yaml: Broker/other: metadata.annotations[kafka.eventing.knative.dev/external.topic]: "
                       "topic 'my-topic-name' is also Broker streaming/live's; a job reads each topic once")


def test_destination_fields_knflow_does_not_use_are_listed():
    # Knative's Destination has audience; knflow accepts it and says it does not use it
    # (CACerts is used: tests/transforms/test_tls_trust.py)
    plan = compile_text(BROKER, trigger("a", subscriber={"uri": "https://sink.local/", "audience": "x"},
                                        delivery={"deadLetterSink": {"ref": {"kind": "Service", "name": "dls"},
                                                                     "audience": "y"}}))
    notes = dict(n.split(": not used: ") for n in plan.unused)
    assert sorted(notes) == ["m.yaml: Trigger/a: spec.delivery.deadLetterSink.audience",
                             "m.yaml: Trigger/a: spec.subscriber.audience"]
    assert "OIDC" in notes["m.yaml: Trigger/a: spec.subscriber.audience"]
    assert compile_text(BROKER, trigger("b")).unused == ()
    configured = BROKER.replace("spec:\n", "spec:\n  config: {apiVersion: v1, kind: ConfigMap, name: kafka-broker-config, "
                                           "namespace: knative-eventing}\n")
    assert [n.split(": not used")[0] for n in compile_text(configured).unused] == ["m.yaml: Broker/live: spec.config"]


def test_resources_that_route_no_events_are_skipped_and_listed():
    # knative/docs .../sequence-with-broker-trigger/display-trigger.yaml: the subscriber's Knative
    # Service and its Trigger in one file; kubectl applies both. Eventing kinds knflow does not read
    # (a Sequence) still are errors: they would route events.
    ksvc = """
    apiVersion: serving.knative.dev/v1
    kind: Service
    metadata: {name: sequence-display, namespace: streaming}
    spec: {template: {spec: {containers: [{image: gcr.io/knative-releases/knative.dev/eventing/cmd/event_display}]}}}
    """
    deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: event-display}\nspec: {replicas: 1}\n"
    plan = compile_text(BROKER, trigger("a"), ksvc, deployment)
    assert [t.name for t in plan.triggers()] == ["a"]
    assert plan.ignored == ("m.yaml: serving.knative.dev/v1 Service/streaming/sequence-display",
                            "m.yaml: apps/v1 Deployment/default/event-display")
    sequence = "apiVersion: flows.knative.dev/v1\nkind: Sequence\nmetadata: {name: seq}\nspec: {steps: []}\n"
    [message] = problems_of(BROKER, sequence)
    assert message.startswith("m.yaml: Sequence/seq: kind: unsupported kind flows.knative.dev/v1/Sequence")
    [message] = problems_of(BROKER, "apiVersion: eventing.knative.dev/v1\nkind: broker\nmetadata: {name: b}\n")
    assert message.startswith("m.yaml: broker/b: kind: unsupported kind eventing.knative.dev/v1/broker")


def test_kubectl_list_of_resources():
    # `kubectl get broker,trigger -o yaml`: a v1 List whose items carry status, uid, managedFields.
    import yaml

    broker, trig = yaml.safe_load(BROKER), yaml.safe_load(trigger("a"))
    broker["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}
    trig["metadata"].update(uid="8a1b2c3d", resourceVersion="123999", generation=1)
    listing = {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": [broker, trig]}
    plan = compile_text(yaml.safe_dump(listing), "apiVersion: v1\nkind: List\nitems: []\n")
    assert [t.name for t in plan.triggers()] == ["a"]
    [message] = problems_of(BROKER, "apiVersion: v1\nkind: List\nitems: {a: 1}\n")
    assert message == "m.yaml: List/<document 2>: items: must be a list of resources, got dict"


def test_plan_pickles_with_compiled_filters():
    plan = compile_text(BROKER, trigger("a", filters=[{"cel": 'data.n > 2'}]))
    again = pickle.loads(pickle.dumps(plan))
    flt = again.brokers[0].triggers[0].filter
    assert flt.filter(EventView({"type": "x"}, {"n": 3})).delivers
    assert not flt.filter(EventView({"type": "x"}, {"n": 1})).delivers


def test_ordered_annotation():
    import yaml

    doc = yaml.safe_load(trigger("o"))
    doc["metadata"]["annotations"] = {"kafka.eventing.knative.dev/delivery.order": "ordered"}
    plan = compile_text(BROKER, yaml.safe_dump(doc))
    assert plan.brokers[0].triggers[0].ordering == ORDERED
    doc["metadata"]["annotations"] = {"kafka.eventing.knative.dev/delivery.order": "sorted"}
    [msg] = problems_of(BROKER, yaml.safe_dump(doc))
    assert "Trigger/o: metadata.annotations[kafka.eventing.knative.dev/delivery.order]: must be ordered or unordered" in msg


def test_ref_subscriber_resolves_like_knative_and_is_overridable():
    plan = compile_text(BROKER, trigger("r", subscriber={"ref": {"kind": "Service", "name": "svc"}, "uri": "/hook"}))
    dest = plan.brokers[0].triggers[0].subscriber
    assert dest.url() == "http://svc.streaming.svc.cluster.local/hook"
    assert dest.url({"svc": "http://127.0.0.1:9000"}) == "http://127.0.0.1:9000/hook"
    assert dest.url({"streaming/svc": "http://127.0.0.1:9001/"}) == "http://127.0.0.1:9001/hook"


@pytest.mark.parametrize("spec,expected", [
    ({"broker": "missing"}, "m.yaml: Trigger/t: spec.broker: broker 'missing' not found in namespace 'streaming' (known: live)"),
    ({"broker": None, "brokerRef": {"kind": "Broker", "name": "live", "namespace": "other"}},
     "m.yaml: Trigger/t: spec.brokerRef.namespace: a broker in another namespace ('other') needs Knative's cross-namespace-event-links feature"),
    ({"brokerRef": {"name": "live"}}, "m.yaml: Trigger/t: spec.brokerRef: expected exactly one of spec.broker and spec.brokerRef, got both"),
    ({"broker": None, "brokerRef": {"name": "lve"}}, "m.yaml: Trigger/t: spec.brokerRef.name: broker 'lve' not found in namespace 'streaming' (known: live)"),
    ({"broker": None, "brokerRef": {"kind": "Channel", "name": "live"}}, "m.yaml: Trigger/t: spec.brokerRef.kind: must be Broker, got 'Channel'"),
    ({"subscriber": {"uri": "/relative"}}, "m.yaml: Trigger/t: spec.subscriber.uri: must be an absolute http(s) URI, got '/relative'"),
    ({"subscriber": {}}, "m.yaml: Trigger/t: spec.subscriber: needs a uri or a ref"),
    ({"subscriber": {"ref": {"name": "x"}}}, "m.yaml: Trigger/t: spec.subscriber.ref.kind: is required"),
    ({"delivery": {"retry": -1}}, "m.yaml: Trigger/t: spec.delivery.retry: must not be negative, got -1"),
    ({"delivery": {"retry": "3"}}, "m.yaml: Trigger/t: spec.delivery.retry: must be an integer, got '3'"),
    ({"delivery": {"backoffDelay": "2s"}}, "m.yaml: Trigger/t: spec.delivery.backoffDelay: invalid ISO-8601 duration '2s'"),
    ({"delivery": {"timeout": "PT0S"}}, "m.yaml: Trigger/t: spec.delivery.timeout: must be greater than zero"),
    ({"delivery": {"backoffPolicy": "random"}}, "m.yaml: Trigger/t: spec.delivery.backoffPolicy: must be linear or exponential"),
    ({"delivery": {"retrys": 3}}, "m.yaml: Trigger/t: spec.delivery.retrys: unknown field"),
    ({"delivery": {"deadLetterSink": {"uri": "ftp://x"}}}, "m.yaml: Trigger/t: spec.delivery.deadLetterSink.uri: must be an absolute http(s) URI"),
    ({"filters": [{"cel": "data.x >"}]}, "m.yaml: Trigger/t: spec.filters[0].cel: invalid CEL expression at line 1, column"),
    ({"filters": [{"cel": "1.e3 > 0"}]}, "m.yaml: Trigger/t: spec.filters[0].cel: a part of it is an error for every event "
     "(type 'int' does not support field selection (.e3))"),
    ({"filters": [{"cel": 'type == "a" || size(1) > 0'}]}, "m.yaml: Trigger/t: spec.filters[0].cel: a part of it is an error "
     "for every event (no matching overload for 'size' applied to (int))"),
    ({"filters": [{"cel": 'time > timestamp("yesterday")'}]}, "m.yaml: Trigger/t: spec.filters[0].cel: a part of it is an "
     "error for every event (cannot parse timestamp 'yesterday'"),
    ({"filters": [{"cel": "1 + 1"}]}, "m.yaml: Trigger/t: spec.filters[0].cel: evaluates to int 2 for every event, not to a bool"),
    ({"filters": [{"cel": "null"}]}, "m.yaml: Trigger/t: spec.filters[0].cel: evaluates to null for every event, not to a bool"),
    ({"filters": [{"exact": {"type": "a"}, "prefix": {"type": "b"}}]}, "m.yaml: Trigger/t: spec.filters[0]: multiple dialects found"),
    ({"filters": [{"any": [{"exact": {"Type": "a"}}]}]}, "m.yaml: Trigger/t: spec.filters[0].any[0].exact: invalid attribute name 'Type'"),
    ({"filters": {"exact": {}}}, "m.yaml: Trigger/t: spec.filters: must be a list of filters"),
    ({"filter": {"attributes": {"type": 1}}}, "m.yaml: Trigger/t: spec.filter.attributes.type: value must be a string"),
    ({"filter": {"cesql": "x"}}, "m.yaml: Trigger/t: spec.filter.cesql: unknown field"),
    ({"filers": []}, "m.yaml: Trigger/t: spec.filers: unknown field"),
])
def test_each_error_kind_names_file_resource_and_field(spec, expected):
    messages = problems_of(BROKER, trigger("t", **spec))
    assert any(m.startswith(expected) for m in messages), messages


@pytest.mark.parametrize("expression", ["true", "false", "false && 1/0 == 1", 'type == "a" && data.n / 0 == 1', "1.0e3 > 0"])
def test_cel_filters_that_depend_on_the_event_or_are_a_bool_load(expression):
    # constant booleans are allowed; an error that depends on the event (data.n / 0) is the
    # event's failure, counted at run time, not a problem of the manifest
    plan = compile_text(BROKER, trigger("t", filters=[{"cel": expression}]))
    assert [t.name for t in plan.brokers[0].triggers] == ["t"]


def test_all_problems_are_reported_at_once():
    messages = problems_of(BROKER, trigger("a", broker="nope"), trigger("b", delivery={"retry": -2}),
                           trigger("c", filters=[{"cel": "1 +"}, {"cel": "2 +"}]))
    assert len(messages) == 4, messages
    assert sum("spec.filters[" in m for m in messages) == 2


def test_duplicate_names_and_missing_metadata():
    messages = problems_of(BROKER, BROKER, trigger("a"), trigger("a"))
    assert any("Broker/live: metadata.name: duplicate Broker 'streaming/live'" in m for m in messages)
    assert any("Trigger/a: metadata.name: duplicate Trigger 'streaming/a'" in m for m in messages)
    messages = problems_of("apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {}\n")
    assert messages == ["m.yaml: Trigger/<document 1>: metadata.name: is required"]


def test_unknown_kinds_and_versions():
    msgs = problems_of(BROKER, "apiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {name: c}\n")
    assert msgs == ["m.yaml: Subscription/c: kind: unsupported kind messaging.knative.dev/v1/Subscription; knflow reads eventing.knative.dev/v1 Broker and Trigger, eventing.knative.dev/v1alpha1 KafkaSink as a dead-letter sink, and the sources KafkaSource, PingSource, RocketMQSource"]
    msgs = problems_of("apiVersion: eventing.knative.dev/v1beta1\nkind: Broker\nmetadata: {name: b}\n")
    assert msgs == ["m.yaml: Broker/b: apiVersion: eventing.knative.dev/v1beta1 is not supported; use eventing.knative.dev/v1"]
    msgs = problems_of(BROKER, "apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {name: p}\n")
    assert msgs == ["m.yaml: PingSource/p: spec.sink: is required (a Broker ref, a service ref or a uri)",
                    "m.yaml: PingSource/p: spec.schedule: is required (a cron schedule such as '*/5 * * * *' or '@hourly')"]


def test_yaml_syntax_error_names_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: x\nkind: [unclosed\n")
    with pytest.raises(ManifestError) as info:
        load_plan([bad])
    assert str(info.value.problems[0]).startswith(f"{bad}: invalid YAML: line 3, column 1")


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ManifestError) as info:
        load_plan([tmp_path / "nope.yaml"])
    assert "nope.yaml: cannot read: No such file or directory" in str(info.value)


def test_example_manifests_are_valid():
    from pathlib import Path

    plan = load_plan([Path(__file__).resolve().parents[2] / "examples" / "live-stream"])
    assert [t.name for t in plan.triggers()] == [
        "moderation", "gift-leaderboard", "analytics", "presence", "vip-alerts", "notify-moderators"]


KAFKA_SINK = """
apiVersion: eventing.knative.dev/v1alpha1
kind: KafkaSink
metadata: {name: dlq, namespace: streaming}
spec: {topic: live-dead-letters, bootstrapServers: ["127.0.0.1:9092"], contentMode: structured}
"""


def test_kafka_sink_as_dead_letter_sink():
    plan = compile_text(BROKER, KAFKA_SINK, trigger(
        "t", delivery={"retry": 1, "deadLetterSink": {"ref": {"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "KafkaSink", "name": "dlq"}}}))
    sink = plan.brokers[0].triggers[0].delivery.dead_letter_sink
    assert (sink.kafka_topic, sink.kafka_content_mode) == ("live-dead-letters", "structured")
    assert plan.kafka_sink_topics() == ("live-dead-letters",)
    with pytest.raises(ValueError, match="is a Kafka topic"):
        sink.url()
    # Knative's KafkaSink names its own Kafka; knflow writes the topic on the job's: said, not hidden
    assert plan.unused == ("m.yaml: KafkaSink/dlq: spec.bootstrapServers: not used: knflow writes the KafkaSink's "
                           "topic on the job's Kafka (--bootstrap-servers)",)


def test_a_kafka_sinks_sizes_are_how_its_topic_is_created():
    from eventing.plan import TopicLayout

    sized = KAFKA_SINK.replace("contentMode: structured}", "contentMode: structured, numPartitions: 6, replicationFactor: 1}")
    plan = compile_text(BROKER, sized)
    assert plan.topic_layouts == {"live-dead-letters": TopicLayout(6, 1, "KafkaSink streaming/dlq")}
    assert [n for n in plan.unused if "numPartitions" in n or "replicationFactor" in n] == []
    # two KafkaSinks writing one topic must agree on its sizes
    other = sized.replace("name: dlq", "name: dlq2").replace("numPartitions: 6", "numPartitions: 3")
    assert problems_of(BROKER, sized, other) == [
        "m.yaml: KafkaSink/dlq2: spec.numPartitions: topic 'live-dead-letters' is sized 3 partitions, replication "
        "factor 1 (KafkaSink streaming/dlq2) here and 6 partitions, replication factor 1 (KafkaSink streaming/dlq) "
        "there: give both KafkaSinks the same sizes"]
    assert problems_of(BROKER, KAFKA_SINK.replace("contentMode: structured}", "contentMode: structured, numPartitions: 0}")) == [
        "m.yaml: KafkaSink/dlq: spec.numPartitions: must be an integer from 1 to 2147483647, got 0"]
    # only the replication factor differs: that field is named
    other_rf = sized.replace("name: dlq", "name: dlq2").replace("replicationFactor: 1", "replicationFactor: 2")
    assert [p.split(": ")[2] for p in problems_of(BROKER, sized, other_rf)] == ["spec.replicationFactor"]


def test_kafka_sink_errors():
    missing = problems_of(BROKER, trigger("t", delivery={"deadLetterSink": {"ref": {"kind": "KafkaSink", "name": "nope"}}}))
    assert missing == ["m.yaml: Trigger/t: spec.delivery.deadLetterSink.ref.name: KafkaSink 'streaming/nope' not found in the manifests (known: none)"]
    as_subscriber = problems_of(BROKER, KAFKA_SINK, trigger("t", subscriber={"ref": {"kind": "KafkaSink", "name": "dlq"}}))
    assert as_subscriber == ["m.yaml: Trigger/t: spec.subscriber.ref: a KafkaSink can only be a deadLetterSink in knflow (subscribers are HTTP)"]
    no_topic = problems_of(BROKER, "apiVersion: eventing.knative.dev/v1alpha1\nkind: KafkaSink\nmetadata: {name: k, namespace: streaming}\nspec: {}\n")
    assert no_topic == ["m.yaml: KafkaSink/k: spec.topic: is required (the Kafka topic dead letters are written to)"]


def test_load_plan_takes_one_path_as_itself(tmp_path):
    """A str is one path, not an iterable of one-letter file names."""
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "live-stream"
    assert [t.name for t in load_plan(str(example)).triggers()] == [t.name for t in load_plan([example]).triggers()]
    with pytest.raises(ManifestError, match="nope.yaml"):
        load_plan(str(tmp_path / "nope.yaml"))
