"""How a KafkaSource's consumer reaches a secured Kafka: Knative's ``spec.net``.

Knative's KafkaSource (``sources.knative.dev/v1``) takes SASL and TLS settings whose values
live in Secrets::

    net:
      sasl:
        enable: true
        type: {secretKeyRef: {name: kafka-auth, key: saslType}}   # PLAIN (default), SCRAM-SHA-256, SCRAM-SHA-512
        user: {secretKeyRef: {name: kafka-auth, key: user}}
        password: {secretKeyRef: {name: kafka-auth, key: password}}
      tls:
        enable: true
        caCert: {secretKeyRef: ...}   # PEM; without it, the JVM's and librdkafka's default CAs
        cert: {secretKeyRef: ...}     # client certificate (PEM), with key
        key: {secretKeyRef: ...}      # unencrypted PKCS#8 PEM key

:func:`parse_net` resolves them (``eventing.secrets``) into a :class:`KafkaAuth`, which
speaks both clients' settings: the Flink job's Java consumer (:meth:`java_properties`)
and librdkafka, which fixes where ``initialOffset: latest`` starts
(:meth:`librdkafka_config`).
"""
from __future__ import annotations

import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from eventing.secrets import Secrets, secret_value
from transforms.tls_trust import check_pem

__all__ = ["KafkaAuth", "SASL_MECHANISMS", "parse_net"]

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_PKCS8_KEY = "-----BEGIN PRIVATE KEY-----"
_LOGIN_MODULES = {"PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
                  "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
                  "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule"}


@dataclass(frozen=True)
class KafkaAuth:
    """SASL and/or TLS of one Kafka connection; secrets are left out of ``repr``."""

    sasl_mechanism: str | None = None
    username: str = ""
    password: str = field(default="", repr=False)
    tls: bool = False
    ca_pem: str | None = None
    cert_pem: str | None = None
    key_pem: str | None = field(default=None, repr=False)

    @property
    def protocol(self) -> str:
        """Kafka's ``security.protocol``."""
        if self.sasl_mechanism:
            return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"
        return "SSL" if self.tls else "PLAINTEXT"

    def java_properties(self, relocated: str = "") -> dict[str, str]:
        """The Java client's properties. ``relocated``: the package prefix of a shaded
        Kafka client (the Flink SQL connector jar's ``org.apache.flink.kafka.shaded.``):
        the JAAS login module is loaded by that name."""
        out = {"security.protocol": self.protocol}
        if self.sasl_mechanism:
            out["sasl.mechanism"] = self.sasl_mechanism
            out["sasl.jaas.config"] = (f'{relocated}{_LOGIN_MODULES[self.sasl_mechanism]} required '
                                       f'username="{_jaas_quote(self.username)}" password="{_jaas_quote(self.password)}";')
        if self.ca_pem:
            out["ssl.truststore.type"] = "PEM"
            out["ssl.truststore.certificates"] = self.ca_pem
        if self.cert_pem and self.key_pem:
            out["ssl.keystore.type"] = "PEM"
            out["ssl.keystore.certificate.chain"] = self.cert_pem
            out["ssl.keystore.key"] = self.key_pem
        return out

    def librdkafka_config(self) -> dict[str, str]:
        """librdkafka's settings (confluent-kafka) for the same connection."""
        out = {"security.protocol": self.protocol}
        if self.sasl_mechanism:
            out.update({"sasl.mechanism": self.sasl_mechanism, "sasl.username": self.username,
                        "sasl.password": self.password})
        if self.ca_pem:
            out["ssl.ca.pem"] = self.ca_pem
        if self.cert_pem and self.key_pem:
            out["ssl.certificate.pem"] = self.cert_pem
            out["ssl.key.pem"] = self.key_pem
        return out

    def kafka_python_config(self) -> dict[str, Any]:
        """The same for kafka-python (topic creation, the outcome reader)."""
        out: dict[str, Any] = {"security_protocol": self.protocol}
        if self.sasl_mechanism:
            out.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.username,
                       sasl_plain_password=self.password)
        if self.tls:
            out["ssl_context"] = self.ssl_context()
        return out

    def ssl_context(self) -> ssl.SSLContext:
        """A client context: the system's CAs plus ``ca_pem``; the client certificate, if any
        (``ssl`` loads one from files only: written to a private temporary directory, read,
        removed)."""
        context = ssl.create_default_context()
        if self.ca_pem:
            context.load_verify_locations(cadata=self.ca_pem)
        if self.cert_pem and self.key_pem:
            with tempfile.TemporaryDirectory(prefix="knflow-tls-") as directory:
                cert, key = Path(directory, "cert.pem"), Path(directory, "key.pem")
                cert.write_text(self.cert_pem)
                key.write_text(self.key_pem)
                context.load_cert_chain(cert, key)
        return context

    def describe(self) -> str:
        """What ``knflow plan`` shows: nothing read from a Secret."""
        parts = [self.protocol]
        if self.sasl_mechanism:
            parts.append(self.sasl_mechanism)
        if self.ca_pem:
            parts.append("own CA")
        if self.cert_pem:
            parts.append("client certificate")
        return ", ".join(parts)


def _jaas_quote(text: str) -> str:
    """A JAAS quoted string's content: Java's StreamTokenizer ends one at a line break and
    reads backslash escapes (a password from ``echo pw | base64`` ends in a newline)."""
    return (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r"))


def parse_net(net: Any, namespace: str, secrets: Secrets, report: Callable[[str, str], None]) -> KafkaAuth | None:
    """``spec.net`` -> KafkaAuth (None: nothing enabled, or problems reported)."""
    if not isinstance(net, Mapping):
        report("spec.net", f"must be a mapping (sasl, tls), got {type(net).__name__}")
        return None
    for key in net:
        if key not in ("sasl", "tls"):
            report(f"spec.net.{key}", "unknown field (known: sasl, tls)")
    sasl, tls = _section(net, "sasl", ("enable", "type", "user", "password"), report), \
        _section(net, "tls", ("enable", "caCert", "cert", "key"), report)
    if sasl is None and tls is None:
        return None

    def value(section: str, name: str, spec: Mapping[str, Any]) -> str | None:
        if spec.get(name) is None:
            return None
        return secret_value(spec[name], f"spec.net.{section}.{name}", namespace, secrets, report)

    options: dict[str, Any] = {}
    ok = True
    if sasl is not None:
        mechanism = _mechanism(value("sasl", "type", sasl), "spec.net.sasl.type", "SASL type ", report)
        ok = mechanism is not None
        user, password = value("sasl", "user", sasl), value("sasl", "password", sasl)
        for name, got in (("user", user), ("password", password)):
            if got is None and sasl.get(name) is None:
                report(f"spec.net.sasl.{name}", "is required when sasl is enabled")
        if user is None or password is None:
            ok = False
        options.update(sasl_mechanism=mechanism, username=user or "", password=password or "")
    if tls is not None:
        ca, cert, key = value("tls", "caCert", tls), value("tls", "cert", tls), value("tls", "key", tls)
        if (tls.get("cert") is None) != (tls.get("key") is None):
            report("spec.net.tls", "cert and key go together (a client certificate and its key)")
            ok = False
        ok = _tls_ok({"spec.net.tls.caCert": ca, "spec.net.tls.cert": cert}, ("spec.net.tls.key", key), report) and ok
        options.update(tls=True, ca_pem=ca, cert_pem=cert, key_pem=key)
    return KafkaAuth(**options) if ok else None


def _mechanism(raw: str | None, field: str, label: str, report: Callable[[str, str], None]) -> str | None:
    """The SASL mechanism a Secret's value names (none: PLAIN, Knative's default), or None
    after reporting one knflow does not support."""
    mechanism = (raw or "PLAIN").strip().upper()
    if mechanism not in SASL_MECHANISMS:
        report(field, f"{label}{mechanism!r} is not supported (knflow: {', '.join(SASL_MECHANISMS)})")
        return None
    return mechanism


def _tls_ok(certificates: Mapping[str, str | None], key: tuple[str, str | None],
            report: Callable[[str, str], None]) -> bool:
    """Whether the PEM certificates (by field) load and the key is one Kafka's Java client
    reads (PKCS#8 only; librdkafka would accept the others, so a check before the start
    would pass and the job's consumer fail); reports each problem at its field."""
    ok = True
    for where, pem in certificates.items():
        problem = check_pem(pem) if pem is not None else None
        if problem:
            report(where, f"the Secret's value {problem}")
            ok = False
    if key[1] is not None and _PKCS8_KEY not in key[1]:
        report(key[0], "must be an unencrypted PKCS#8 PEM key (-----BEGIN PRIVATE KEY-----), as Kafka's Java client "
                       "reads it; convert one with `openssl pkcs8 -topk8 -nocrypt -in key.pem`")
        ok = False
    return ok


#: Knative's Kafka broker Secret (``auth.secret.ref.name`` of the broker's ConfigMap).
BROKER_SECRET_KEYS = ("protocol", "sasl.mechanism", "user", "password", "ca.crt", "user.crt", "user.key")
_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def broker_auth(values: Mapping[str, str], where: str, report: Callable[[str, str], None]) -> KafkaAuth | None:
    """A KafkaAuth from a Secret in the format of Knative's Kafka broker (``protocol``,
    ``sasl.mechanism``, ``user``, ``password``, ``ca.crt``, ``user.crt``, ``user.key``);
    ``where`` names the Secret in problems. None after reporting a problem."""
    protocol = (values.get("protocol") or "PLAINTEXT").strip().upper()
    if protocol not in _PROTOCOLS:
        report(f"{where}: protocol", f"must be one of {', '.join(_PROTOCOLS)}, got {protocol!r}")
        return None
    options: dict[str, Any] = {"tls": protocol.endswith("SSL")}
    ok = True
    if protocol.startswith("SASL"):
        mechanism = _mechanism(values.get("sasl.mechanism"), f"{where}: sasl.mechanism", "", report)
        ok = mechanism is not None
        for name in ("user", "password"):
            if values.get(name) is None:
                report(f"{where}: {name}", f"is required with protocol {protocol}")
                ok = False
        options.update(sasl_mechanism=mechanism, username=values.get("user") or "",
                       password=values.get("password") or "")
    if options["tls"]:
        ca, cert, key = values.get("ca.crt"), values.get("user.crt"), values.get("user.key")
        if (cert is None) != (key is None):
            report(f"{where}: user.crt", "user.crt and user.key go together (a client certificate and its key)")
            ok = False
        ok = _tls_ok({f"{where}: ca.crt": ca, f"{where}: user.crt": cert}, (f"{where}: user.key", key), report) and ok
        options.update(ca_pem=ca, cert_pem=cert, key_pem=key)
    return KafkaAuth(**options) if ok else None


def _section(net: Mapping[str, Any], name: str, known: tuple[str, ...],
             report: Callable[[str, str], None]) -> Mapping[str, Any] | None:
    """``net.<name>`` when it is enabled, else None."""
    spec = net.get(name)
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        report(f"spec.net.{name}", f"must be a mapping, got {type(spec).__name__}")
        return None
    for key in spec:
        if key not in known:
            report(f"spec.net.{name}.{key}", f"unknown field (known: {', '.join(known)})")
    enable = spec.get("enable", False)
    if not isinstance(enable, bool):
        report(f"spec.net.{name}.enable", f"must be true or false, got {enable!r}")
        return None
    return spec if enable else None
