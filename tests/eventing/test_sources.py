"""Source manifests: KafkaSource, PingSource, RocketMQSource load, validate and compile to typed plans."""
from __future__ import annotations

import json
import pickle
import textwrap

import pytest
import yaml

from eventing.compiler import runs_in_job, compile_plan, load_plan
from eventing.errors import ManifestError
from eventing.manifests import load_documents
from eventing.plan import KafkaSourcePlan, PingSourcePlan, RocketMQSourcePlan
from pipelines.cli import main

BROKER = """
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: live, namespace: streaming}
"""
BROKER_SINK = {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "live"}}


def source(kind: str, spec: dict, *, name: str = "s", api: str | None = None, labels: dict | None = None) -> str:
    api = api or ("sources.eventing.knative.dev/v1alpha1" if kind == "RocketMQSource" else "sources.knative.dev/v1")
    metadata = {"name": name, "namespace": "streaming"}
    if labels:
        metadata["labels"] = labels
    return yaml.safe_dump({"apiVersion": api, "kind": kind, "metadata": metadata, "spec": spec})


def kafka(**spec) -> dict:
    out = {"bootstrapServers": ["127.0.0.1:9092"], "topics": ["in"], "sink": BROKER_SINK}
    out.update(spec)
    return out


def ping(**spec) -> dict:
    out = {"schedule": "*/5 * * * *", "sink": {"uri": "http://consumer.local/"}}
    out.update(spec)
    return out


def rocketmq(**spec) -> dict:
    out = {"topic": "gifts", "namesrvAddr": "127.0.0.1:9876", "sink": BROKER_SINK}
    out.update(spec)
    return out


def compile_text(*docs: str):
    resources, problems = load_documents("\n---\n".join(textwrap.dedent(d) for d in docs), "m.yaml")
    return compile_plan(resources, problems)


def problems_of(*docs: str) -> list[str]:
    with pytest.raises(ManifestError) as info:
        compile_text(*docs)
    return [str(p) for p in info.value.problems]


def test_kafka_source_defaults_follow_knative():
    plan = compile_text(BROKER, source("KafkaSource", kafka()))
    [src] = plan.sources
    assert isinstance(src, KafkaSourcePlan)
    assert (src.initial_offset, src.ordering, src.consumers, src.key_type) == ("latest", "ordered", 1, "string")
    assert src.consumer_group == "knative-kafka-source-streaming-s"
    assert src.broker == "streaming/live" and src.topic == "knative-broker-streaming-live"
    assert plan.sources_of("streaming/live") == (src,)


def test_kafka_source_all_fields_both_versions():
    for api in ("sources.knative.dev/v1", "sources.knative.dev/v1beta1"):
        spec = kafka(bootstrapServers=["a:9092,b:9092", "c:9092"], topics=["t1", "t2"], consumerGroup="g",
                     initialOffset="earliest", consumers=3, ordering="unordered",
                     delivery={"retry": 3, "backoffDelay": "PT1S"}, ceOverrides={"extensions": {"team": "live"}},
                     sink={"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "svc"}})
        [src] = compile_text(source("KafkaSource", spec, api=api,
                                    labels={"kafkasources.sources.knative.dev/key-type": "byte-array"})).sources
        assert src.bootstrap_servers == ("a:9092", "b:9092", "c:9092") and src.topics == ("t1", "t2")
        assert (src.consumer_group, src.initial_offset, src.consumers, src.ordering, src.key_type) == \
            ("g", "earliest", 3, "unordered", "byte-array")
        assert src.broker is None and src.sink.url() == "http://svc.streaming.svc.cluster.local"
        assert src.delivery.retry == 3 and src.delivery.backoff_delay == 1.0
        assert src.ce_overrides == {"team": "live"}


def test_kafka_source_errors_name_file_resource_field():
    msgs = problems_of(BROKER, source("KafkaSource", {"topics": [], "initialOffset": "newest", "ordering": "random",
                                                      "consumers": 0, "colour": "red",
                                                      "sink": {"ref": {"kind": "Broker", "name": "lve"}}},
                                      labels={"kafkasources.sources.knative.dev/key-type": "long"}))
    assert msgs == [
        "m.yaml: KafkaSource/s: spec.colour: unknown field (known: bootstrapServers, topics, consumerGroup, initialOffset, consumers, ordering, delivery, sink, ceOverrides, net)",
        "m.yaml: KafkaSource/s: spec.sink.ref.name: broker 'lve' not found in namespace 'streaming' (known: live)",
        "m.yaml: KafkaSource/s: spec.bootstrapServers: is required",
        "m.yaml: KafkaSource/s: spec.topics: must not be empty",
        "m.yaml: KafkaSource/s: spec.initialOffset: must be earliest or latest, got 'newest'",
        "m.yaml: KafkaSource/s: spec.ordering: must be ordered or unordered, got 'random'",
        "m.yaml: KafkaSource/s: spec.consumers: must be a positive integer, got 0",
        "m.yaml: KafkaSource/s: metadata.labels[kafkasources.sources.knative.dev/key-type]: must be one of string, int, float, byte-array, got 'long'",
    ]


def test_source_api_versions_and_overrides():
    msgs = problems_of(source("KafkaSource", kafka(), api="sources.knative.dev/v1alpha1"))
    assert msgs == ["m.yaml: KafkaSource/s: apiVersion: sources.knative.dev/v1alpha1 is not supported for KafkaSource; "
                    "use sources.knative.dev/v1 or sources.knative.dev/v1beta1"]
    msgs = problems_of(BROKER, source("PingSource", ping(ceOverrides={"extensions": {"Team": "x", "id": "y", "n": 5}})))
    assert msgs == [
        "m.yaml: PingSource/s: spec.ceOverrides.extensions.Team: extension names are lower case letters a-z and digits 0-9 (CloudEvents attribute names)",
        "m.yaml: PingSource/s: spec.ceOverrides.extensions.id: 'id' is a CloudEvents context attribute, not an extension",
        "m.yaml: PingSource/s: spec.ceOverrides.extensions.n: must be a string, got int",
    ]
    msgs = problems_of(BROKER, source("KafkaSource", kafka(net={"sasl": {"enable": True}})))
    assert msgs == ["m.yaml: KafkaSource/s: spec.net.sasl.user: is required when sasl is enabled",
                    "m.yaml: KafkaSource/s: spec.net.sasl.password: is required when sasl is enabled"]


def test_ping_source_fields_and_data():
    plan = compile_text(BROKER, source("PingSource", ping(schedule="@hourly", timezone="Europe/Paris",
                                                          contentType="application/json", data='{"beat": 1}')),
                        source("PingSource", ping(dataBase64="aGk=", contentType="text/plain"), name="b64"),
                        source("PingSource", ping(schedule="@every 2s", data="plain"), name="txt"))
    first, b64, txt = plan.sources
    assert isinstance(first, PingSourcePlan)
    assert (first.schedule, first.timezone, first.content_type, first.data) == ("@hourly", "Europe/Paris", "application/json", {"beat": 1})
    assert b64.data == b"hi" and txt.data == b"plain" and txt.schedule == "@every 2s"
    assert first.to_dict()["data"] == {"beat": 1} and b64.to_dict()["dataBase64"] == "aGk="


def test_ping_source_v1beta2_is_read_as_v1():
    # Knative still serves PingSource v1beta2 (config/core/resources/pingsource.yaml) and converts it
    # to v1 field for field; manifests from its older docs use it.
    [v1beta2] = compile_text(source("PingSource", ping(contentType="application/json", data='{"message": "Hello world!"}'),
                                    api="sources.knative.dev/v1beta2")).sources
    [v1] = compile_text(source("PingSource", ping(contentType="application/json", data='{"message": "Hello world!"}'))).sources
    assert v1beta2 == v1
    msgs = problems_of(source("PingSource", ping(), api="sources.knative.dev/v1beta1"))
    assert msgs == ["m.yaml: PingSource/s: apiVersion: sources.knative.dev/v1beta1 is not supported for PingSource; "
                    "use sources.knative.dev/v1 or sources.knative.dev/v1beta2"]


def test_ping_source_errors():
    msgs = problems_of(BROKER,
                       source("PingSource", ping(schedule="*/5 * * *"), name="fields"),
                       source("PingSource", ping(schedule="0 0 L * *"), name="last"),
                       source("PingSource", ping(schedule="@fortnightly"), name="desc"),
                       source("PingSource", ping(timezone="Mars/Olympus"), name="tz"),
                       source("PingSource", ping(data="x", dataBase64="eA=="), name="both"),
                       source("PingSource", ping(contentType="application/json", data="[1]"), name="json"),
                       source("PingSource", ping(dataBase64="not base64!"), name="b64"),
                       source("PingSource", ping(schedule="61 * * * *"), name="range"))
    assert msgs[0] == "m.yaml: PingSource/fields: spec.schedule: expected exactly 5 fields (minute hour day-of-month month day-of-week), found 4 in '*/5 * * *'"
    assert msgs[1] == "m.yaml: PingSource/last: spec.schedule: invalid day of month field 'L' ('L' is not allowed there)"
    assert msgs[2].startswith("m.yaml: PingSource/desc: spec.schedule: unrecognized descriptor '@fortnightly'")
    assert msgs[3] == "m.yaml: PingSource/tz: spec.timezone: unknown time zone 'Mars/Olympus' (expected an IANA name such as Europe/Paris)"
    assert msgs[4] == "m.yaml: PingSource/both: spec.data: expected exactly one of data and dataBase64, got both"
    assert msgs[5] == "m.yaml: PingSource/json: spec.data: is not a JSON object (a JSON list, not an object), but contentType is application/json"
    assert msgs[6].startswith("m.yaml: PingSource/b64: spec.dataBase64: invalid base64")
    assert msgs[7].startswith("m.yaml: PingSource/range: spec.schedule: invalid cron schedule '61 * * * *'")
    assert len(msgs) == 8


def test_rocketmq_source_crd_fields():
    spec = rocketmq(namesrvAddr="10.0.0.1:9876;10.0.0.2:9876", groupName="g", selectorExpression="gift || like",
                    initialOffset="earliest", serviceAccountName="sa",
                    accessToken={"secretKeyRef": {"name": "rmq", "key": "credentials"}})
    [src] = compile_text(BROKER, source("RocketMQSource", spec)).sources
    assert isinstance(src, RocketMQSourcePlan)
    assert (src.topic_name, src.namesrv_addr, src.group_name, src.selector_expression, src.initial_offset, src.access_token) == \
        ("gifts", ("10.0.0.1:9876", "10.0.0.2:9876"), "g", "gift || like", "earliest", ("rmq", "credentials"))
    assert src.broker == "streaming/live"
    # the community CRD's sink is an ObjectReference; its defaults
    [src] = compile_text(BROKER, source("RocketMQSource", rocketmq(sink={"apiVersion": "v1", "kind": "Service", "name": "svc"}),
                                        api="sources.knative.dev/v1alpha1")).sources
    assert src.broker is None and src.sink.ref.kind == "Service" and src.group_name == "knative-rocketmq-source-streaming-s"
    assert (src.selector_expression, src.initial_offset) == ("*", "latest")


def test_rocketmq_source_errors():
    msgs = problems_of(BROKER, source("RocketMQSource", {"namesrvAddr": "", "initialOffset": "first", "tags": "x",
                                                         "accessToken": {"secretKeyRef": {"name": "n"}},
                                                         "sink": {"kind": "Broker", "name": "nope"}}))
    assert msgs == [
        "m.yaml: RocketMQSource/s: spec.tags: unknown field (known: topic, namesrvAddr, groupName, accessToken, serviceAccountName, sink, selectorExpression, initialOffset)",
        "m.yaml: RocketMQSource/s: spec.sink.ref.name: broker 'nope' not found in namespace 'streaming' (known: live)",
        "m.yaml: RocketMQSource/s: spec.topic: is required (the RocketMQ topic to consume)",
        "m.yaml: RocketMQSource/s: spec.namesrvAddr[0]: must be a non-empty string, got ''",
        "m.yaml: RocketMQSource/s: spec.initialOffset: must be earliest or latest, got 'first'",
        "m.yaml: RocketMQSource/s: spec.accessToken.secretKeyRef.key: is required",
    ]


def test_plan_with_sources_pickles():
    plan = compile_text(BROKER, source("KafkaSource", kafka()), source("PingSource", ping(), name="p"),
                        source("RocketMQSource", rocketmq(), name="r"))
    assert pickle.loads(pickle.dumps(plan)) == plan


def test_load_plan_refuses_sources_unless_allowed(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("\n---\n".join([BROKER, source("KafkaSource", kafka())]))
    with pytest.raises(ManifestError) as info:
        load_plan(path)
    [problem] = info.value.problems
    assert str(problem).startswith(f"{path}: KafkaSource/s: kind: this KafkaSource (sink Broker/streaming/live")
    assert "is not run here: the Flink job (`knflow run`, `knflow submit`) runs KafkaSources" in str(problem)
    assert load_plan(path, allow_sources=True).sources[0].name == "s"
    assert load_plan(path, allow_sources=runs_in_job).sources[0].name == "s"  # the Flink job runs this one
    ping_path = tmp_path / "p.yaml"
    ping_path.write_text("\n---\n".join([BROKER, source("PingSource", ping(), name="p")]))
    assert load_plan(ping_path, allow_sources=runs_in_job).sources[0].name == "p"  # and this one
    mq_path = tmp_path / "r.yaml"
    mq_path.write_text("\n---\n".join([BROKER, source("RocketMQSource", rocketmq(sink={"uri": "http://consumer.local/"}),
                                                       name="r")]))
    # and this one, with the bridge beside it
    assert load_plan(mq_path, allow_sources=runs_in_job).sources[0].name == "r"
    with pytest.raises(ManifestError) as info:
        load_plan(mq_path)
    assert ("RocketMQSource/r: kind: this RocketMQSource (sink Kafka topic knflow-rocketmq-streaming-r, then "
            "http://consumer.local/) is not run here") in str(info.value)


def test_cli_validate_plan_and_run(tmp_path, capsys):
    path = tmp_path / "m.yaml"
    path.write_text("\n---\n".join([BROKER, source("KafkaSource", kafka()), source("PingSource", ping(), name="p"),
                                    source("RocketMQSource", rocketmq(), name="r")]))
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "ok: 1 broker(s), 0 trigger(s), 3 source(s)"
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "KafkaSource streaming/s  -> Broker/streaming/live (topic knative-broker-streaming-live)" in out
    assert "PingSource streaming/p  -> http://consumer.local/" in out
    assert "reads:    RocketMQ topic gifts tags '*' at 127.0.0.1:9876" in out
    assert ("runs:     in the Flink job: a timer per source emits each tick (topic knflow-ping/streaming/p) where "
            "the broker topic enters, delivered to its sink") in out
    assert main(["plan", "--json", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [s["kind"] for s in data["sources"]] == ["KafkaSource", "PingSource", "RocketMQSource"]
    assert data["sources"][0]["topics"] == ["in"] and data["sources"][1]["schedule"] == "*/5 * * * *"
    bad = tmp_path / "bad.yaml"
    bad.write_text("\n---\n".join([BROKER, source("PingSource", ping(schedule="every day"))]))
    assert main(["validate", str(bad)]) == 1
    assert "PingSource/s: spec.schedule: expected exactly 5 fields" in capsys.readouterr().err
    events = tmp_path / "events.jsonl"
    events.write_text("")
    assert main(["run", str(path), "--runner", "beam-direct", "--events-file", str(events)]) == 1
    err = capsys.readouterr().err  # the DirectRunner runs no source
    assert "RocketMQSource/r: kind: this RocketMQSource (sink Broker/streaming/live" in err
    assert "KafkaSource/s: kind:" in err and "PingSource/p: kind:" in err


def test_a_kafka_source_with_a_direct_sink_is_delivered_as_a_trigger_without_filter():
    from cloudevents.core.v1.event import CloudEvent

    from transforms.delivery import DeliveryTask, Replied
    from transforms.kafka_plane import Outbox, Topics

    plan = compile_text(BROKER, source("KafkaSource", kafka(sink={"uri": "http://audit.local/"},
                                                            delivery={"retry": 2}), name="audit"),
                        source("KafkaSource", kafka(topics=["in2"]), name="fed"))
    [direct] = plan.direct_sources()  # the broker-fed source is not one
    [trigger] = direct.triggers
    assert trigger.key == "streaming/KafkaSource:audit" and trigger.subscriber.url({}) == "http://audit.local/"
    assert trigger.ordering == "ordered" and trigger.delivery.retry == 2  # Knative's default ordering, the source's delivery
    assert [t.key for t in plan.delivery_triggers()] == [t.key for t in plan.triggers()] + [trigger.key]
    event = CloudEvent({"specversion": "1.0", "id": "e1", "source": "/s", "type": "t"})
    reply = CloudEvent({"specversion": "1.0", "id": "r1", "source": "/s", "type": "reply"})
    topics = Topics.for_job("j")
    records, follow_up = Outbox(plan, topics).records(Replied(DeliveryTask(trigger.key, event), 200, reply))
    # a source has no reply path: the delivery counts, the reply goes nowhere
    assert follow_up is None and [r.topic for r in records] == [topics.outcomes]
    assert json.loads(records[0].value)["k"] == "delivered"


def test_match_takes_manifests_with_sources(tmp_path, capsys):
    path = tmp_path / "m.yaml"
    trigger = """
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: gifts, namespace: streaming}
spec: {broker: live, filters: [{exact: {type: gift}}], subscriber: {uri: 'http://gifts.local/'}}
"""
    path.write_text("\n---\n".join([BROKER, trigger, source("PingSource", ping(), name="p")]))
    event = tmp_path / "e.json"
    event.write_text(json.dumps({"specversion": "1.0", "id": "1", "source": "/s", "type": "gift"}))
    assert main(["match", str(path), "--event", str(event)]) == 0
    assert "MATCH" in capsys.readouterr().out


def test_a_rocketmq_source_with_a_direct_sink_flows_through_its_internal_topic(tmp_path, capsys):
    from transforms.codec import encode_kafka, event_from_dict
    from transforms.kafka_plane import Intake, Topics
    from transforms.scheduler import WorkItem

    plan = compile_text(BROKER, source("RocketMQSource", rocketmq(sink={"uri": "http://audit.local/"}), name="audit"),
                        source("RocketMQSource", rocketmq(), name="fed"))
    audit, fed = plan.sources
    assert audit.kafka_topic == "knflow-rocketmq-streaming-audit" and fed.kafka_topic == "knative-broker-streaming-live"
    assert plan.rocketmq_topics() == ("knflow-rocketmq-streaming-audit",)  # the broker-fed one writes the broker topic
    [direct] = plan.direct_sources()
    [trigger] = direct.triggers
    assert trigger.key == "streaming/RocketMQSource:audit" and trigger.subscriber.url({}) == "http://audit.local/"
    assert trigger.ordering == "unordered" and trigger.delivery.retry == 0  # no delivery, no ordering in its CRD
    assert audit.flows_to() == "Kafka topic knflow-rocketmq-streaming-audit, then http://audit.local/"
    assert audit.to_dict()["kafkaTopic"] == "knflow-rocketmq-streaming-audit" and "kafkaTopic" not in fed.to_dict()
    # what the bridge wrote there (a CloudEvent in the Kafka binding) is delivered to the sink as it is
    event = event_from_dict({"specversion": "1.0", "id": "m-1", "source": "/s", "type": "dev.knative.rocketmq.event",
                             "rocketmqtag": "gift"})
    key, headers, value = encode_kafka(event, "binary")
    out = Intake(plan, Topics.for_job("j")).ingest("knflow-rocketmq-streaming-audit", key, headers, value,
                                                   "knflow-rocketmq-streaming-audit/0@0", now=1.0)
    [item] = [o for o in out if isinstance(o, WorkItem)]
    assert item.task.trigger == "streaming/RocketMQSource:audit" and item.task.event.get_id() == "m-1"
    assert item.task.event.get_attributes()["rocketmqtag"] == "gift"

    path = tmp_path / "m.yaml"
    path.write_text("\n---\n".join([BROKER, source("RocketMQSource", rocketmq(sink={"uri": "http://audit.local/"}),
                                                   name="audit")]))
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert ("RocketMQSource streaming/audit  -> Kafka topic knflow-rocketmq-streaming-audit, then "
            "http://audit.local/") in out
    assert "reads:    RocketMQ topic gifts tags '*' at 127.0.0.1:9876 (group knative-rocketmq-source-streaming-audit" in out
    assert ("runs:     beside the job: `knflow rocketmq-bridge` writes to Kafka topic knflow-rocketmq-streaming-audit, "
            "which the job reads with its own consumer group, delivered to its sink") in out


def test_knflow_run_names_the_bridge_command_line(tmp_path):
    from pipelines.runners import bridge_note

    plan = compile_text(BROKER, source("RocketMQSource", rocketmq(sink={"uri": "http://audit.local/"}), name="audit"),
                        source("KafkaSource", kafka()))
    note = bridge_note(plan, [str(tmp_path / "my manifests")], "10.0.0.1:9092")
    assert "RocketMQSource streaming/audit -> Kafka topic knflow-rocketmq-streaming-audit, then http://audit.local/" in note
    assert note.endswith(f"knflow rocketmq-bridge '{tmp_path / 'my manifests'}' --endpoints 127.0.0.1:28081 "
                         f"--bootstrap-servers 10.0.0.1:9092")
    assert bridge_note(compile_text(BROKER, source("KafkaSource", kafka())), ["m"], "b") is None


def test_an_ordered_direct_kafka_source_orders_per_partition_whatever_the_keys():
    """Knative's OrderedConsumerVerticle runs one executor per topic partition: records of a
    partition with different keys (or none) are delivered one after the other."""
    from transforms.kafka_plane import Intake, Topics
    from transforms.packing import InRecord
    from transforms.scheduler import WorkItem

    plan = compile_text(BROKER, source("KafkaSource", kafka(sink={"uri": "http://audit.local/"}), name="audit"),
                        source("KafkaSource", kafka(topics=["other"], sink={"uri": "http://u.local/"},
                                                    ordering="unordered"), name="loose"))
    intake = Intake(plan, Topics.for_job("j"))
    keys = []
    for offset, key in enumerate([b"room-1", b"room-2", None]):
        out = intake.ingest_record(InRecord("in", 3, offset, 0, key, b"{}", {}), now=1.0)
        [item] = [o for o in out if isinstance(o, WorkItem)]
        assert item.ordered
        keys.append(item.key)
    assert keys == ["o|streaming/KafkaSource:audit|in/3"] * 3
    [item] = [o for o in intake.ingest_record(InRecord("other", 0, 5, 0, b"k", b"{}", {}), now=1.0)
              if isinstance(o, WorkItem)]
    assert not item.ordered and item.key == "u|streaming/KafkaSource:loose|partition:0/offset:5"


def test_kafka_source_consumers_is_listed_as_not_used():
    plan = compile_text(BROKER, source("KafkaSource", kafka(consumers=3)))
    assert plan.sources[0].consumers == 3
    assert plan.unused == ("m.yaml: KafkaSource/s: spec.consumers: not used: the job's --parallelism decides how "
                           "many consumers read the source's topics (each topic's partitions are spread over them)",)
    assert compile_text(BROKER, source("KafkaSource", kafka(consumers=1))).unused == ()


def test_rocketmq_service_account_is_listed_as_not_used():
    plan = compile_text(BROKER, source("RocketMQSource", rocketmq(serviceAccountName="rocketmq-sa")))
    assert plan.unused == ("m.yaml: RocketMQSource/s: spec.serviceAccountName: not used: knflow runs outside "
                           "Kubernetes; the bridge runs as the user who starts it",)
