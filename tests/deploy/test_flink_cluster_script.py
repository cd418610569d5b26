"""deploy/flink-cluster.sh stop also ends the Python workers a killed TaskManager left behind.

A TaskManager killed with SIGKILL (the crash tests do it) does not take its Python workers
(pyflink-udf-runner.sh and the Python harness under it) along: they are re-parented and keep
running. ``stop`` recognises them by their command line and by ``FLINK_CONF_DIR`` naming this
cluster's conf dir in their environment, and kills them; workers of another cluster stay.
No JVM is needed: no cluster is running, only the leftovers are.
"""
import os
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "flink-cluster.sh"


def _fake_worker(conf_dir: Path) -> subprocess.Popen:
    """A process that looks like a Python worker of the cluster whose conf dir is ``conf_dir``:
    its command line names pyflink-udf-runner.sh, its environment names the conf dir and is large
    (the script once matched it with ``tr | grep -q`` under pipefail, which misses now and then
    on large input when grep exits first; a race this test can catch only by chance)."""
    env = dict(os.environ, FLINK_CONF_DIR=str(conf_dir), KNFLOW_TEST_PADDING="x" * 100_000)
    return subprocess.Popen(["bash", "-c", "exec -a pyflink-udf-runner.sh sleep 600"], env=env,
                            start_new_session=True)


def _gone(proc: subprocess.Popen, timeout: float = 10.0) -> bool:
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


def test_stop_kills_orphaned_workers_of_this_cluster_only(tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    workers = [_fake_worker(ours / "conf") for _ in range(8)]
    other = _fake_worker(theirs / "conf")
    try:
        env = dict(os.environ, KNFLOW_FLINK_DIR=str(ours))
        stopped = subprocess.run([str(SCRIPT), "stop"], env=env, cwd="/", capture_output=True, text=True,
                                 timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        assert "killing orphaned Python workers" in stopped.stderr
        assert all(_gone(w) for w in workers), f"workers still running after stop:\n{stopped.stderr}"
        time.sleep(0.5)
        assert other.poll() is None, "stop killed a worker of another cluster"
    finally:
        for proc in [*workers, other]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
