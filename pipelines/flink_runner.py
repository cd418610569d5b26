"""Run the Flink job: on the embedded mini-cluster (``knflow run``), or submitted to a
Flink cluster (``knflow submit``), and manage cluster jobs (``knflow jobs`` / ``cancel``)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from eventing.plan import Plan
from filters.errors import KnflowError
from pipelines.flink_job import REPO, FlinkJobOptions, build_job, prepare_local_jvm, prepare_topics

SUMMARY_KINDS = {"delivered": "delivered", "retried": "retried", "dead_lettered": "dead_lettered", "replied": "replies"}


def _end_offsets(bootstrap: str, topic: str, config: Mapping[str, Any] | None = None) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, **(config or {}))
    try:
        partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: off for tp, off in consumer.end_offsets(partitions).items()} if partitions else {}
    finally:
        consumer.close()


def read_outcomes(bootstrap: str, topic: str, start: Mapping[int, int],
                  config: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Outcome documents written since ``start`` offsets (partition -> offset); a record
    holds one or more, as JSON lines. ``config``: more kafka-python settings (the login)."""
    from kafka import KafkaConsumer, TopicPartition

    end = _end_offsets(bootstrap, topic, config)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=2000,
                             **(config or {}))
    out: list[dict[str, Any]] = []
    try:
        partitions = [TopicPartition(topic, p) for p in end]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, start.get(tp.partition, 0))
        remaining = {p for p in end if end[p] > start.get(p, 0)}
        deadline = time.time() + 30
        while remaining and time.time() < deadline:
            for message in consumer:
                out.extend(json.loads(line) for line in message.value.splitlines() if line)
                if message.offset + 1 >= end[message.partition]:
                    remaining.discard(message.partition)
                if not remaining:
                    break
    finally:
        consumer.close()
    return out


def summarize(plan: Plan, outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    counts: dict[str, Counter] = defaultdict(Counter)
    records = undecodable = 0
    for doc in outcomes:
        kind = doc.get("k")
        if kind == "routed":
            records += 1
            for trigger in doc.get("triggers", []):
                counts[trigger]["matched"] += 1
        elif kind == "undecodable":
            records += 1
            undecodable += 1
        elif kind in SUMMARY_KINDS:
            counts[doc["t"]][SUMMARY_KINDS[kind]] += 1
    columns = ("matched", "delivered", "retried", "dead_lettered", "replies")
    return {"records": records, "undecodable": undecodable,
            "triggers": {t.key: {c: counts[t.key][c] for c in columns} for t in plan.delivery_triggers()}}


def run_local(plan: Plan, options: FlinkJobOptions, *, duration: float = 0.0, partitions: int = 4,
              on_started=None) -> dict[str, Any] | None:
    """Run on the embedded mini-cluster until ``duration`` seconds pass (0: until SIGINT/SIGTERM).

    Returns the summary of what this run did (from the outcomes topic), or None if
    outcome records are disabled.
    """
    prepare_local_jvm()
    prepare_topics(plan, options, partitions)
    topics = options.topics
    login = plan.kafka_python_config()
    start = _end_offsets(options.bootstrap_servers, topics.outcomes, login) if topics.outcomes else {}
    client = build_job(plan, options).execute_async(f"knflow-{options.job_name}")
    print(f"knflow: job {client.get_job_id()} running on the embedded Flink mini-cluster "
          f"(brokers: {', '.join(b.topic for b in plan.brokers) or 'none'}"
          + "".join(f"; {s.kind} {s.key}" for s in plan.sources) + ")", flush=True)
    if on_started:
        on_started(str(client.get_job_id()))

    # A signal only sets a flag (a plain one: Event.set could wait on a lock the interrupted
    # thread holds). Raised from the handler, it could land inside a py4j call and break
    # that call's connection: py4j then raised its own error and the run ended without its
    # summary (seen in a CI run)
    requested: list[int] = []

    def stop(signum, frame):
        requested.append(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    stopped = False
    try:
        deadline = time.time() + duration if duration > 0 else None
        while deadline is None or time.time() < deadline:
            time.sleep(0.5)
            if requested:
                break
            status = str(client.get_job_status().result())
            if status in ("FAILED", "CANCELED", "FINISHED"):
                raise KnflowError(f"the Flink job ended unexpectedly: {status}")
        stopped = True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if stopped and options.savepoint_dir:
            path = stop_with_savepoint(client, options.savepoint_dir)
            print(f"knflow: job stopped with a savepoint: {path} (restore it with --restore-from {path})", flush=True)
        else:
            try:
                client.cancel().result()
            except Exception:  # already gone
                pass
    if not topics.outcomes:
        return None
    return summarize(plan, read_outcomes(options.bootstrap_servers, topics.outcomes, start, login))


def _savepoint_target(directory: str) -> str:
    """A savepoint directory as Flink takes it: a URI, a local path made one."""
    return directory if "://" in directory else "file://" + str(Path(directory).resolve())


def stop_with_savepoint(client: Any, directory: str) -> str:
    """Stop the job with a savepoint in ``directory`` (sources stop, a final savepoint, then
    the job ends: nothing runs after the state it holds); returns the savepoint's path."""
    from pyflink.java_gateway import get_gateway

    target = _savepoint_target(directory)
    jvm = get_gateway().jvm
    try:
        return str(client._j_job_client.stopWithSavepoint(
            False, target, jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL).get())
    except Exception as exc:
        try:
            client.cancel().result()
        except Exception:  # already gone
            pass
        raise KnflowError(f"stopping the job with a savepoint in {directory} failed (the job was cancelled): "
                          f"{str(exc).splitlines()[0] if str(exc) else exc!r}") from None


# --- a Flink cluster -------------------------------------------------------------------

def pyflink_bin() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent / "bin"


def submit(manifests: Sequence[str], jobmanager: str, plan: Plan, options: FlinkJobOptions,
           partitions: int = 4) -> str:
    """Submit the job detached with ``flink run -py``; returns the Flink job id.

    The entry point gets the manifests and the job options as JSON, so the cluster runs
    exactly what ``knflow run`` would.
    """
    import dataclasses

    prepare_topics(plan, options, partitions)
    entry = REPO / "pipelines" / "flink_entry.py"
    command = [str(pyflink_bin() / "flink"), "run", "-d", "-m", jobmanager,
               "-pyclientexec", sys.executable, "-pyexec", sys.executable,
               "-py", str(entry), "--options-json", json.dumps(dataclasses.asdict(options)),
               *[str(Path(m).resolve()) for m in manifests]]
    env = dict(os.environ)
    env.setdefault("FLINK_LOG_DIR", str(REPO / ".run" / "flink-logs"))
    Path(env["FLINK_LOG_DIR"]).mkdir(parents=True, exist_ok=True)
    # The client zips the shipped packages into java.io.tmpdir (Flink's JobGraphUtils:
    # flink-distributed-cache-<job id>) and leaves them there once the job is uploaded:
    # a scratch directory of this submission holds them, removed when `flink run` returns
    # (unless its path has a space: bin/flink splits JVM_ARGS on spaces).
    with tempfile.TemporaryDirectory(prefix="knflow-submit-") as scratch:
        if not any(c.isspace() for c in scratch):
            env["JVM_ARGS"] = f"{env.get('JVM_ARGS', '')} -Djava.io.tmpdir={scratch}".strip()
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    match = re.search(r"JobID ([0-9a-f]{32})", proc.stdout + proc.stderr)
    if proc.returncode != 0 or not match:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise KnflowError(f"flink run failed (exit {proc.returncode}):\n{tail}")
    return match.group(1)


def _rest(jobmanager: str, path: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
    url = f"http://{jobmanager}{path}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = response.read()
    except urllib.error.HTTPError as exc:
        raise KnflowError(f"{method} {url}: HTTP {exc.code}: {exc.read().decode(errors='replace')[:300]}") from None
    except urllib.error.URLError as exc:
        raise KnflowError(f"cannot reach the Flink JobManager at {jobmanager}: {exc.reason}") from None
    return json.loads(answer) if answer else None


def list_jobs(jobmanager: str) -> list[dict[str, Any]]:
    return _rest(jobmanager, "/jobs/overview")["jobs"]


def cancel(jobmanager: str, job_id: str) -> None:
    _rest(jobmanager, f"/jobs/{job_id}?mode=cancel", method="PATCH")


def stop(jobmanager: str, job_id: str, savepoint_dir: str, timeout_s: float = 300.0) -> str:
    """Stop a job on a cluster with a savepoint in ``savepoint_dir`` (Flink's REST
    ``/jobs/<id>/stop``: the sources stop, a final savepoint is taken, then the job ends;
    nothing runs after the state it holds); returns the savepoint's path, which
    ``knflow submit --restore-from`` resumes. The directory is as the JobManager sees it."""
    target = _savepoint_target(savepoint_dir)
    trigger = _rest(jobmanager, f"/jobs/{job_id}/stop", method="POST",
                    body={"targetDirectory": target, "drain": False})["request-id"]
    deadline = time.monotonic() + timeout_s
    while True:
        status = _rest(jobmanager, f"/jobs/{job_id}/savepoints/{trigger}")
        if status["status"]["id"] == "COMPLETED":
            operation = status.get("operation") or {}
            if "location" in operation:
                return operation["location"]
            cause = (operation.get("failure-cause") or {}).get("stack-trace", "unknown cause")
            raise KnflowError(f"stopping job {job_id} with a savepoint in {savepoint_dir} failed: "
                              f"{cause.strip().splitlines()[0]}")
        if time.monotonic() > deadline:
            raise KnflowError(f"job {job_id}: no savepoint after {timeout_s:.0f} s (the job still runs)")
        time.sleep(0.5)
