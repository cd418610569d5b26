"""The broker's own Kafka behind SASL: the Broker's ``spec.config`` names Knative's Kafka
broker ConfigMap, whose ``auth.secret.ref.name`` names a Secret in Knative's Kafka broker
format (``protocol``, ``sasl.mechanism``, ``user``, ``password``), all given among the
manifests. ``knflow ingress`` (granian) writes the event through Kafka's SASL_PLAINTEXT
listener, the job on Flink's mini-cluster creates its topics, reads the broker topic,
writes its outcome records and reads them back for its summary through the same listener
(a plaintext client there fails), and the trigger's consumer gets the event. The job is
given no ``--bootstrap-servers``: it takes the ConfigMap's ``bootstrap.servers``."""
from __future__ import annotations

import uuid

import pytest
import requests

from tests.consumers import ConsumerServer, accept
from tests.plans import configured_broker_yaml
from tests.eventing.test_ingress_http import CliProcess
from tests.pipelines.flink_harness import KnflowJob, summary_rows, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.slow]


def test_ingress_and_job_log_in_to_the_brokers_kafka_with_the_configmaps_secret(kafka, tmp_path):
    namespace = f"sec{uuid.uuid4().hex[:6]}"
    consumer = ConsumerServer(accept()).start()
    manifest = tmp_path / "m" / "broker.yaml"
    manifest.parent.mkdir()
    manifest.write_text(configured_broker_yaml(namespace, {"bootstrap.servers": kafka.sasl_bootstrap},
                                               kafka.broker_secret("SCRAM-SHA-256")) + f"""---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: gifts, namespace: {namespace}}}
spec:
  broker: live
  filter: {{attributes: {{type: com.live.gift.sent}}}}
  subscriber: {{uri: '{consumer.url}'}}
""")
    # no --bootstrap-servers: the job takes Kafka's address from the ConfigMap
    job = KnflowJob(manifest.parent, ["--job-name", namespace, "--checkpoint-interval", "2",
                                      "--checkpoint-dir", str(tmp_path / "ckpt")], tmp_path / "job.log")
    try:
        job.wait_running()
        with CliProcess(manifest, kafka.sasl_bootstrap) as ingress:
            headers = {"ce-specversion": "1.0", "ce-id": "g-1", "ce-source": "/live/1", "ce-type": "com.live.gift.sent",
                       "content-type": "application/json"}
            response = requests.post(f"http://127.0.0.1:{ingress.port}/{namespace}/live", headers=headers,
                                     data=b'{"coins": 5}', timeout=30)
            assert response.status_code == 202, response.text
        wait_until(lambda: len(consumer.requests) >= 1, 120, "the event at the trigger's consumer")
        output = job.stop()
    finally:
        job.stop()
        consumer.stop()
    [request] = consumer.requests
    assert request.headers["ce-id"] == "g-1" and request.body == b'{"coins": 5}'
    assert summary_rows(output)[f"{namespace}/gifts"]["delivered"] == 1  # outcomes read back through SASL


@pytest.mark.parametrize("command", ["run", "ingress"])
def test_a_broker_login_kafka_refuses_stops_the_command_with_the_reason(kafka, tmp_path, command):
    import subprocess
    import sys

    from tests.conftest import REPO

    manifest = tmp_path / "refused.yaml"
    manifest.write_text(configured_broker_yaml("refused", {}, kafka.broker_secret(password="wrong")))
    extra = ["--job-name", "refused"] if command == "run" else ["--port", "0"]
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", command, str(manifest), "--bootstrap-servers",
                             kafka.sasl_bootstrap, *extra], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"knflow {command}: Kafka at {kafka.sasl_bootstrap} refused group " in result.stderr, result.stderr
    assert "SASL authentication error" in result.stderr
