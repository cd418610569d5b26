"""A KafkaSource's ``spec.net`` (SASL, TLS) with its values in v1 Secrets of the manifests."""
from __future__ import annotations

import base64
import pickle

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
    assert "SCRAM-SHA-512 as 'knflow'" in src.to_dict()["net"] and 'p"w' not in shown  # never the password
    assert pickle.loads(pickle.dumps(plan)).sources[0].auth == src.auth  # shipped to the job as is


def test_sasl_type_defaults_to_plain_and_tls_adds_its_ca():
    net = {"sasl": {"enable": True, "user": ref("user"), "password": ref("password")},
           "tls": {"enable": True, "caCert": ref("ca.crt")}}
    plan = compile_text(BROKER, secret(string_data={"user": "u", "password": "p", "ca.crt": "PEM-TEXT"}),
                        source("KafkaSource", kafka(net=net)))
    auth = plan.sources[0].auth
    assert auth.protocol == "SASL_SSL" and auth.sasl_mechanism == "PLAIN"
    java = auth.java_properties()
    assert java["sasl.jaas.config"].startswith("org.apache.kafka.common.security.plain.PlainLoginModule required")
    assert (java["ssl.truststore.type"], java["ssl.truststore.certificates"]) == ("PEM", "PEM-TEXT")
    assert auth.librdkafka_config()["ssl.ca.pem"] == "PEM-TEXT"


def test_tls_alone_with_a_client_certificate_and_disabled_sections():
    net = {"sasl": {"enable": False, "user": ref("nope")},
           "tls": {"enable": True, "cert": ref("tls.crt"), "key": ref("tls.key")}}
    plan = compile_text(BROKER, secret(string_data={"tls.crt": "CERT", "tls.key": "KEY"}),
                        source("KafkaSource", kafka(net=net)))
    auth = plan.sources[0].auth
    assert auth.protocol == "SSL" and auth.sasl_mechanism is None  # a disabled section reads nothing
    assert auth.java_properties()["ssl.keystore.certificate.chain"] == "CERT"
    assert auth.librdkafka_config()["ssl.key.pem"] == "KEY"
    assert compile_text(BROKER, source("KafkaSource", kafka(net={"sasl": {"enable": False}}))).sources[0].auth is None


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
                                 "data": {"user": "***not base64***"}})
    assert "m.yaml: Secret/kafka-auth: data.user: must be base64 of UTF-8 text" in problems_of(BROKER, bad_secret)
    msgs = problems_of(BROKER, secret(string_data={"c": "C"}), source("KafkaSource", kafka(net={
        "tls": {"enable": "yes"}, "sasl": {"enable": True, "user": "plain", "password": ref("c"), "mechanism": "x"},
        "extra": {}})))
    assert msgs == ["m.yaml: KafkaSource/s: spec.net.extra: unknown field (known: sasl, tls)",
                    "m.yaml: KafkaSource/s: spec.net.sasl.mechanism: unknown field (known: enable, type, user, password)",
                    "m.yaml: KafkaSource/s: spec.net.tls.enable: must be true or false, got 'yes'",
                    "m.yaml: KafkaSource/s: spec.net.sasl.user: must be {secretKeyRef: {name, key}}"]
    msgs = problems_of(BROKER, secret(string_data={"c": "C"}),
                       source("KafkaSource", kafka(net={"tls": {"enable": True, "cert": ref("c")}})))
    assert msgs == ["m.yaml: KafkaSource/s: spec.net.tls: cert and key go together (a client certificate and its key)"]


def test_secrets_are_read_not_listed_as_ignored():
    plan = compile_text(BROKER, secret(string_data={"x": "y"}))
    assert plan.ignored == ()
