"""Session-wide real services: one Kafka broker for the whole test session.

Started on first use (only sessions that run Kafka tests pay for it) through the
project's own deploy/kafka.sh, on free loopback ports with a throwaway state dir, and
stopped when the session ends.
"""
from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port_pair(count: int = 2) -> int:
    """A free loopback port whose ``count - 1`` successors are free too (Kafka's client,
    controller and SASL listeners), below the kernel's ephemeral port range: while a test has its Kafka stopped, a port of
    that range can become the local end of some client's outgoing connection, and Kafka's
    restart then fails with "Address already in use" (a clean-clone CI run met it on the
    controller port of the restart-under-load test)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10000, max(10000 + count, low - count))
        try:
            sockets = [socket.socket() for _ in range(count)]
            try:
                for offset, s in enumerate(sockets):
                    s.bind(("127.0.0.1", port + offset))
            finally:
                for s in sockets:
                    s.close()
        except OSError:
            continue
        return port
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1")


@dataclass
class KafkaService:
    bootstrap: str
    port: int
    state_dir: Path
    #: a SASL_PLAINTEXT listener (deploy/kafka.sh --sasl-port): user knflow, password SASL_PASSWORD
    sasl_port: int | None = None
    #: an SSL listener (--ssl-port) whose certificate (for 127.0.0.1) ``ssl_ca_pem`` signed
    ssl_port: int | None = None
    ssl_ca_pem: str = ""
    #: a SASL_SSL listener (--sasl-ssl-port): the SASL user over that certificate
    sasl_ssl_port: int | None = None

    SASL_PASSWORD = "knflow-secret"

    @property
    def sasl_bootstrap(self) -> str:
        assert self.sasl_port is not None, "this Kafka has no SASL listener"
        return f"127.0.0.1:{self.sasl_port}"

    def broker_secret(self, mechanism: str = "SCRAM-SHA-512", password: str | None = None) -> dict[str, str]:
        """A Secret's stringData in Knative's Kafka broker format for the SASL listener."""
        return {"protocol": "SASL_PLAINTEXT", "sasl.mechanism": mechanism, "user": "knflow",
                "password": self.SASL_PASSWORD if password is None else password}

    @property
    def ssl_bootstrap(self) -> str:
        assert self.ssl_port is not None, "this Kafka has no SSL listener"
        return f"127.0.0.1:{self.ssl_port}"

    @property
    def sasl_ssl_bootstrap(self) -> str:
        assert self.sasl_ssl_port is not None, "this Kafka has no SASL_SSL listener"
        return f"127.0.0.1:{self.sasl_ssl_port}"

    def run(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        env = dict(os.environ, KNFLOW_KAFKA_DIR=str(self.state_dir), KNFLOW_KAFKA_PORT=str(self.port),
                   KNFLOW_KAFKA_SASL_PORT=str(self.sasl_port or ""), KNFLOW_KAFKA_SASL_PASSWORD=self.SASL_PASSWORD,
                   KNFLOW_KAFKA_SSL_PORT=str(self.ssl_port or ""),
                   KNFLOW_KAFKA_SASL_SSL_PORT=str(self.sasl_ssl_port or ""),
                   KNFLOW_KAFKA_SSL_KEYSTORE=str(self.state_dir / "tls" / "keystore.pem"))
        return subprocess.run([str(REPO / "deploy" / "kafka.sh"), *args], env=env, check=check,
                              capture_output=True, text=True, timeout=timeout)

    def stop(self) -> None:
        self.run("stop", check=False)

    def start(self) -> None:
        result = self.run("start", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"deploy/kafka.sh start failed:\n{result.stdout}\n{result.stderr}")

    def unique_topic(self, prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _kafka_keystore(directory: Path) -> str:
    """A throwaway CA's certificate for 127.0.0.1 in ``directory/keystore.pem`` (Kafka's PEM
    keystore: an unencrypted PKCS#8 key, then the chain); returns the CA's PEM."""
    import trustme
    from cryptography.hazmat.primitives import serialization

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "keystore.pem").write_bytes(pkcs8 + b"".join(c.bytes() for c in leaf.cert_chain_pems))
    return ca.cert_pem.bytes().decode("ascii")


@pytest.fixture(scope="session")
def kafka() -> KafkaService:
    if shutil.which("java") is None:
        pytest.skip("Kafka tests need Java 17+ on PATH")
    port = free_port_pair(5)
    keep = os.environ.get("KNFLOW_TEST_KAFKA_DIR")  # keep the broker's state and log for debugging
    state = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="knflow-kafka-"))
    state.mkdir(parents=True, exist_ok=True)
    service = KafkaService(f"127.0.0.1:{port}", port, state, sasl_port=port + 2, ssl_port=port + 3,
                           ssl_ca_pem=_kafka_keystore(state / "tls"), sasl_ssl_port=port + 4)
    service.start()
    try:
        yield service
    finally:
        service.stop()
        if not keep:
            shutil.rmtree(state, ignore_errors=True)


# --------------------------------------------------------------------------- RocketMQ

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "rocketmq: needs the local RocketMQ 5 (name server + proxy), started once per "
                                       "session by tests/conftest.py through deploy/rocketmq.sh")


#: Topics and consumer groups the RocketMQ tests use. RocketMQ 5's gRPC clients cannot create
#: either, so deploy/rocketmq.sh seeds them before the broker starts. NAME:earliest groups
#: start at offset 0; the others where RocketMQ starts a new group.
ROCKETMQ_TOPICS = ("knflow-t-wrap", "knflow-t-tags", "knflow-t-redeliver", "knflow-t-kill", "knflow-t-job",
                   "knflow-t-sasl")
ROCKETMQ_GROUPS = ("knflow-g-wrap:earliest", "knflow-g-tags:earliest", "knflow-g-redeliver:earliest",
                   "knflow-g-kill:earliest", "knflow-g-job-direct:earliest", "knflow-g-job-broker:earliest",
                   "knflow-g-sasl:earliest")


def free_port(avoid: set[int] = frozenset()) -> int:
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in avoid and port < 65000:
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def free_port_run(length: int, avoid: set[int] = frozenset()) -> int:
    """The first of ``length`` consecutive free loopback ports."""
    for _ in range(100):
        first = free_port(avoid)
        ports = range(first, first + length)
        if any(p in avoid or p > 65000 for p in ports):
            continue
        try:
            for p in ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no {length} consecutive free ports on 127.0.0.1")


@dataclass
class RocketMQService:
    endpoints: str          # the proxy's gRPC endpoint, for clients
    namesrv: str
    state_dir: Path
    env: dict

    def run(self, *args: str, check: bool = True, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run([str(REPO / "deploy" / "rocketmq.sh"), *args], env=dict(os.environ, **self.env),
                              check=check, capture_output=True, text=True, timeout=timeout)

    def start(self) -> None:
        result = self.run("start", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"deploy/rocketmq.sh start failed:\n{result.stdout}\n{result.stderr}")

    def stop(self) -> None:
        self.run("stop", check=False)


@pytest.fixture(scope="session")
def rocketmq() -> RocketMQService:
    if shutil.which("java") is None:
        pytest.skip("RocketMQ tests need Java 17+ on PATH")
    keep = os.environ.get("KNFLOW_TEST_ROCKETMQ_DIR")
    state = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="knflow-rocketmq-"))
    state.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):  # a port found free can be taken before the JVM binds it: new ports, again
        broker = free_port_run(4)              # fast port, (unused), listen port, HA port
        used = set(range(broker, broker + 4))
        namesrv = free_port(used)
        used.add(namesrv)
        proxy = free_port(used)
        used.add(proxy)
        remoting = free_port(used)
        env = {
            "KNFLOW_ROCKETMQ_DIR": str(state), "KNFLOW_ROCKETMQ_NAMESRV_PORT": str(namesrv),
            "KNFLOW_ROCKETMQ_PROXY_PORT": str(proxy), "KNFLOW_ROCKETMQ_REMOTING_PORT": str(remoting),
            "KNFLOW_ROCKETMQ_BROKER_PORT": str(broker + 2),
            "KNFLOW_ROCKETMQ_TOPICS": ",".join(ROCKETMQ_TOPICS), "KNFLOW_ROCKETMQ_GROUPS": ",".join(ROCKETMQ_GROUPS),
        }
        service = RocketMQService(f"127.0.0.1:{proxy}", f"127.0.0.1:{namesrv}", state, env)
        try:
            service.start()
            break
        except RuntimeError as exc:
            if attempt == 2 or "BindException" not in str(exc):
                raise
    try:
        yield service
    finally:
        service.stop()
        if not keep:
            shutil.rmtree(state, ignore_errors=True)
