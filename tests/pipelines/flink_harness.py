"""Helpers for end-to-end tests of the Flink job: a real ingress, real consumers, and
``knflow run`` on the embedded mini-cluster in a subprocess (so its JVM is its own and
SIGINT stops it the way a user would)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

import requests

from tests.eventing.test_ingress import AppThread
from tests.processes import cmdline, descendants

REPO = Path(__file__).resolve().parents[2]


class KnflowJob:
    """``knflow run`` (Flink mini-cluster) as a subprocess, output captured to a file."""

    def __init__(self, manifests: Path, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "run", str(manifests), *args],
            cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.job_id: str | None = None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def jvm_pids(self) -> list[int]:
        """The JVMs ``knflow run`` started (the mini-cluster's)."""
        return [pid for pid in descendants(self.proc.pid) if "java" in cmdline(pid).split(" ", 1)[0]]

    def wait_running(self, timeout: float = 180) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            match = re.search(r"knflow: job ([0-9a-f]{32}) running", self.output())
            if match:
                self.job_id = match.group(1)
                return self.job_id
            if self.proc.poll() is not None:
                raise AssertionError(f"knflow run exited early ({self.proc.returncode}):\n{self.output()[-4000:]}")
            time.sleep(0.5)
        raise AssertionError(f"job did not start in {timeout}s:\n{self.output()[-4000:]}")

    def stop(self, timeout: float = 120) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        return self.output()


def summary_rows(output: str) -> dict[str, dict[str, int]]:
    """Parse the per-trigger table ``knflow run`` prints at the end."""
    rows = {}
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("trigger") and "matched" in line:
            columns = line.split()[1:]
            for row in lines[index + 2:]:
                parts = row.split()
                if len(parts) != len(columns) + 1:
                    break
                rows[parts[0]] = {c.replace("-", "_"): int(v) for c, v in zip(columns, parts[1:])}
    return rows


def post_all(url: str, events: Iterable[tuple[str, dict[str, str], bytes]], lanes: Callable[[str], str], workers: int = 8) -> dict[str, int]:
    """POST (id, headers, body) events; events of one lane go in order, lanes in parallel.
    Returns id -> HTTP status."""
    by_lane: dict[str, list] = {}
    for item in events:
        by_lane.setdefault(lanes(item[0]), []).append(item)
    statuses: dict[str, int] = {}
    lock = threading.Lock()

    def send(items):
        with requests.Session() as session:
            for event_id, headers, body in items:
                response = session.post(url, headers=headers, data=body, timeout=30)
                if response.status_code != 202:
                    print(f"POST {event_id}: {response.status_code} {response.text.strip()}")
                with lock:
                    statuses[event_id] = response.status_code

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(send, by_lane.values()))
    return statuses


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def latest_checkpoint(checkpoint_dir: Path, job_id: str) -> int:
    """The number of the newest completed checkpoint Flink keeps for ``job_id`` (0: none)."""
    numbers = [int(p.name[4:]) for p in (checkpoint_dir / job_id).glob("chk-*") if (p / "_metadata").exists()]
    return max(numbers, default=0)


__all__ = ["AppThread", "KnflowJob", "latest_checkpoint", "post_all", "summary_rows", "wait_until"]
