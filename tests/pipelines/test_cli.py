"""The knflow command line, run as users run it (a subprocess of the installed module)."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.consumers import ConsumerServer, accept

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "live-stream"


def knflow(*args: str, stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, capture_output=True,
                          text=True, input=stdin, timeout=timeout)


def test_validate_ok_and_errors(tmp_path):
    ok = knflow("validate", str(EXAMPLE))
    assert ok.returncode == 0 and "1 broker(s), 6 trigger(s)" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text((EXAMPLE / "broker.yaml").read_text() + """
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t, namespace: streaming}
spec:
  broker: lve
  filters: [{cel: 'data.x >'}]
  subscriber: {uri: 'http://x.local/'}
  delivery: {backoffDelay: 2s}
""")
    result = knflow("validate", str(bad))
    assert result.returncode == 1
    lines = [line.strip() for line in result.stderr.splitlines()]
    assert f"{bad}: Trigger/t: spec.broker: broker 'lve' not found in namespace 'streaming' (known: live)" in lines
    assert any(line.startswith(f"{bad}: Trigger/t: spec.filters[0].cel: invalid CEL expression at line 1") for line in lines)
    assert any(line.startswith(f"{bad}: Trigger/t: spec.delivery.backoffDelay: invalid ISO-8601 duration '2s'") for line in lines)


def test_commands_that_run_no_beam_pipeline_do_not_import_beam():
    # Beam's import takes seconds and warns about the cloud file systems it cannot load
    code = ("import sys, pipelines.cli as c\n"
            f"code = c.main(['validate', {str(EXAMPLE)!r}])\n"
            "c.build_parser()\n"
            "print(code, any(m.startswith('apache_beam') for m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines()[-1] == "0 False", (result.stdout, result.stderr)
    assert "GCSFileSystem" not in result.stderr


def test_plan_text_and_json():
    text = knflow("plan", str(EXAMPLE))
    assert text.returncode == 0 and "Broker streaming/live  topic=knative-broker-streaming-live" in text.stdout
    data = json.loads(knflow("plan", str(EXAMPLE), "--json").stdout)
    [broker] = data["brokers"]
    assert broker["topic"] == "knative-broker-streaming-live"
    triggers = {t["name"]: t for t in broker["triggers"]}
    assert triggers["gift-leaderboard"]["ordering"] == "ordered"
    assert triggers["gift-leaderboard"]["delivery"]["retry"] == 5
    assert triggers["moderation"]["engines"][0]["engine"] in ("compiled", "celpy")


def test_match_explains_and_json_lists_matches(tmp_path):
    event = tmp_path / "gift.json"
    event.write_text(json.dumps({"specversion": "1.0", "id": "g1", "source": "/rooms/1", "type": "com.live.gift.sent",
                                 "datacontenttype": "application/json",
                                 "data": {"coins": 500, "room": "room-1", "user": {"level": 40, "badges": ["vip"]}}}))
    data = json.loads(knflow("match", str(EXAMPLE), "--event", str(event), "--json").stdout)
    assert sorted(data["matched"]) == ["analytics", "gift-leaderboard", "vip-alerts"]
    text = knflow("match", str(EXAMPLE), "--event", str(event))
    assert "MATCH    streaming/live Trigger/gift-leaderboard" in text.stdout
    assert "cel: data.coins >= 100" in text.stdout and "3 of 6 trigger(s) match" in text.stdout
    bad = tmp_path / "bad.json"
    bad.write_text('{"specversion": "1.0", "id": "x"}')
    result = knflow("match", str(EXAMPLE), "--event", str(bad))
    assert result.returncode == 1 and f"{bad}:" in result.stderr and "source" in result.stderr


def run_example_on_beam_direct(*args: str) -> subprocess.CompletedProcess:
    """``knflow run`` of the live-stream example on the DirectRunner, every destination a
    path of one consumer that accepts everything."""
    consumer = ConsumerServer(accept(202)).start()
    try:
        refs = []
        for name in ("moderation", "leaderboard", "analytics", "presence", "vip", "notify", "dead-letters"):
            refs += ["--ref-url", f"{name}={consumer.url}{name}"]
        return knflow("run", str(EXAMPLE), "--runner", "beam-direct", "--events-file", str(EXAMPLE / "events.jsonl"),
                      *refs, *args)
    finally:
        consumer.stop()


def test_run_beam_direct_prints_the_summary(tmp_path):
    result = run_example_on_beam_direct("--dead-letter-file", str(tmp_path / "dl.jsonl"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Broker streaming/live: 302 record(s) read, 2 undecodable (dead-lettered)" in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith("streaming/analytics"))
    assert row.split()[1:3] == ["300", "300"]
    assert len((tmp_path / "dl.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("args,needle", [
    (["run", "nope.yaml", "--runner", "beam-direct", "--events-file", "x"], "nope.yaml: cannot read"),
    (["run", str(EXAMPLE), "--runner", "beam-direct"], "--events-file"),
    (["run", str(EXAMPLE), "--runner", "beam-direct", "--events-file", "/no/such/file"], "--events-file /no/such/file"),
    (["run", str(EXAMPLE), "--runner", "beam-direct", "--events-file", "x", "--ref-url", "oops"], "--ref-url 'oops'"),
    # no JobManager at the address ({closed}: a free port nothing listens on): the cluster commands say so
    (["stop", "0" * 32, "--jobmanager", "{closed}", "--savepoint-dir", "/tmp/sp"],
     "cannot reach the Flink JobManager at {closed}"),
    (["cancel", "0" * 32, "--jobmanager", "{closed}"], "cannot reach the Flink JobManager at {closed}"),
])
def test_usage_errors_exit_1_with_a_reason(args, needle):
    from tests.conftest import free_port

    closed = f"127.0.0.1:{free_port()}"
    args, needle = [arg.replace("{closed}", closed) for arg in args], needle.replace("{closed}", closed)
    result = knflow(*args)
    assert result.returncode == 1 and needle in result.stderr, result.stderr


def test_beam_main_takes_beam_pipeline_options():
    """The Beam entry point: KnflowOptions parsed the Beam way, Beam flags pass through."""
    consumer = ConsumerServer(accept(202)).start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pipelines.beam_main", "--manifest", str(EXAMPLE), "--events-file",
             str(EXAMPLE / "events.jsonl"),
             *[arg for name in ("moderation", "leaderboard", "analytics", "presence", "vip", "notify", "dead-letters")
               for arg in ("--ref-url", f"{name}={consumer.url}{name}")],
             "--runner", "DirectRunner", "--direct_num_workers", "1", "--concurrency", "8"],
            cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        consumer.stop()
    assert result.returncode == 0, result.stderr[-2000:]
    row = next(line for line in result.stdout.splitlines() if line.startswith("streaming/analytics"))
    assert row.split()[1:3] == ["300", "300"]


BUILD_JOB = """
import json, sys
from eventing.compiler import load_plan
from pipelines.cli import build_parser
from pipelines.flink_job import build_job
from pipelines.options import flink_options

options = flink_options(build_parser().parse_args(sys.argv[1:]))
env = build_job(load_plan(sys.argv[2]), options)
plan = json.loads(env.get_execution_plan())
config = env._j_stream_execution_environment.getConfiguration()
print(json.dumps({"buffer_timeout": env.get_buffer_timeout(), "limit": options.topics.max_record_bytes,
                  "batch": [options.batch_records, options.batch_delay_ms, options.batch_wait_ms],
                  "bundle_time": config.toMap().get("python.fn-execution.bundle.time"),
                  "mode": config.toMap().get("python.execution-mode"),
                  "pythonpath": config.toMap().get("python.pythonpath"),
                  "restore": [config.toMap().get("execution.state-recovery.path"),
                              config.toMap().get("execution.state-recovery.ignore-unclaimed-state")],
                  "operators": sorted({node["type"] for node in plan["nodes"]})}))
"""


@pytest.mark.flink
def test_job_options_reach_the_job():
    # In a process of its own: PyFlink, once imported, takes over Beam's bundle processing,
    # and the DirectRunner tests of this session share the pytest process.
    result = subprocess.run([sys.executable, "-c", BUILD_JOB, "run", str(EXAMPLE), "--max-record-bytes", "8388608",
                             "--buffer-timeout-ms", "7", "--batch-records", "123", "--batch-delay-ms", "3",
                             "--batch-wait-ms", "50", "--bundle-time-ms", "9", "--restore-from", "file:///tmp/sp-1",
                             "--allow-non-restored-state"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    built = json.loads(result.stdout.strip().splitlines()[-1])
    assert {k: built[k] for k in ("buffer_timeout", "limit", "batch", "bundle_time")} == {
        "buffer_timeout": 7, "limit": 8388608, "batch": [123, 3, 50], "bundle_time": "9"}
    assert built["restore"] == ["file:///tmp/sp-1", "true"]
    # the job's shape: the JVM batches and (un)packs around the one Python operator
    assert {"batch per partition", "decode, route, deliver", "unbatch"} <= set(built["operators"]), built["operators"]
    # thread mode by default, with this venv's packages and knflow's own on the embedded interpreter's path
    assert built["mode"] == "thread"
    assert str(REPO) in built["pythonpath"].split(os.pathsep)
    assert any(path.endswith("site-packages") and (Path(path) / "pemja").is_dir()
               for path in built["pythonpath"].split(os.pathsep)), built["pythonpath"]


def test_python_mode_defaults_to_thread_for_run_and_process_for_submit():
    from pipelines.cli import build_parser
    from pipelines.options import flink_options

    parser = build_parser()
    assert flink_options(parser.parse_args(["run", "m.yaml"])).python_mode == "thread"
    submit = parser.parse_args(["submit", "m.yaml", "--jobmanager", "h:8081"])
    assert flink_options(submit, python_mode="process").python_mode == "process"
    chosen = parser.parse_args(["submit", "m.yaml", "--jobmanager", "h:8081", "--python-mode", "thread"])
    assert flink_options(chosen, python_mode="process").python_mode == "thread"


def test_python_cpu_defaults_to_auto_and_reaches_the_delivering_function(capsys):
    from pipelines.cli import build_parser
    from pipelines.options import flink_options

    parser = build_parser()
    assert flink_options(parser.parse_args(["run", "m.yaml"])).python_cpu == "auto"
    options = flink_options(parser.parse_args(["submit", "m.yaml", "--jobmanager", "h:8081", "--python-cpu", "1"]),
                            python_mode="process")
    assert (options.python_cpu, options.python_mode) == ("1", "process")
    assert json.loads(json.dumps(dataclasses.asdict(options)))["python_cpu"] == "1"  # what submit ships
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "m.yaml", "--python-cpu", "all"])
    assert "--python-cpu: expected auto, off or a CPU number, got 'all'" in capsys.readouterr().err


def test_max_record_bytes_has_a_floor():
    result = knflow("run", str(EXAMPLE), "--max-record-bytes", "1000")
    assert result.returncode == 2 and "--max-record-bytes: must be at least 1048576 bytes, got 1000" in result.stderr
