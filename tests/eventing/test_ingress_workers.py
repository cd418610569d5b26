"""``knflow ingress --workers 2``: two processes serve one port (SO_REUSEPORT), each
storing what it accepts in the REAL Kafka; SIGTERM stops them all."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from eventing.plan import broker_topic
from tests.conftest import REPO
from tests.eventing.test_ingress import BINARY, consume
from tests.eventing.test_ingress_faults import wait_until
from tests.plans import broker_yaml
from tests.processes import stop

pytestmark = pytest.mark.kafka


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_two_workers_share_the_port(kafka, tmp_path: Path):
    import socket

    namespace = kafka.unique_topic("ns")
    manifest = tmp_path / "broker.yaml"
    manifest.write_text(broker_yaml("live", namespace))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "ingress", str(manifest), "--port", str(port),
         "--bootstrap-servers", kafka.bootstrap, "--workers", "2"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            try:
                return requests.get(base + "/readyz", timeout=5).status_code == 200
            except requests.RequestException:
                return process.poll() is not None and pytest.fail(process.stdout.read())
        wait_until(ready, 90, "ingress ready")
        assert len(children(process.pid)) == 2
        ids = [f"w-{n}" for n in range(20)]
        for event_id in ids:  # a new connection each: the kernel spreads them over the workers
            response = requests.post(f"{base}/{namespace}/live", headers=dict(BINARY, **{"ce-id": event_id}),
                                     data=b"{}", timeout=30)
            assert response.status_code == 202, response.text
        topic = broker_topic(namespace, "live")
        got = {dict(r.headers).get("ce_id") for r in consume(kafka.bootstrap, topic, len(ids), ids=[i.encode() for i in ids])}
        assert {i.encode() for i in ids} <= got
    finally:
        assert stop(process), "knflow ingress did not stop within 60 s of SIGTERM"
    deadline = time.time() + 30
    while time.time() < deadline and children(process.pid):
        time.sleep(0.2)
    assert process.returncode == 0, process.stdout.read()
