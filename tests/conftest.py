"""Session-wide real services: one Kafka broker for the whole test session.

Started on first use (only sessions that run Kafka tests pay for it) through the
project's own deploy/kafka.sh, on free loopback ports with a throwaway state dir, and
stopped when the session ends.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port_pair() -> int:
    """A free loopback port whose successor is free too (client + controller listeners)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 65000:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair on 127.0.0.1")


@dataclass
class KafkaService:
    bootstrap: str
    port: int
    state_dir: Path

    def run(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        env = dict(os.environ, KNFLOW_KAFKA_DIR=str(self.state_dir), KNFLOW_KAFKA_PORT=str(self.port))
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


@pytest.fixture(scope="session")
def kafka() -> KafkaService:
    if shutil.which("java") is None:
        pytest.skip("Kafka tests need Java 17+ on PATH")
    port = free_port_pair()
    keep = os.environ.get("KNFLOW_TEST_KAFKA_DIR")  # keep the broker's state and log for debugging
    state = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="knflow-kafka-"))
    state.mkdir(parents=True, exist_ok=True)
    service = KafkaService(f"127.0.0.1:{port}", port, state)
    service.start()
    try:
        yield service
    finally:
        service.stop()
        if not keep:
            shutil.rmtree(state, ignore_errors=True)
