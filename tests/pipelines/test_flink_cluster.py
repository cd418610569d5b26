"""The knflow job on a REAL standalone Flink cluster (deploy/flink-cluster.sh), fed through a
real ingress and Kafka, delivering to real HTTP consumers.

One cluster for the module (free REST/RPC ports, its own state dir), started and stopped
through the project's script; the job goes there with ``knflow submit`` and is managed with
``knflow jobs`` / ``knflow cancel``, exactly as a user would.

1. A healthy run: every consumer gets exactly the events its trigger selects, once; a
   consumer answering 400 sends its events to the deadLetterSink; cancel ends the job.
   Stopped with a savepoint and submitted again from it, a job resumes where it stopped.
2. A TaskManager killed with SIGKILL mid-stream: a new TaskManager takes over, the job
   restores its last checkpoint, and every event the ingress acknowledged still reaches its
   consumers (at least once; the duplicates are measured and reported), an ordered
   trigger's first deliveries still follow each partition key's order, and the killed
   TaskManager's Python workers exit (``pipelines.worker_exit``).
"""
from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

from eventing.compiler import load_plan
from eventing.ingress import Ingress, KafkaWriter
from tests.consumers import ConsumerServer, Reply, accept, always
from tests.eventing.test_ingress import AppThread
from tests.processes import cmdline, descendants, start_time, thread_cpus

pytestmark = [pytest.mark.flink, pytest.mark.kafka, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "flink-cluster.sh"
TIMEOUT = 180.0  # seconds: the bound on every wait (submission, delivery, recovery)
JOB_ID = re.compile(r"[0-9a-f]{32}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], Any], what: str, timeout: float = TIMEOUT, interval: float = 0.5,
             diagnose: Callable[[], str] | None = None) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = diagnose() if diagnose else ""
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{detail}")
        time.sleep(interval)


def knflow(*args: str, timeout: float = TIMEOUT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The installed ``knflow`` command (the venv's entry point), as a user runs it."""
    exe = Path(sys.executable).with_name("knflow")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "pipelines.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=dict(os.environ, **(env or {})))


# --- the cluster ----------------------------------------------------------------------------

@dataclass
class FlinkCluster:
    state_dir: Path
    rest_port: int
    rpc_port: int

    @property
    def jobmanager(self) -> str:
        return f"127.0.0.1:{self.rest_port}"

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, KNFLOW_FLINK_DIR=str(self.state_dir), KNFLOW_FLINK_REST_PORT=str(self.rest_port),
                    KNFLOW_FLINK_RPC_PORT=str(self.rpc_port), KNFLOW_PYTHON=sys.executable,
                    KNFLOW_FLINK_START_TIMEOUT=str(int(TIMEOUT)))

    def script(self, *args: str, timeout: float = TIMEOUT + 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def rest(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://{self.jobmanager}{path}", timeout=10) as response:
            return json.loads(response.read())

    def job(self, job_id: str) -> dict[str, Any]:
        return self.rest(f"/jobs/{job_id}")

    def checkpoints(self, job_id: str) -> dict[str, Any]:
        return self.rest(f"/jobs/{job_id}/checkpoints")

    def trigger_checkpoint(self, job_id: str) -> dict[str, Any]:
        """A checkpoint now (REST ``POST /jobs/:id/checkpoints``); returns it once completed."""
        request = urllib.request.Request(f"http://{self.jobmanager}/jobs/{job_id}/checkpoints", method="POST",
                                         data=b"{}", headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            trigger = json.loads(response.read())["request-id"]

        def done() -> dict[str, Any] | None:
            status = self.rest(f"/jobs/{job_id}/checkpoints/{trigger}")
            if status["status"]["id"] != "COMPLETED":
                return None
            if status["operation"].get("failure-cause"):
                pytest.fail(f"checkpoint {trigger} failed: {status['operation']['failure-cause']}")
            return status["operation"]

        checkpoint_id = wait_for(done, f"the checkpoint triggered by {trigger}")["checkpointId"]
        return next(c for c in self.checkpoints(job_id)["history"] if c["id"] == checkpoint_id)

    def tasks_running(self, job_id: str) -> bool:
        job = self.job(job_id)
        return job["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in job["vertices"])

    def diagnose(self, job_id: str) -> str:
        try:
            job = self.job(job_id)
            lines = [f"job {job_id}: {job['state']}; tasks: "
                     + ", ".join(f"{v['name'][:40]}={v['status']}" for v in job["vertices"])]
            root = self.rest(f"/jobs/{job_id}/exceptions").get("exceptionHistory", {}).get("entries", [])
            if root:
                lines.append("last exception: " + root[0]["stacktrace"][:1500])
            return "\n".join(lines)
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            return f"(no job details: {exc})"

    def worker_log(self, lines: int = 40) -> str:
        """The last ``lines`` of what knflow's Python code logged in the TaskManagers (their
        logs and .out files), and their errors: diagnostics of a failed wait."""
        wanted = ("/transforms/", "/pipelines/", "/eventing/", "ERROR", "Traceback")
        found = []
        for path in sorted((self.state_dir / "log").glob("*taskexecutor*")):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            found += [f"{path.name}: {line[:300]}" for line in text.splitlines() if any(w in line for w in wanted)]
        return "TaskManager log (knflow lines, errors):\n" + "\n".join(found[-lines:])

    def taskmanager_pids(self) -> list[int]:
        """Live TaskManagers of THIS cluster: from the script's pid file, checked against
        /proc (a TaskManagerRunner whose command line names our state dir)."""
        pids = []
        for pid_file in (self.state_dir / "pid").glob("flink-knflow-taskexecutor.pid"):
            for line in pid_file.read_text().split():
                if not line.isdigit():
                    continue
                command = cmdline(int(line))
                if "TaskManagerRunner" in command and str(self.state_dir) in command:
                    pids.append(int(line))
        return pids

    def leftover_processes(self) -> list[str]:
        """Every process of this cluster still alive: JobManager/TaskManager JVMs (our state
        dir on their command line) and Python workers (our conf dir in their environment)."""
        conf = f"FLINK_CONF_DIR={self.state_dir / 'conf'}".encode()
        left = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            command = cmdline(int(proc.name))
            try:
                environ = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                environ = []
            if str(self.state_dir) in command or conf in environ:
                left.append(f"{proc.name}: {command[:160]}")
        return left


@pytest.fixture(scope="module")
def flink():
    if shutil.which("java") is None:
        pytest.skip("the Flink cluster needs Java 17+ on PATH")
    state = Path(tempfile.mkdtemp(prefix="knflow-flink-cluster-"))
    rest_port = free_port()
    rpc_port = free_port()
    while rpc_port == rest_port:
        rpc_port = free_port()
    cluster = FlinkCluster(state, rest_port, rpc_port)
    started = cluster.script("start")
    if started.returncode != 0:
        cluster.script("stop")
        shutil.rmtree(state, ignore_errors=True)
        pytest.fail(f"deploy/flink-cluster.sh start failed:\n{started.stdout}\n{started.stderr}")
    print(f"\n{started.stdout.strip()}")
    try:
        yield cluster
    finally:
        stopped = cluster.script("stop")
        left = cluster.leftover_processes()
        shutil.rmtree(state, ignore_errors=True)
        assert stopped.returncode == 0, f"deploy/flink-cluster.sh stop failed:\n{stopped.stdout}\n{stopped.stderr}"
        assert not left, "processes of the cluster still running after stop:\n" + "\n".join(left)


# --- the knflow side: manifests, consumers, events ------------------------------------------

MANIFESTS = """\
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: shop, namespace: {ns}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: orders, namespace: {ns}}}
spec:
  broker: shop
  filters:
    - exact: {{type: com.shop.order.created}}
  subscriber:
    ref: {{apiVersion: v1, kind: Service, name: orders}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: big-payments, namespace: {ns}}}
spec:
  broker: shop
  filters:
    - cel: 'type == "com.shop.payment.settled" && data.amount >= 100'
  subscriber:
    ref: {{apiVersion: v1, kind: Service, name: payments}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: refunds, namespace: {ns}}}
spec:
  broker: shop
  filters:
    - exact: {{type: com.shop.refund.requested}}
  subscriber:
    ref: {{apiVersion: v1, kind: Service, name: refunds}}
  delivery:
    retry: 2
    backoffDelay: PT0.1S
    deadLetterSink:
      ref: {{apiVersion: v1, kind: Service, name: dead-letters}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: chat
  namespace: {ns}
  annotations: {{kafka.eventing.knative.dev/delivery.order: ordered}}
spec:
  broker: shop
  filters:
    - exact: {{type: com.shop.cart.viewed}}
  subscriber:
    ref: {{apiVersion: v1, kind: Service, name: chat}}
"""
ROOMS = 3  # partition keys of the ordered trigger's events
TYPES = ("com.shop.order.created", "com.shop.payment.settled", "com.shop.refund.requested", "com.shop.cart.viewed")
REFUSAL = b"refund rejected: no such order"


@dataclass
class Shop:
    """The broker's manifests in a fresh namespace and the four real consumers behind them."""

    manifests: Path
    namespace: str
    consumers: dict[str, ConsumerServer] = field(default_factory=dict)

    @classmethod
    def start(cls, directory: Path, namespace: str) -> "Shop":
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "shop.yaml"
        path.write_text(MANIFESTS.format(ns=namespace))
        shop = cls(path, namespace)
        behaviours = {"orders": accept(), "payments": accept(202), "refunds": always(400, REFUSAL),
                      "dead-letters": accept(202), "chat": accept()}
        for name, behaviour in behaviours.items():
            shop.consumers[name] = ConsumerServer(behaviour).start()
        return shop

    def stop(self) -> None:
        for consumer in self.consumers.values():
            consumer.stop()

    def ref_urls(self) -> list[str]:
        return [arg for name, c in self.consumers.items() for arg in ("--ref-url", f"{name}={c.url}")]

    def received(self, name: str) -> list[str]:
        return [r.headers.get("ce-id", "") for r in list(self.consumers[name].requests)]


def make_events(prefix: str, count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"id": f"{prefix}-{i:04d}", "type": TYPES[i % len(TYPES)], "amount": rng.randrange(0, 200), "n": i}
            for i in range(count)]


def expected(events: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Which consumer must get which event ids: the triggers' filters, written out by hand."""
    out: dict[str, set[str]] = {"orders": set(), "payments": set(), "refunds": set(), "dead-letters": set(),
                                "chat": set()}
    for e in events:
        if e["type"] == "com.shop.order.created":
            out["orders"].add(e["id"])
        elif e["type"] == "com.shop.payment.settled" and e["amount"] >= 100:
            out["payments"].add(e["id"])
        elif e["type"] == "com.shop.refund.requested":
            out["refunds"].add(e["id"])
            out["dead-letters"].add(e["id"])
        elif e["type"] == "com.shop.cart.viewed":
            out["chat"].add(e["id"])
    return out


def room(event: dict[str, Any]) -> str:
    return f"room-{event['n'] % ROOMS}"


def out_of_order(shop: Shop, accepted: list[dict[str, Any]]) -> dict[str, tuple[list[str], list[str]]]:
    """Per partition key of the ordered trigger: (accepted order, order of FIRST deliveries)
    where they differ. Repeats after a restore are allowed (at least once); a first
    delivery that overtakes an earlier event of its key is not."""
    keys = {e["id"]: room(e) for e in accepted if e["type"] == "com.shop.cart.viewed"}
    wanted: dict[str, list[str]] = {}
    for event_id in keys:
        wanted.setdefault(keys[event_id], []).append(event_id)
    firsts: dict[str, list[str]] = {key: [] for key in wanted}
    for event_id in dict.fromkeys(shop.received("chat")):
        firsts[keys[event_id]].append(event_id)
    return {key: (ids, firsts[key]) for key, ids in wanted.items() if firsts[key] != ids}


def post(session: requests.Session, url: str, event: dict[str, Any]) -> int:
    """One event, binary mode for even ``n``, structured mode for odd ``n``."""
    data = {"amount": event["amount"], "n": event["n"]}
    if event["n"] % 2:
        doc = {"specversion": "1.0", "id": event["id"], "source": "/shop/tests", "type": event["type"],
               "partitionkey": room(event), "datacontenttype": "application/json", "data": data}
        response = session.post(url, data=json.dumps(doc), timeout=30,
                                headers={"content-type": "application/cloudevents+json"})
    else:
        response = session.post(url, data=json.dumps(data), timeout=30, headers={
            "ce-specversion": "1.0", "ce-id": event["id"], "ce-source": "/shop/tests", "ce-type": event["type"],
            "ce-partitionkey": room(event), "content-type": "application/json"})
    return response.status_code


class IngressServer:
    """The broker ingress (the same app ``knflow ingress`` serves) on a background thread."""

    def __init__(self, manifests: Path, bootstrap: str) -> None:
        plan = load_plan([str(manifests)])
        self.writer = KafkaWriter(bootstrap)
        self.ingress = Ingress(plan, self.writer)
        self.thread = AppThread(self.ingress.app())
        self.path = plan.brokers[0].ingress_path

    def __enter__(self) -> str:
        return self.thread.__enter__() + self.path

    def __exit__(self, *exc: object) -> None:
        self.thread.__exit__(*exc)
        self.writer.close()


def submit(flink: FlinkCluster, kafka, manifests: Path, ref_urls: list[str], job_name: str, checkpoints: Path,
           *options: str) -> str:
    """``knflow submit`` as a user runs it (checkpoints every 2 s unless ``options`` say
    otherwise); returns the job id."""
    result = knflow("submit", str(manifests), "--jobmanager", flink.jobmanager,
                    "--bootstrap-servers", kafka.bootstrap, "--job-name", job_name,
                    "--checkpoint-interval", "2", "--checkpoint-dir", str(checkpoints), *ref_urls, *options,
                    timeout=TIMEOUT + 60, env={"FLINK_LOG_DIR": str(flink.state_dir / "client-log")})
    assert result.returncode == 0, f"knflow submit failed:\n{result.stdout}\n{result.stderr}"
    job_id = result.stdout.strip()
    assert JOB_ID.fullmatch(job_id), f"knflow submit did not print a job id: {result.stdout!r}"
    # the client's zips of knflow's packages are not left in the temp directory
    left = list(Path(tempfile.gettempdir()).glob(f"flink-distributed-cache-{job_id}*"))
    assert not left, f"knflow submit left the client's files behind: {left}"
    return job_id


def job_state(flink: FlinkCluster, job_id: str) -> str | None:
    result = knflow("jobs", "--jobmanager", flink.jobmanager, "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    return next((j["state"] for j in json.loads(result.stdout) if j["jid"] == job_id), None)


def cancel_and_wait(flink: FlinkCluster, job_id: str) -> None:
    result = knflow("cancel", job_id, "--jobmanager", flink.jobmanager, timeout=60)
    assert result.returncode == 0, f"knflow cancel failed:\n{result.stderr}"
    assert job_id in result.stdout
    wait_for(lambda: job_state(flink, job_id) == "CANCELED", f"job {job_id} to reach CANCELED",
             timeout=90, interval=1.0, diagnose=lambda: flink.diagnose(job_id))


def cancel_quietly(flink: FlinkCluster, job_id: str | None) -> None:
    """Cleanup after a failed test: free the slots for the next test (REST, no assertions)."""
    if not job_id:
        return
    try:
        if flink.job(job_id)["state"] not in ("CANCELED", "FAILED", "FINISHED"):
            urllib.request.urlopen(urllib.request.Request(
                f"http://{flink.jobmanager}/jobs/{job_id}?mode=cancel", method="PATCH"), timeout=10).close()
    except Exception:  # noqa: BLE001 - best effort
        pass


def missing(shop: Shop, want: dict[str, set[str]]) -> dict[str, int]:
    return {name: len(ids - set(shop.received(name))) for name, ids in want.items()}


def job_history(kafka, job_name: str, event_ids: set[str], limit: int = 12) -> str:
    """What the job's outcome and dead-letter topics say about ``event_ids`` (diagnostics of a
    failed wait: was an event routed, attempted, dead-lettered, held, or never seen?)."""
    from kafka import KafkaConsumer

    lines = []
    try:
        consumer = KafkaConsumer(f"knflow-{job_name}-outcomes", f"knflow-{job_name}-dead-letters",
                                 bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest",
                                 enable_auto_commit=False, consumer_timeout_ms=3000)
        try:
            for message in consumer:
                for line in message.value.split(b"\n"):
                    if any(event_id.encode() in line for event_id in event_ids):
                        lines.append(f"{message.topic.rsplit('-', 1)[-1]}@{message.offset}: {line[:300].decode(errors='replace')}")
        finally:
            consumer.close()
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        return f"(no job history: {exc})"
    head = sorted(event_ids)[:limit]
    return "\n".join([f"job topics on {head}:"] + [line for line in lines if any(i in line for i in head)])


def missing_ids(shop: Shop, want: dict[str, set[str]]) -> set[str]:
    return {event_id for name, ids in want.items() for event_id in ids - set(shop.received(name))}


def duplicates(shop: Shop) -> dict[str, int]:
    return {name: len(shop.received(name)) - len(set(shop.received(name))) for name in shop.consumers}


# --- the tests ------------------------------------------------------------------------------

def test_submitted_job_routes_delivers_dead_letters_and_cancels(flink, kafka, tmp_path, record_property):
    shop = Shop.start(tmp_path / "manifests", kafka.unique_topic("shop"))
    job_id = None
    try:
        job_name = kafka.unique_topic("cluster")
        job_id = submit(flink, kafka, shop.manifests, shop.ref_urls(), job_name, tmp_path / "checkpoints")

        # `knflow jobs` (the table a user reads) lists it RUNNING.
        def listed_running() -> bool:
            result = knflow("jobs", "--jobmanager", flink.jobmanager, timeout=60)
            assert result.returncode == 0, result.stderr
            return any(line.split()[:2] == [job_id, "RUNNING"] for line in result.stdout.splitlines())

        wait_for(listed_running, f"`knflow jobs` to list {job_id} RUNNING", interval=1.0,
                 diagnose=lambda: flink.diagnose(job_id))

        events = make_events("h", 300, seed=7)
        with IngressServer(shop.manifests, kafka.bootstrap) as url, requests.Session() as session:
            statuses = [post(session, url, e) for e in events]
        assert statuses == [202] * len(events), f"the ingress refused some events: {sorted(set(statuses))}"
        want = expected(events)
        assert all(want.values()), want  # every trigger has work (the test is not vacuous)

        wait_for(lambda: not any(missing(shop, want).values()), "every matching event at its consumer",
                 diagnose=lambda: f"missing per consumer: {missing(shop, want)}\n{flink.diagnose(job_id)}\n"
                                  f"{job_history(kafka, job_name, missing_ids(shop, want))}\n{flink.worker_log()}")
        if len(os.sched_getaffinity(0)) > 1:
            # --python-cpu auto in process mode: the Python worker, every thread of it, on one CPU
            workers = [pid for tm in flink.taskmanager_pids() for pid in descendants(tm)
                       if "python" in cmdline(pid).split(" ", 1)[0]]
            masks = [thread_cpus(pid) for pid in workers]
            assert workers and all(m and all(len(cpus) == 1 for cpus in m.values()) for m in masks), masks
        time.sleep(3)  # late extras or duplicates would show up now

        for name, ids in want.items():
            received = shop.received(name)
            assert set(received) == ids, (f"{name}: {len(ids - set(received))} missing, "
                                          f"{len(set(received) - ids)} unexpected")
        dups = duplicates(shop)
        record_property("duplicates", json.dumps(dups))
        assert not any(dups.values()), f"duplicates on a healthy run: {dups}"
        assert not out_of_order(shop, events), f"ordered trigger out of order: {out_of_order(shop, events)}"

        # The refused refunds: one attempt each (400 is not retried), then the deadLetterSink
        # gets the original event with the knativeerror* extensions.
        refunds_url = shop.consumers["refunds"].url
        for request in shop.consumers["dead-letters"].requests:
            assert request.headers.get("ce-knativeerrorcode") == "400", request.headers
            assert request.headers.get("ce-knativeerrordest", "").rstrip("/") == refunds_url.rstrip("/"), request.headers
            assert base64.b64decode(request.headers["ce-knativeerrordata"]) == REFUSAL
            assert request.headers.get("ce-type") == "com.shop.refund.requested"

        cancel_and_wait(flink, job_id)
        job_id = None
    finally:
        cancel_quietly(flink, job_id)
        shop.stop()


def test_stopped_with_a_savepoint_and_resubmitted_from_it_resumes_where_it_stopped(flink, kafka, tmp_path):
    """The upgrade path on a cluster: ``knflow stop --savepoint-dir`` ends the job with a
    savepoint, events keep arriving meanwhile, ``knflow submit --restore-from`` resumes from
    it. The second job is told to start from the earliest offset: only the savepoint's
    offsets keep it from delivering the first events again."""
    shop = Shop.start(tmp_path / "manifests", kafka.unique_topic("upgrade"))
    job_name = kafka.unique_topic("upgrade")
    job_id = None
    try:
        job_id = submit(flink, kafka, shop.manifests, shop.ref_urls(), job_name, tmp_path / "checkpoints")
        wait_for(lambda: flink.tasks_running(job_id), f"the tasks of {job_id} to run", interval=1.0,
                 diagnose=lambda: flink.diagnose(job_id))
        before, during = make_events("u", 60, seed=5), make_events("v", 60, seed=6)
        with IngressServer(shop.manifests, kafka.bootstrap) as url, requests.Session() as session:
            assert [post(session, url, e) for e in before] == [202] * len(before)
            want = expected(before)
            wait_for(lambda: not any(missing(shop, want).values()), "the first events at their consumers",
                     diagnose=lambda: f"missing per consumer: {missing(shop, want)}\n{flink.diagnose(job_id)}")

            stopped = knflow("stop", job_id, "--jobmanager", flink.jobmanager,
                             "--savepoint-dir", str(tmp_path / "savepoints"), timeout=TIMEOUT)
            assert stopped.returncode == 0, f"knflow stop failed:\n{stopped.stdout}\n{stopped.stderr}"
            match = re.search(r"savepoint: (\S+) ", stopped.stdout)
            assert match, stopped.stdout
            savepoint = match.group(1)
            assert (Path(savepoint.removeprefix("file:")) / "_metadata").is_file(), savepoint
            wait_for(lambda: job_state(flink, job_id) == "FINISHED", f"job {job_id} to finish", timeout=90,
                     interval=1.0, diagnose=lambda: flink.diagnose(job_id))
            job_id = None

            assert [post(session, url, e) for e in during] == [202] * len(during)  # while no job runs
        job_id = submit(flink, kafka, shop.manifests, shop.ref_urls(), job_name, tmp_path / "checkpoints",
                        "--restore-from", savepoint, "--start-from", "earliest")

        def restored() -> dict[str, Any] | None:
            return flink.checkpoints(job_id)["latest"]["restored"]

        restore = wait_for(restored, f"{job_id} to restore the savepoint", diagnose=lambda: flink.diagnose(job_id))
        assert restore["is_savepoint"] and restore["external_path"].rstrip("/").endswith(
            savepoint.rstrip("/").rsplit("/", 1)[-1]), (restore, savepoint)

        want = expected(before + during)
        wait_for(lambda: not any(missing(shop, want).values()), "the events posted while stopped at their consumers",
                 diagnose=lambda: f"missing per consumer: {missing(shop, want)}\n{flink.diagnose(job_id)}\n"
                                  f"{job_history(kafka, job_name, missing_ids(shop, want))}")
        time.sleep(3)  # a redelivery of the first events would show up now
        for name, ids in want.items():
            assert set(shop.received(name)) == ids, name
        assert not any(duplicates(shop).values()), f"delivered again after the restore: {duplicates(shop)}"
        cancel_and_wait(flink, job_id)
        job_id = None
    finally:
        cancel_quietly(flink, job_id)
        shop.stop()


def test_taskmanager_killed_midstream_restores_and_delivers_everything(flink, kafka, tmp_path, record_property):
    shop = Shop.start(tmp_path / "manifests", kafka.unique_topic("crash"))
    job_id = None
    stop_posting = threading.Event()
    killed = threading.Event()
    try:
        job_name = kafka.unique_topic("crash")
        job_id = submit(flink, kafka, shop.manifests, shop.ref_urls(), job_name, tmp_path / "checkpoints")
        wait_for(lambda: flink.tasks_running(job_id), f"the tasks of {job_id} to run", interval=1.0,
                 diagnose=lambda: flink.diagnose(job_id))

        events = make_events("c", 600, seed=11)
        accepted: list[dict[str, Any]] = []
        refused: list[tuple[str, Any]] = []

        def producer(url: str) -> None:
            """~50 events/s, steadily, before, during and after the crash. The last 100 wait
            for the kill if it has not happened yet (a slow machine), so some events are
            always posted while the TaskManager is down."""
            with requests.Session() as session:
                start = time.monotonic()
                for i, event in enumerate(events):
                    if i == len(events) - 100 and not killed.is_set():
                        killed.wait(TIMEOUT)
                        start = time.monotonic() - i / 50
                    if stop_posting.is_set():
                        return
                    time.sleep(max(0.0, start + i / 50 - time.monotonic()))
                    try:
                        status = post(session, url, event)
                    except requests.RequestException as exc:
                        refused.append((event["id"], repr(exc)))
                        continue
                    (accepted.append(event) if status == 202 else refused.append((event["id"], status)))

        with IngressServer(shop.manifests, kafka.bootstrap) as url:
            posting = threading.Thread(target=producer, args=(url,), daemon=True)
            posting.start()

            # Kill once events are flowing AND a checkpoint completed after deliveries began,
            # so the restore starts from real offsets with events after them in flight.
            wait_for(lambda: len(shop.received("orders")) >= 10, "the first deliveries",
                     diagnose=lambda: flink.diagnose(job_id))
            first_delivery_ms = shop.consumers["orders"].requests[0].at * 1000

            def checkpoint_after_deliveries() -> dict[str, Any] | None:
                stats = flink.checkpoints(job_id)
                latest = stats["latest"]["completed"]
                return latest if latest and latest["trigger_timestamp"] > first_delivery_ms else None

            checkpoint = wait_for(checkpoint_after_deliveries, "a checkpoint completed after deliveries began",
                                  diagnose=lambda: json.dumps(flink.checkpoints(job_id)["counts"]))
            [tm_pid] = flink.taskmanager_pids()
            # its Python workers (udf runner shell, python, tee) by pid and start time
            workers = {pid: start_time(pid) for pid in descendants(tm_pid)}
            delivered_before = sum(len(c.requests) for c in shop.consumers.values())
            posted_before = len(accepted)
            os.kill(tm_pid, signal.SIGKILL)
            killed_at = time.monotonic()
            killed.set()
            print(f"\nkilled TaskManager {tm_pid} after checkpoint {checkpoint['id']}: {posted_before} events "
                  f"accepted, {delivered_before} deliveries so far")
            assert posting.is_alive(), "the crash should happen while events are still being posted"

            started = flink.script("taskmanager", "start", timeout=60)
            assert started.returncode == 0, f"taskmanager start failed:\n{started.stdout}\n{started.stderr}"
            # flink-daemon.sh records the pid of its forked shell, which becomes the JVM only
            # when it execs java: the pid's command line names TaskManagerRunner a moment later.
            new_tms = wait_for(lambda: flink.taskmanager_pids() or None, "the new TaskManager's JVM",
                               timeout=30, diagnose=lambda: flink.diagnose(job_id))
            assert new_tms and tm_pid not in new_tms, (tm_pid, new_tms)

            def recovered() -> dict[str, Any] | None:
                stats = flink.checkpoints(job_id)
                restored = stats["latest"]["restored"]
                return restored if restored and flink.tasks_running(job_id) else None

            restored = wait_for(recovered, f"{job_id} to restore a checkpoint and run again",
                                diagnose=lambda: flink.diagnose(job_id))
            recovery_s = time.monotonic() - killed_at
            assert restored["id"] >= checkpoint["id"], (restored, checkpoint)
            print(f"job RUNNING again {recovery_s:.1f}s after the kill, restored from checkpoint {restored['id']}")
            record_property("recovery_seconds", round(recovery_s, 1))

            posting.join(TIMEOUT)
            assert not posting.is_alive(), "the producer did not finish"
        assert not refused, f"the ingress refused {len(refused)} events: {refused[:5]}"
        assert len(accepted) == len(events)

        want = expected(accepted)
        wait_for(lambda: not any(missing(shop, want).values()), "every accepted event at its consumers",
                 diagnose=lambda: f"missing per consumer: {missing(shop, want)}\n{flink.diagnose(job_id)}")
        time.sleep(3)
        for name, ids in want.items():
            received = set(shop.received(name))
            assert ids <= received, f"{name}: {len(ids - received)} accepted events never delivered"
            assert received <= ids, f"{name}: {len(received - ids)} events it should not get"
        # The ordered trigger across the restore: every key's first deliveries in posting order.
        assert not out_of_order(shop, accepted), f"ordered trigger out of order: {out_of_order(shop, accepted)}"
        dups = duplicates(shop)
        total = sum(dups.values())
        print(f"duplicates after the crash: {total} {dups}")
        # The killed TaskManager's Python workers exit by themselves: Beam's harness ends when its
        # streams to the TaskManager break, and pipelines.worker_exit keeps its log handler from
        # deadlocking on the way out (which left them running until flink-cluster.sh stop).
        def still_running() -> list[int]:
            return [pid for pid, started in workers.items() if started is not None and start_time(pid) == started]

        wait_for(lambda: not still_running(), "the killed TaskManager's Python workers to exit",
                 diagnose=lambda: "still running:\n" + "\n".join(f"{p}: {cmdline(p)[:160]}" for p in still_running()))
        record_property("duplicates", total)
        record_property("duplicates_per_consumer", json.dumps(dups))

        cancel_and_wait(flink, job_id)
        job_id = None
    finally:
        stop_posting.set()
        killed.set()
        cancel_quietly(flink, job_id)
        shop.stop()



HELD_MANIFESTS = """\
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: shop, namespace: {ns}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: flaky, namespace: {ns}}}
spec:
  broker: shop
  subscriber:
    ref: {{apiVersion: v1, kind: Service, name: flaky}}
  delivery:
    retry: 3
    backoffPolicy: linear
    backoffDelay: PT20S
"""


def first_attempt_fails_slowly(status: int = 503, delay: float = 1.5) -> Callable[[Any], Any]:
    """Answer ``status`` after ``delay`` seconds to each event's first attempt (by ce-id),
    accept the others at once."""
    seen: set[str] = set()
    lock = threading.Lock()

    def behaviour(req: Any) -> Reply:
        event_id = req.headers.get("ce-id", "")
        with lock:
            first = event_id not in seen
            seen.add(event_id)
        return Reply(status, {}, b"try later", delay) if first else Reply(200)

    return behaviour


def test_retries_decided_just_before_a_checkpoint_survive_a_taskmanager_kill(flink, kafka, tmp_path):
    """The retries a checkpoint holds in state come due after a restore, even those decided
    in the last call before its barrier and with no record after the restore to wake their
    partition. (PyFlink's process mode registers a Python timer through the task's mailbox,
    after the barrier's snapshot: the checkpoint holds the retry but not its timer. The
    worker re-arms held retries when it resumes a partition, and the Batcher wakes every
    partition it has seen after a restore.)

    The checkpoint is triggered by hand while every event's first attempt is running (the
    consumer answers 503 after 1.5 s), so the marker before its barrier settles them and
    holds their retries (20 s backoff) in state; the TaskManager dies before they are due.
    """
    namespace = kafka.unique_topic("held")
    manifests = tmp_path / "held.yaml"
    manifests.write_text(HELD_MANIFESTS.format(ns=namespace))
    consumer = ConsumerServer(first_attempt_fails_slowly()).start()
    job_id = None
    try:
        # checkpoints by hand only; a marker may wait 15 s for the running first attempts
        job_id = submit(flink, kafka, manifests, ["--ref-url", f"flaky={consumer.url}"], namespace,
                        tmp_path / "checkpoints", "--checkpoint-interval", "3600", "--batch-wait-ms", "15000")
        wait_for(lambda: flink.tasks_running(job_id), f"the tasks of {job_id} to run", interval=1.0,
                 diagnose=lambda: flink.diagnose(job_id))
        ids = [f"h-{i:03d}" for i in range(12)]
        with IngressServer(manifests, kafka.bootstrap) as url, requests.Session() as session:
            for i, event_id in enumerate(ids):
                assert post(session, url, {"id": event_id, "type": "com.shop.held", "amount": 1, "n": i}) == 202

        def attempts() -> dict[str, int]:
            counts = dict.fromkeys(ids, 0)
            for event_id in [r.headers.get("ce-id", "") for r in list(consumer.requests)]:
                if event_id in counts:
                    counts[event_id] += 1
            return counts

        wait_for(lambda: all(attempts().values()), "every event's first attempt",
                 diagnose=lambda: f"{attempts()}\n{flink.diagnose(job_id)}")
        checkpoint = flink.trigger_checkpoint(job_id)
        [tm_pid] = flink.taskmanager_pids()
        assert max(attempts().values()) == 1, "a retry came due before the kill: the backoff is too short here"
        os.kill(tm_pid, signal.SIGKILL)
        started = flink.script("taskmanager", "start", timeout=60)
        assert started.returncode == 0, f"taskmanager start failed:\n{started.stdout}\n{started.stderr}"
        print(f"\nkilled TaskManager {tm_pid} after checkpoint {checkpoint['id']}")
        wait_for(lambda: all(n >= 2 for n in attempts().values()), "every held retry after the restore",
                 diagnose=lambda: f"attempts per event: {attempts()}\n{flink.diagnose(job_id)}\n"
                                  f"{job_history(kafka, namespace, set(ids[:4]))}\n{flink.worker_log()}")
        restored = flink.checkpoints(job_id)["latest"]["restored"]
        assert restored and restored["id"] == checkpoint["id"], (restored, checkpoint)
        cancel_and_wait(flink, job_id)
        job_id = None
    finally:
        cancel_quietly(flink, job_id)
        consumer.stop()
