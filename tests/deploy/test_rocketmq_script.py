"""deploy/rocketmq.sh: usage, status, and what the session's real RocketMQ listens on."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.conftest import REPO, ROCKETMQ_GROUPS, ROCKETMQ_TOPICS

SCRIPT = REPO / "deploy" / "rocketmq.sh"


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([str(SCRIPT), *args], env=dict(os.environ, **(env or {})), capture_output=True, text=True,
                          timeout=60)


def test_usage_and_status_when_stopped(tmp_path):
    assert run("--help").returncode == 0 and "deploy/rocketmq.sh start" in run("--help").stdout
    assert run("start", "--bogus").returncode == 2
    status = run("status", "--dir", str(tmp_path))
    assert status.returncode == 1 and "rocketmq not running" in status.stdout
    assert run("stop", "--dir", str(tmp_path)).returncode == 0


def listeners() -> list[str]:
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2)")
    lines = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [line.split()[3] for line in lines if len(line.split()) > 3]


@pytest.mark.rocketmq
def test_running_service_seeds_and_binds(rocketmq):
    status = rocketmq.run("status", check=False)
    assert status.returncode == 0 and "rocketmq running" in status.stdout
    config = rocketmq.state_dir / "store" / "config"
    topics = json.loads((config / "topics.json").read_text())["topicConfigTable"]
    assert set(ROCKETMQ_TOPICS) <= set(topics)  # the broker adds its system topics
    groups = json.loads((config / "subscriptionGroup.json").read_text())["subscriptionGroupTable"]
    assert {g.split(":")[0] for g in ROCKETMQ_GROUPS} <= set(groups)
    # seeded at 0 (earliest); the broker rewrites the file in fastjson's dialect ({0:0}, not JSON)
    assert f'"{ROCKETMQ_TOPICS[0]}@knflow-g-wrap"' in (config / "consumerOffset.json").read_text()
    bound = listeners()
    namesrv = rocketmq.env["KNFLOW_ROCKETMQ_NAMESRV_PORT"]
    broker = rocketmq.env["KNFLOW_ROCKETMQ_BROKER_PORT"]
    proxy = rocketmq.env["KNFLOW_ROCKETMQ_PROXY_PORT"]
    on_port = lambda port: [a for a in bound if a.rsplit(":", 1)[1] == port]  # noqa: E731
    # loopback only where RocketMQ lets us say so...
    assert on_port(namesrv) and all("127.0.0.1" in a for a in on_port(namesrv))
    assert on_port(broker) and all("127.0.0.1" in a for a in on_port(broker))
    # ...and all interfaces where it does not (documented in the script's header)
    assert on_port(proxy) and not any("127.0.0.1" in a for a in on_port(proxy))
