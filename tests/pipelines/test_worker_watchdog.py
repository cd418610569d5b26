"""A process-mode Python worker ends when its TaskManager's JVM is gone
(``pipelines.worker_watchdog``), with real processes: a stand-in "TaskManager" (python
started under the name ``java``, which is what the watchdog looks for) starts a worker the
way PyFlink does (a shell running ``python ... | tee``), and is then killed with SIGKILL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pipelines import worker_watchdog

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="Linux /proc needed")


def wait_for(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def alive(pid: int) -> bool:
    return worker_watchdog._stat(pid) is not None  # not a zombie either


WORKER = textwrap.dedent("""\
    import os, sys, time
    sys.path.insert(0, {repo!r})
    from pipelines import worker_watchdog
    worker_watchdog.exit_with_taskmanager()
    worker_watchdog.exit_with_taskmanager()  # a second operator in the same worker: one watch
    watching = [t.name for t in __import__("threading").enumerate() if t.name == "knflow-taskmanager-watch"]
    with open({out!r}, "w") as f:
        f.write(f"{{os.getpid()}} {{worker_watchdog.jvm_ancestor()}} {{len(watching)}}")
    time.sleep(3600)
""")

TASKMANAGER = textwrap.dedent("""\
    import subprocess, sys, time
    # like pyflink-udf-runner.sh: a shell whose python writes through tee
    subprocess.Popen(["/bin/sh", "-c", sys.argv[1]])
    time.sleep(3600)
""")


def start_taskmanager(tmp_path: Path, worker_code: str) -> tuple[subprocess.Popen, Path]:
    java = tmp_path / "bin" / "java"
    java.parent.mkdir()
    java.symlink_to(sys.executable)
    (tmp_path / "worker.py").write_text(worker_code)
    (tmp_path / "tm.py").write_text(TASKMANAGER)
    out = tmp_path / "worker.out"
    shell = f"{sys.executable} {tmp_path / 'worker.py'} 2>&1 | tee {tmp_path / 'worker.log'}"
    tm = subprocess.Popen([str(java), str(tmp_path / "tm.py"), shell])
    return tm, out


def test_a_worker_ends_when_its_taskmanager_is_killed(tmp_path):
    out = tmp_path / "worker.out"
    tm, out = start_taskmanager(tmp_path, WORKER.format(repo=str(REPO), out=str(out)))
    try:
        text = wait_for(lambda: out.exists() and out.read_text(), "the worker to start watching")
        worker_pid, rest = text.split(" ", 1)
        worker_pid = int(worker_pid)
        assert rest.startswith(f"({tm.pid}, ") and rest.endswith(" 1"), text  # its JVM found, one watch
        time.sleep(2.5)  # a few watch intervals: the TaskManager lives, so does the worker
        assert alive(worker_pid)
        os.kill(tm.pid, signal.SIGKILL)
        tm.wait()
        wait_for(lambda: not alive(worker_pid), f"worker {worker_pid} to exit after its TaskManager's SIGKILL")
        assert "is gone: this Python worker" in (tmp_path / "worker.log").read_text()
    finally:
        if tm.poll() is None:
            tm.kill()
            tm.wait()
        if out.exists() and out.read_text():
            pid = int(out.read_text().split(" ", 1)[0])
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_taskmanager_itself_watches_nothing(tmp_path):
    # thread mode: the operator runs inside the JVM, whose process is named java
    code = textwrap.dedent(f"""\
        import sys, threading
        sys.path.insert(0, {str(REPO)!r})
        from pipelines import worker_watchdog
        worker_watchdog.exit_with_taskmanager()
        print(sum(t.name == "knflow-taskmanager-watch" for t in threading.enumerate()))
    """)
    java = tmp_path / "java"
    java.symlink_to(sys.executable)
    result = subprocess.run([str(java), "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


def test_a_reused_pid_is_not_the_taskmanager():
    # the same pid with another start time is another process: the watched one is gone
    # (that a live TaskManager is not taken for gone: the first test)
    _, _, start = worker_watchdog._stat(os.getpid())
    gone = threading.Event()
    worker_watchdog.watch(os.getpid(), start + 1, gone.set, interval_s=0.05)
    assert gone.wait(30)
