"""Topics knflow creates take the job's largest records: a retry of an event at the
ingress's 1 MiB limit is ~2 MiB, over Kafka's 1 MiB default."""
from __future__ import annotations

import time

import pytest
from kafka import KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from eventing.kafka_topics import DEFAULT_MAX_RECORD_BYTES, ensure_topics, kafka_limit
from tests.plans import configured_broker_yaml

pytestmark = pytest.mark.kafka


def topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        # {resource type: {resource name: {config key: {config data}}}}, non-default keys only
        [by_name] = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)]).values()
        return {key: data["value"] if isinstance(data, dict) else data for key, data in by_name[topic].items()}
    finally:
        admin.close()


def test_created_topics_take_records_over_kafkas_default_limit(kafka):
    topic = kafka.unique_topic("big")
    assert ensure_topics(kafka.bootstrap, [topic], partitions=1) == [topic]
    assert topic_config(kafka.bootstrap, topic)["max.message.bytes"] == str(kafka_limit(DEFAULT_MAX_RECORD_BYTES))
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, max_request_size=kafka_limit(DEFAULT_MAX_RECORD_BYTES))
    try:
        producer.send(topic, b"x" * (2 * 1024 * 1024)).get(timeout=30)  # refused with Kafka's default
    finally:
        producer.close()
    assert ensure_topics(kafka.bootstrap, [topic]) == []  # an existing topic is left alone


def test_a_topic_the_manifests_size_is_created_with_their_sizes_and_a_refusal_names_them(kafka):
    from eventing.kafka_topics import TopicCreationError
    from eventing.plan import TopicLayout

    sized, other = kafka.unique_topic("sized"), kafka.unique_topic("default")
    layouts = {sized: TopicLayout(3, None, "ConfigMap knative-eventing/kafka-broker-config")}
    assert ensure_topics(kafka.bootstrap, [sized, other], partitions=2, layouts=layouts) == sorted([sized, other])
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    try:
        counts = {t.get("topic", t.get("name")): len(t["partitions"]) for t in admin.describe_topics([sized, other])}
    finally:
        admin.close()
    assert counts == {sized: 3, other: 2}
    # the test Kafka has one broker: replication factor 3 (Knative's default ConfigMap) is refused, by name
    refused = kafka.unique_topic("refused")
    with pytest.raises(TopicCreationError) as caught:
        ensure_topics(kafka.bootstrap, [refused], layouts={refused: TopicLayout(10, 3, "ConfigMap ns/kafka-config")})
    message = str(caught.value)
    assert f"refused to create topic {refused!r} with 10 partitions, replication factor 3 (ConfigMap ns/kafka-config)" \
        in message and "InvalidReplicationFactor" in message


def test_init_latest_offsets_commits_the_end_of_partitions_a_group_has_not_started(kafka):
    """Knative's InitOffsets: a new group's offsets become each partition's end; a partition
    the group already has an offset for keeps it; a missing topic is left out."""
    from confluent_kafka import Consumer, TopicPartition

    from eventing.kafka_topics import init_latest_offsets

    topic = kafka.unique_topic("latest")
    ensure_topics(kafka.bootstrap, [topic], partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    for n in range(3):
        producer.send(topic, b"before", partition=0)
    producer.send(topic, b"before", partition=1)
    producer.flush()
    group = f"g-{topic}"
    assert init_latest_offsets(kafka.bootstrap, [topic, "no-such-topic-here"], group) == {(topic, 0): 3, (topic, 1): 1}
    producer.send(topic, b"after", partition=0)
    producer.flush()
    producer.close()
    assert init_latest_offsets(kafka.bootstrap, [topic], group) == {}  # committed already: left as it is
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": group})
    try:
        # a group request may meet NOT_COORDINATOR (retriable) on this young broker, as the
        # code under test may: read back the way it commits (a run met it once)
        from eventing.kafka_topics import _until_coordinated

        committed = _until_coordinated(
            lambda: consumer.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=30),
            time.monotonic() + 60)
        assert [tp.offset for tp in committed] == [3, 1]
    finally:
        consumer.close()


def test_group_requests_wait_for_the_coordinator_of_a_fresh_broker():
    """A fresh broker answers the first group requests NOT_COORDINATOR while it creates
    __consumer_offsets (CI met it): retriable errors are tried again until the deadline,
    others raise at once."""
    import time

    from confluent_kafka import KafkaError, KafkaException

    from eventing.kafka_topics import _until_coordinated

    answers = [KafkaException(KafkaError(KafkaError.NOT_COORDINATOR, "Not coordinator", retriable=True)),
               KafkaException(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, "loading", retriable=True)),
               "committed"]

    def call():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert _until_coordinated(call, time.monotonic() + 10) == "committed" and answers == []
    fatal = KafkaException(KafkaError(KafkaError.INVALID_CONFIG, "bad"))
    with pytest.raises(KafkaException):
        _until_coordinated(lambda: (_ for _ in ()).throw(fatal), time.monotonic() + 10)
    late = KafkaException(KafkaError(KafkaError.NOT_COORDINATOR, "Not coordinator", retriable=True))
    with pytest.raises(KafkaException):  # past the deadline: the error, not a hang
        _until_coordinated(lambda: (_ for _ in ()).throw(late), time.monotonic() - 1)


def test_creating_a_topic_tries_a_retriable_error_again_until_the_deadline():
    """A busy Kafka answers CreateTopics with a retriable error (a request timeout, a
    controller moving; a real broker cannot be made to, so its answers are scripted here):
    the topic is asked for again until the deadline; a refusal raises at once, naming it."""
    from kafka.errors import InvalidReplicationFactorError, NotControllerError, RequestTimedOutError

    from eventing.kafka_topics import TopicCreationError, _create_missing

    class ScriptedAdmin:
        def __init__(self, *answers):
            self.answers, self.asked = list(answers), []

        def list_topics(self):
            return ["there"]

        def create_topics(self, topics, timeout_ms):
            self.asked.append(topics[0].name)
            answer = self.answers.pop(0)
            if answer is not None:
                raise answer

    admin = ScriptedAdmin(RequestTimedOutError(), NotControllerError(), None)
    created = _create_missing(admin, "k:9092", ["there", "new"], 2, 1, time.monotonic() + 30, DEFAULT_MAX_RECORD_BYTES, {})
    assert created == ["new"] and admin.asked == ["new", "new", "new"]
    with pytest.raises(RequestTimedOutError):  # past the deadline: the error, not a hang
        _create_missing(ScriptedAdmin(RequestTimedOutError()), "k:9092", ["new"], 2, 1, time.monotonic() - 1,
                        DEFAULT_MAX_RECORD_BYTES, {})
    with pytest.raises(TopicCreationError, match="refused to create topic 'new' with 2 partitions, replication factor 3"):
        _create_missing(ScriptedAdmin(InvalidReplicationFactorError()), "k:9092", ["new"], 2, 3, time.monotonic() + 30,
                        DEFAULT_MAX_RECORD_BYTES, {})


def test_a_refused_sasl_login_or_tls_handshake_is_a_clear_error_not_a_metadata_timeout(kafka):
    from eventing.kafka_topics import KafkaAccessError, check_access, init_latest_offsets

    topic = kafka.unique_topic("sasl")
    ensure_topics(kafka.bootstrap, [topic], partitions=1)
    login = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "knflow"}
    good = init_latest_offsets(kafka.sasl_bootstrap, [topic], "g-sasl-ok", timeout_s=30,
                               config={**login, "sasl.password": kafka.SASL_PASSWORD})
    assert good == {(topic, 0): 0}  # through the SASL listener
    with pytest.raises(KafkaAccessError, match=r"refused group g-sasl-bad: .*SASL authentication error"):
        init_latest_offsets(kafka.sasl_bootstrap, [topic], "g-sasl-bad", timeout_s=5,
                            config={**login, "sasl.password": "wrong"})
    check_access(kafka.sasl_bootstrap, "g-sasl-ok", config={**login, "sasl.password": kafka.SASL_PASSWORD})
    with pytest.raises(KafkaAccessError, match=r"refused group g-sasl-check: .*SASL authentication error"):
        check_access(kafka.sasl_bootstrap, "g-sasl-check", timeout_s=5, config={**login, "sasl.password": "wrong"})
    tls = {"security.protocol": "SSL"}
    assert init_latest_offsets(kafka.ssl_bootstrap, [topic], "g-tls-ok", timeout_s=30,
                               config={**tls, "ssl.ca.pem": kafka.ssl_ca_pem}) == {(topic, 0): 0}
    with pytest.raises(KafkaAccessError, match=r"refused group g-tls-bad: .*certificate verify failed"):
        init_latest_offsets(kafka.ssl_bootstrap, [topic], "g-tls-bad", timeout_s=5, config=tls)  # not its CA
    both = {**login, "security.protocol": "SASL_SSL", "ssl.ca.pem": kafka.ssl_ca_pem}
    check_access(kafka.sasl_ssl_bootstrap, "g-both-ok", config={**both, "sasl.password": kafka.SASL_PASSWORD})
    with pytest.raises(KafkaAccessError, match=r"refused group g-both-bad: .*SASL authentication error"):
        check_access(kafka.sasl_ssl_bootstrap, "g-both-bad", timeout_s=5, config={**both, "sasl.password": "wrong"})


def test_no_answer_or_settings_librdkafka_refuses_are_clear_errors_too():
    from eventing.kafka_topics import KafkaAccessError, check_access
    from tests.consumers import closed_port_url

    closed = closed_port_url().split("//", 1)[1].rstrip("/")
    with pytest.raises(KafkaAccessError, match=rf"Kafka at {closed} did not answer group g-none within 2 s"):
        check_access(closed, "g-none", timeout_s=2)
    with pytest.raises(KafkaAccessError, match=r"cannot connect to Kafka at .* as group g-pem: .*ssl.ca.pem"):
        check_access(closed, "g-pem", timeout_s=2, config={"security.protocol": "SSL", "ssl.ca.pem": "not a PEM"})


@pytest.mark.parametrize("command", ["run", "ingress"])
def test_a_configmap_size_kafka_refuses_stops_run_and_ingress_at_start_naming_it(kafka, tmp_path, command):
    """Knative's default kafka-broker-config asks replication factor 3; this Kafka has one
    broker: the start stops with Kafka's reason, the topic and the ConfigMap, before a job or
    a server runs (the ConfigMap's bootstrap.servers is the address: no flag)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    namespace = kafka.unique_topic("rf")
    manifest = tmp_path / "sized.yaml"
    manifest.write_text(configured_broker_yaml(namespace, {
        "bootstrap.servers": kafka.bootstrap, "default.topic.partitions": "10", "default.topic.replication.factor": "3"}))
    extra = ["--job-name", namespace] if command == "run" else ["--port", "0"]
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", command, str(manifest), *extra], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (f"knflow {command}: Kafka at {kafka.bootstrap} refused to create topic 'knative-broker-{namespace}-live' "
            f"with 10 partitions, replication factor 3 (ConfigMap knative-eventing/kafka-broker-config)") \
        in result.stderr, result.stderr


def test_a_kafka_that_cannot_be_reached_is_a_clear_error_naming_it_and_the_topics():
    from eventing.kafka_topics import KafkaAccessError
    from tests.consumers import closed_port_url

    closed = closed_port_url().split("//", 1)[1].rstrip("/")
    with pytest.raises(KafkaAccessError, match=rf"cannot reach Kafka at {closed} to create topics a-topic, b-topic "
                                               r"\(waited 2 s\): "):
        ensure_topics(closed, ["b-topic", "a-topic"], timeout_s=2)


def test_run_without_a_reachable_kafka_stops_with_one_line_not_a_traceback(tmp_path):
    """``knflow run`` creates its topics before the job: no Kafka at the address is the CLI's
    error message (exit 1), not kafka-python's traceback."""
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.consumers import closed_port_url

    closed = closed_port_url().split("//", 1)[1].rstrip("/")
    manifest = tmp_path / "broker.yaml"
    manifest.write_text("apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n")
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(manifest), "--bootstrap-servers", closed],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"knflow run: cannot reach Kafka at {closed} to create topics " in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
