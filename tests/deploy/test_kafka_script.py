"""deploy/kafka.sh really starts a KRaft broker, serves records with headers, and stops clean.

Self-contained: its own broker on free ports with its own state dir, independent of any
session-wide broker (tests/conftest.py).
"""
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO / "deploy" / "kafka.sh"

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("java") is None, reason="needs Java 17+ on PATH"),
]


def _free_port_pair():
    """Two free loopback ports (client, controller)."""
    from tests.conftest import free_port_pair

    port = free_port_pair()
    return port, port + 1


def _port_open(port):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _run(cmd, env, timeout=180):
    # cwd is deliberately not the repo: the script must find its root from its own path
    return subprocess.run([str(KAFKA_SH), cmd], env=env, cwd="/", capture_output=True,
                          text=True, timeout=timeout)


def test_start_produce_consume_with_headers_stop(tmp_path):
    port, controller_port = _free_port_pair()
    state_dir = tmp_path / "kafka"
    env = dict(os.environ,
               KNFLOW_KAFKA_PORT=str(port),
               KNFLOW_KAFKA_CONTROLLER_PORT=str(controller_port),
               KNFLOW_KAFKA_DIR=str(state_dir))

    assert _run("status", env).returncode == 1
    started = _run("start", env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        pid = int((state_dir / "kafka.pid").read_text())
        assert _pid_alive(pid)
        assert _port_open(port)
        assert _run("status", env).returncode == 0
        # a second start is a no-op on the running broker
        again = _run("start", env)
        assert again.returncode == 0 and int((state_dir / "kafka.pid").read_text()) == pid

        from kafka import KafkaConsumer, KafkaProducer

        topic = f"deploy-test-{uuid.uuid4().hex[:8]}"  # auto-created on first produce
        bootstrap = f"127.0.0.1:{port}"
        headers = [("ce_specversion", b"1.0"), ("ce_id", b"abc-1"),
                   ("ce_type", b"dev.knflow.test"), ("ce_source", b"/tests/deploy"),
                   ("content-type", b"application/json")]
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        meta = producer.send(topic, key=b"k1", value=b'{"hello": "kafka"}',
                             headers=headers).get(timeout=60)
        producer.close()
        assert meta.offset == 0

        consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="deploy-test",
                                 auto_offset_reset="earliest", consumer_timeout_ms=20000)
        try:
            records = []
            deadline = time.monotonic() + 60
            while not records and time.monotonic() < deadline:
                records = [r for batch in consumer.poll(timeout_ms=1000).values() for r in batch]
            consumer.commit()
        finally:
            consumer.close()
        assert [(r.key, r.value, r.headers) for r in records] == [
            (b"k1", b'{"hello": "kafka"}', headers)]
    finally:
        stopped = _run("stop", env)

    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not _pid_alive(pid)
    assert not _port_open(port)
    assert not _port_open(controller_port)
    assert not (state_dir / "kafka.pid").exists()
    assert _run("status", env).returncode == 1
    # stop is idempotent
    assert _run("stop", env).returncode == 0
