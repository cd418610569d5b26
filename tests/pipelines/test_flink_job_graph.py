"""The Flink job's graph, built without running it: what a savepoint maps onto."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.flink]

REPO = Path(__file__).resolve().parents[2]

SOURCES = """---
apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata: {name: extra, namespace: ns}
spec:
  bootstrapServers: ["127.0.0.1:1"]
  topics: [extra-topic]
  sink: {uri: "http://127.0.0.1:1/"}
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: tick, namespace: ns}
spec:
  schedule: "* * * * *"
  sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: b}}
"""

# In a process of its own: PyFlink, once imported, takes over Beam's bundle processing,
# and the DirectRunner tests of this session share the pytest process.
OPERATOR_IDS = """
import json, sys
from pipelines.flink_job import FlinkJobOptions, build_job
from tests.plans import plan_from_yaml

out = []
for manifest in json.loads(sys.stdin.read()):
    env = build_job(plan_from_yaml(manifest), FlinkJobOptions(bootstrap_servers="127.0.0.1:1", job_name="graph"))
    graph = env._j_stream_execution_environment.getStreamGraph(False).getJobGraph()
    out.append({str(pair.getGeneratedOperatorID()): vertex.getName()
                for vertex in graph.getVerticesAsArray() for pair in vertex.getOperatorIDs()})
print(json.dumps(out))
"""


def test_a_new_source_leaves_every_operator_id_of_the_job_as_it_was():
    """Adding a KafkaSource and a PingSource to the manifests keeps the ids of the job's
    operators (fixed uids): a savepoint of the old job restores the delivering operator's
    state (held retries, ordered queues, deliveries in flight), the Batcher's and the
    broker topics' offsets. Without uids Flink derives the ids from the graph around each
    operator, and every id downstream of the new input changes."""
    if shutil.which("java") is None:
        pytest.skip("building a Flink job graph needs Java 17+")
    from tests.plans import broker_yaml, trigger_yaml

    base = broker_yaml() + trigger_yaml("a", "http://127.0.0.1:1/")
    result = subprocess.run([sys.executable, "-c", OPERATOR_IDS], input=json.dumps([base, base + SOURCES]),
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    before, after = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(before) < set(after), {"lost": [before[i] for i in set(before) - set(after)]}
    names = " ".join(after[i] for i in set(after) - set(before))
    assert "KafkaSource ns/extra" in names and "PingSource" in names
