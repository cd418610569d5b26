"""A KafkaSource's ``spec.net`` (SASL, TLS) with its values in v1 Secrets of the manifests."""
from __future__ import annotations

import base64
import pickle

import pytest
import yaml

from eventing.kafka_auth import KafkaAuth
from tests.eventing.test_sources import BROKER, compile_text, kafka, problems_of, source


def secret(name: str = "kafka-auth", *, data: dict | None = None, string_data: dict | None = None,
           namespace: str = "streaming") -> str:
    doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace}, "type": "Opaque"}
    if data is not None:
        doc["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    if string_data is not None:
        doc["stringData"] = string_data
    return yaml.safe_dump(doc)


def ref(key: str, name: str = "kafka-auth") -> dict:
    return {"secretKeyRef": {"name": name, "key": key}}


SASL = {"sasl": {"enable": True, "type": ref("saslType"), "user": ref("user"), "password": ref("password")}}


def test_sasl_scram_from_a_secret_becomes_both_clients_settings():
    plan = compile_text(BROKER, secret(data={"saslType": "SCRAM-SHA-512", "user": "knflow", "password": 'p"w\\d'}),
                        source("KafkaSource", kafka(net=SASL)))
    [src] = plan.sources
    assert src.auth == KafkaAuth("SCRAM-SHA-512", "knflow", 'p"w\\d')
    java = src.kafka_properties()
    assert java["security.protocol"] == "SASL_PLAINTEXT" and java["sasl.mechanism"] == "SCRAM-SHA-512"
    assert java["sasl.jaas.config"] == ('org.apache.kafka.common.security.scram.ScramLoginModule required '
                                        'username="knflow" password="p\\"w\\\\d";')
    assert src.librdkafka_config() == {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
                                       "sasl.username": "knflow", "sasl.password": 'p"w\\d'}
    shown = str(src.to_dict()) + src.reads() + repr(src)
    assert src.to_dict()["net"] == "SASL_PLAINTEXT, SCRAM-SHA-512"
    assert 'p"w' not in shown and "knflow" not in src.to_dict()["net"]  # nothing read from the Secret
    assert pickle.loads(pickle.dumps(plan)).sources[0].auth == src.auth  # shipped to the job as is


def _tls_material() -> tuple[str, str, str]:
    """(a CA's PEM, a client certificate it signed, that certificate's PKCS#8 key)."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("client.example")
    return ca.cert_pem.bytes().decode(), leaf.cert_chain_pems[0].bytes().decode(), _pkcs8(leaf.private_key_pem.bytes())


def _pkcs8(pem: bytes) -> str:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pem, None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def test_sasl_type_defaults_to_plain_and_tls_adds_its_ca():
    ca, _, _ = _tls_material()
    net = {"sasl": {"enable": True, "user": ref("user"), "password": ref("password")},
           "tls": {"enable": True, "caCert": ref("ca.crt")}}
    plan = compile_text(BROKER, secret(string_data={"user": "u", "password": "p\n", "ca.crt": ca}),
                        source("KafkaSource", kafka(net=net)))
    auth = plan.sources[0].auth
    assert auth.protocol == "SASL_SSL" and auth.sasl_mechanism == "PLAIN"
    java = auth.java_properties()
    assert java["sasl.jaas.config"] == ('org.apache.kafka.common.security.plain.PlainLoginModule required '
                                        'username="u" password="p\\n";')  # a line break ends a JAAS string
    assert (java["ssl.truststore.type"], java["ssl.truststore.certificates"]) == ("PEM", ca)
    assert auth.librdkafka_config()["ssl.ca.pem"] == ca and auth.librdkafka_config()["sasl.password"] == "p\n"


def test_tls_alone_with_a_client_certificate_and_disabled_sections():
    _, cert, key = _tls_material()
    net = {"sasl": {"enable": False, "user": ref("nope")},
           "tls": {"enable": True, "cert": ref("tls.crt"), "key": ref("tls.key")}}
    plan = compile_text(BROKER, secret(data={"tls.crt": cert, "tls.key": key}), source("KafkaSource", kafka(net=net)))
    auth = plan.sources[0].auth
    assert auth.protocol == "SSL" and auth.sasl_mechanism is None  # a disabled section reads nothing
    assert auth.java_properties()["ssl.keystore.certificate.chain"] == cert
    assert auth.librdkafka_config()["ssl.key.pem"] == key
    assert compile_text(BROKER, source("KafkaSource", kafka(net={"sasl": {"enable": False}}))).sources[0].auth is None


def test_tls_values_that_the_java_client_would_refuse_are_errors_naming_the_field():
    import trustme

    leaf = trustme.CA().issue_cert("client.example")
    traditional = leaf.private_key_pem.bytes().decode()  # SEC1 / PKCS#1: librdkafka reads it, Java does not
    net = {"tls": {"enable": True, "caCert": ref("ca.crt"), "cert": ref("tls.crt"), "key": ref("tls.key")}}
    msgs = problems_of(BROKER, secret(string_data={"ca.crt": "PEM-TEXT", "tls.crt": leaf.cert_chain_pems[0].bytes().decode(),
                                                   "tls.key": traditional}), source("KafkaSource", kafka(net=net)))
    assert msgs == [
        "m.yaml: KafkaSource/s: spec.net.tls.caCert: the Secret's value holds no PEM certificate "
        "(-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)",
        "m.yaml: KafkaSource/s: spec.net.tls.key: must be an unencrypted PKCS#8 PEM key (-----BEGIN PRIVATE KEY-----), "
        "as Kafka's Java client reads it; convert one with `openssl pkcs8 -topk8 -nocrypt -in key.pem`"]


def test_secret_data_decodes_as_kubernetes_does():
    """stringData wins over data; base64 may be wrapped (a YAML block scalar, ``base64``'s
    76 columns); a Secret nothing refers to may hold binary data (a keystore)."""
    wrapped = base64.b64encode(b"s" * 70).decode()
    wrapped = wrapped[:40] + "\n" + wrapped[40:] + "\n"
    keystore = yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "jks", "namespace": "streaming"},
                               "data": {"keystore.p12": base64.b64encode(bytes(range(256))).decode()}})
    doc = yaml.safe_load(secret(data={"user": "from-data", "saslType": "PLAIN"}, string_data={"user": "from-stringData"}))
    doc["data"]["password"] = wrapped
    plan = compile_text(BROKER, keystore, yaml.safe_dump(doc), source("KafkaSource", kafka(net=SASL)))
    auth = plan.sources[0].auth
    assert (auth.username, auth.password) == ("from-stringData", "s" * 70)
    binary = {"sasl": {"enable": True, "user": ref("keystore.p12", "jks"), "password": ref("keystore.p12", "jks")}}
    assert problems_of(BROKER, keystore, source("KafkaSource", kafka(net=binary)))[0] == (
        "m.yaml: KafkaSource/s: spec.net.sasl.user.secretKeyRef.key: Secret streaming/jks key 'keystore.p12' "
        "is binary, not UTF-8 text: knflow needs text here")
    assert problems_of(BROKER, keystore, keystore) == [
        "m.yaml: Secret/jks: metadata.name: duplicate Secret 'streaming/jks' (first defined in m.yaml)"]


def test_secret_problems_name_the_field_and_the_secret():
    assert problems_of(BROKER, source("KafkaSource", kafka(net=SASL))) == [
        f"m.yaml: KafkaSource/s: spec.net.sasl.{f}.secretKeyRef: Secret streaming/kafka-auth is not in the manifests: "
        "knflow runs outside Kubernetes and reads a Secret from the files given (a v1 Secret with data or stringData), "
        "so give its YAML as one of them" for f in ("type", "user", "password")]
    elsewhere = secret(string_data={"saslType": "PLAIN", "user": "u", "password": "p"}, namespace="other")
    assert len(problems_of(BROKER, elsewhere, source("KafkaSource", kafka(net=SASL)))) == 3  # another namespace's
    msgs = problems_of(BROKER, secret(string_data={"user": "u", "saslType": "GSSAPI"}),
                       source("KafkaSource", kafka(net=SASL)))
    assert msgs == ["m.yaml: KafkaSource/s: spec.net.sasl.type: SASL type 'GSSAPI' is not supported "
                    "(knflow: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)",
                    "m.yaml: KafkaSource/s: spec.net.sasl.password.secretKeyRef.key: Secret streaming/kafka-auth has "
                    "no key 'password' (it has: saslType, user)"]
    bad_secret = yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kafka-auth", "namespace": "streaming"},
                                 "data": {"user": "***not base64***", "password": "cA==", "saslType": "UExBSU4="}})
    assert problems_of(BROKER, bad_secret, source("KafkaSource", kafka(net=SASL))) == [
        "m.yaml: KafkaSource/s: spec.net.sasl.user.secretKeyRef.key: Secret streaming/kafka-auth key 'user' "
        "is not valid base64: knflow needs text here"]
    msgs = problems_of(BROKER, secret(string_data={"c": "C"}), source("KafkaSource", kafka(net={
        "tls": {"enable": "yes"}, "sasl": {"enable": True, "user": "plain", "password": ref("c"), "mechanism": "x"},
        "extra": {}})))
    assert msgs == ["m.yaml: KafkaSource/s: spec.net.extra: unknown field (known: sasl, tls)",
                    "m.yaml: KafkaSource/s: spec.net.sasl.mechanism: unknown field (known: enable, type, user, password)",
                    "m.yaml: KafkaSource/s: spec.net.tls.enable: must be true or false, got 'yes'",
                    "m.yaml: KafkaSource/s: spec.net.sasl.user: must be {secretKeyRef: {name, key}}"]
    msgs = problems_of(BROKER, secret(string_data={"c": "C"}),
                       source("KafkaSource", kafka(net={"tls": {"enable": True, "cert": ref("c")}})))
    assert msgs == ["m.yaml: KafkaSource/s: spec.net.tls: cert and key go together (a client certificate and its key)",
                    "m.yaml: KafkaSource/s: spec.net.tls.cert: the Secret's value holds no PEM certificate "
                    "(-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)"]


def test_secrets_are_read_not_listed_as_ignored():
    plan = compile_text(BROKER, secret(string_data={"x": "y"}))
    assert plan.ignored == ()


def _broker_config(name: str = "live", config: str = "kafka-broker-config") -> str:
    return yaml.safe_dump({"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
                           "metadata": {"name": name, "namespace": "streaming"},
                           "spec": {"config": {"apiVersion": "v1", "kind": "ConfigMap", "name": config,
                                               "namespace": "knative-eventing"}}})


def _config_map(name: str = "kafka-broker-config", secret_name: str | None = "kafka-auth", **more: str) -> str:
    data = {"bootstrap.servers": "kafka:9092", **{k.replace("_", "."): v for k, v in more.items()}}
    if secret_name:
        data["auth.secret.ref.name"] = secret_name
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": name, "namespace": "knative-eventing"}, "data": data})


def test_the_brokers_configmap_secret_is_knflows_own_kafka_login():
    ca, cert, key = _tls_material()
    values = {"protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "user": "u", "password": "p",
              "ca.crt": ca, "user.crt": cert, "user.key": key}
    plan = compile_text(_broker_config(), _config_map(), secret(string_data=values, namespace="knative-eventing"))
    auth = plan.kafka_auth
    assert auth == KafkaAuth("SCRAM-SHA-512", "u", "p", tls=True, ca_pem=ca, cert_pem=cert, key_pem=key)
    assert plan.librdkafka_config()["security.protocol"] == "SASL_SSL"
    assert plan.kafka_python_config()["sasl_plain_password"] == "p" and plan.kafka_python_config()["ssl_context"]
    assert plan.to_dict()["kafka"] == "SASL_SSL, SCRAM-SHA-512, own CA, client certificate"
    assert plan.ignored == ()  # the ConfigMap was read
    assert plan.unused == ()  # every key of the ConfigMap is read
    assert plan.kafka_bootstrap == "kafka:9092"
    plain = compile_text(_broker_config(), _config_map(secret_name=None))
    assert plain.kafka_auth is None and plain.librdkafka_config() == {} and plain.kafka_python_config() == {}
    absent = compile_text(_broker_config())  # the ConfigMap is not among the manifests: as before
    assert absent.kafka_auth is None and absent.kafka_bootstrap is None and "not in the manifests" in absent.unused[0]


def test_the_brokers_configmap_gives_kafkas_address_unless_the_flag_does():
    from pipelines.cli import build_parser
    from pipelines.options import DEFAULT_BOOTSTRAP, bootstrap_servers, flink_options

    plan = compile_text(_broker_config(), _config_map(secret_name=None))
    assert plan.kafka_bootstrap == "kafka:9092"
    assert bootstrap_servers(None, plan) == "kafka:9092" and bootstrap_servers("k2:9092", plan) == "k2:9092"
    assert bootstrap_servers(None, compile_text(_broker_config())) == DEFAULT_BOOTSTRAP == bootstrap_servers(None)
    assert flink_options(build_parser().parse_args(["run", "m.yaml"]), plan).bootstrap_servers == "kafka:9092"
    flagged = build_parser().parse_args(["run", "m.yaml", "--bootstrap-servers", "k2:9092"])
    assert flink_options(flagged, plan).bootstrap_servers == "k2:9092"
    other = yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "second-config",
                            "namespace": "knative-eventing"}, "data": {"bootstrap.servers": "elsewhere:9092"}})
    assert problems_of(_broker_config(), _config_map(secret_name=None), _broker_config("second", "second-config"),
                       other) == ["m.yaml: Broker/second: spec.config: bootstrap.servers 'elsewhere:9092', Broker "
                                  "streaming/live's 'kafka:9092': one job has one Kafka connection"]


def test_broker_login_problems_name_the_configmap_and_secret():
    assert problems_of(_broker_config(), _config_map()) == [
        "m.yaml: Broker/live: spec.config: ConfigMap knative-eventing/kafka-broker-config: auth.secret.ref.name: "
        "Secret knative-eventing/kafka-auth: is not in the manifests: knflow runs outside Kubernetes and reads a "
        "Secret from the files given, so give its YAML as one of them"]
    bad = secret(string_data={"protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI", "ca.crt": "x"},
                 namespace="knative-eventing")
    assert problems_of(_broker_config(), _config_map(), bad) == [
        f"m.yaml: Broker/live: spec.config: ConfigMap knative-eventing/kafka-broker-config: auth.secret.ref.name: "
        f"Secret knative-eventing/kafka-auth: {what}" for what in (
            "sasl.mechanism: 'GSSAPI' is not supported (knflow: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)",
            "user: is required with protocol SASL_SSL", "password: is required with protocol SASL_SSL",
            "ca.crt: the Secret's value holds no PEM certificate (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)")]
    one = secret(string_data={"protocol": "SASL_PLAINTEXT", "user": "a", "password": "p"}, namespace="knative-eventing")
    other = yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "other", "namespace": "knative-eventing"},
                            "stringData": {"protocol": "SASL_PLAINTEXT", "user": "b", "password": "q"}})
    msgs = problems_of(_broker_config(), _config_map(), one, other, _broker_config("second", "second-config"),
                       _config_map("second-config", "other"))
    assert msgs == ["m.yaml: Broker/second: spec.config: logs in with Secret knative-eventing/other, Broker "
                    "streaming/live with Secret knative-eventing/kafka-auth: one job has one Kafka connection"]


def test_the_brokers_configmap_sizes_its_topic_as_knatives_does():
    from eventing.plan import TopicLayout

    # Knative's own kafka-broker-config: 10 partitions, replication factor 3
    plan = compile_text(_broker_config(), _config_map(secret_name=None, default_topic_partitions="10",
                                                      default_topic_replication_factor="3",
                                                      default_topic_config_retention_ms="60000"))
    layout = TopicLayout(10, 3, "ConfigMap knative-eventing/kafka-broker-config")
    assert plan.topic_layouts == {"knative-broker-streaming-live": layout}
    assert plan.to_dict()["topicLayouts"] == {"knative-broker-streaming-live": {
        "partitions": 10, "replicationFactor": 3, "from": "ConfigMap knative-eventing/kafka-broker-config"}}
    assert plan.unused == ("m.yaml: Broker/live: spec.config: read for bootstrap.servers, auth.secret.ref.name, "
                           "default.topic.partitions, default.topic.replication.factor (bootstrap.servers unless "
                           "--bootstrap-servers is given); its other keys are not used: "
                           "default.topic.config.retention.ms",)
    # one size alone; the other is the command's default
    only = compile_text(_broker_config(), _config_map(secret_name=None, default_topic_partitions="2"))
    assert only.topic_layouts["knative-broker-streaming-live"] == TopicLayout(2, None, layout.origin)
    assert compile_text(_broker_config(), _config_map(secret_name=None)).topic_layouts == {}


@pytest.mark.parametrize("value", ["0", "-1", "ten", "1.5", "", "\u00b2", "\u0661\u0662", "32768"])
def test_a_configmap_topic_size_that_is_no_positive_integer_names_its_key(value):
    # superscripts and other scripts' digits are no integer to Go's strconv.Atoi either; a
    # replication factor is an int16 in Kafka's protocol
    msgs = problems_of(_broker_config(), _config_map(secret_name=None, default_topic_replication_factor=value))
    assert msgs == [f"m.yaml: Broker/live: spec.config: ConfigMap knative-eventing/kafka-broker-config: "
                    f"default.topic.replication.factor: must be an integer from 1 to 32767, got {value!r}"]


def test_a_configmap_topic_size_reads_as_go_reads_it_and_odd_keys_are_listed():
    from eventing.plan import TopicLayout

    plan = compile_text(_broker_config(), _config_map(secret_name=None, default_topic_partitions="+3",
                                                      default_topic_replication_factor=" 32767 "))
    assert plan.topic_layouts["knative-broker-streaming-live"] == TopicLayout(
        3, 32767, "ConfigMap knative-eventing/kafka-broker-config")
    odd = _config_map(secret_name=None).replace("data:\n", "data:\n  10: x\n")
    assert "its other keys are not used: 10" in compile_text(_broker_config(), odd).unused[0]


def test_knflow_plan_shows_the_configmaps_address_login_and_topic_sizes(tmp_path, capsys):
    from pipelines.cli import main

    path = tmp_path / "m.yaml"
    path.write_text("---\n".join([_broker_config(), _config_map(default_topic_partitions="10"),
                                  secret(string_data={"protocol": "SASL_PLAINTEXT", "user": "u", "password": "s3cr3t-value"},
                                         namespace="knative-eventing")]))
    assert main(["plan", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "Kafka kafka:9092 (the brokers' ConfigMap; --bootstrap-servers wins)" in lines
    assert "Kafka login: SASL_PLAINTEXT, PLAIN" in lines
    assert "  knative-broker-streaming-live: 10 partitions (ConfigMap knative-eventing/kafka-broker-config)" in lines
    assert not any("s3cr3t-value" in line for line in lines)  # no value read from the Secret is shown


def test_a_kafka_sink_writing_a_brokers_topic_must_size_it_as_the_configmap_does():
    sink = yaml.safe_dump({"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "KafkaSink",
                           "metadata": {"name": "dlq", "namespace": "streaming"},
                           "spec": {"topic": "knative-broker-streaming-live", "numPartitions": 2}})
    msgs = problems_of(_broker_config(), _config_map(secret_name=None, default_topic_partitions="10"), sink)
    assert msgs == ["m.yaml: KafkaSink/dlq: spec.numPartitions: topic 'knative-broker-streaming-live' is sized "
                    "2 partitions (KafkaSink streaming/dlq) here and 10 partitions (ConfigMap "
                    "knative-eventing/kafka-broker-config) there: give both the same sizes"]
    same = sink.replace("numPartitions: 2", "numPartitions: 10")
    assert compile_text(_broker_config(), _config_map(secret_name=None, default_topic_partitions="10"), same)
