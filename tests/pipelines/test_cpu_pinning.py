"""--python-cpu: which CPU the Python operator takes, and that exactly its threads are pinned."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from pipelines import cpu_pinning
from pipelines.cpu_pinning import choose_cpu, claim_cpu, cpu_quota_set, parse_python_cpu, pin_python
from tests.processes import thread_cpus

MULTI_CPU = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin to one")


def test_choice_per_mode_and_setting():
    allowed = {0, 1, 2, 3}
    # thread mode: one CPU per TaskManager process, whatever the subtask
    assert {choose_cpu("auto", allowed, "thread", subtask, pid=6) for subtask in range(4)} == {2}
    # process mode: subtasks round robin over the allowed CPUs
    assert [choose_cpu("auto", {1, 5, 7}, "process", subtask, pid=6) for subtask in range(4)] == [1, 5, 7, 1]
    assert choose_cpu("3", allowed, "thread", 0, pid=6) == 3
    assert choose_cpu("off", allowed, "thread", 0, pid=6) is None
    assert choose_cpu("auto", {4}, "process", 0, pid=6) is None  # one CPU: nothing to choose
    assert choose_cpu("4", {4}, "process", 0, pid=6) == 4  # named: checked, even alone
    # under a CPU quota the allowed set is the host's, not the process's share: auto leaves it
    assert choose_cpu("auto", allowed, "thread", 0, pid=6, quota=True) is None
    assert choose_cpu("2", allowed, "thread", 0, pid=6, quota=True) == 2
    for named, cpus in (("9", allowed), ("5", {4})):
        with pytest.raises(ValueError, match=rf"--python-cpu {named}: this process may run on CPUs \[.*\] only"):
            choose_cpu(named, cpus, "thread", 0, pid=6)


def test_cgroup_cpu_quota(tmp_path):
    files = {name: tmp_path / name for name in ("v2", "v1")}
    assert not cpu_quota_set((str(tmp_path / "absent"),))
    files["v2"].write_text("max 100000\n")
    files["v1"].write_text("-1\n")
    assert not cpu_quota_set(tuple(map(str, files.values())))
    files["v2"].write_text("150000 100000\n")  # a Kubernetes limit of 1.5 CPUs
    assert cpu_quota_set(tuple(map(str, files.values())))
    files["v2"].write_text("max 100000\n")
    files["v1"].write_text("50000\n")
    assert cpu_quota_set(tuple(map(str, files.values())))


def test_setting_parse():
    assert [parse_python_cpu(v) for v in ("auto", "off", "0", "12")] == ["auto", "off", "0", "12"]
    for bad in ("on", "-1", "1.5", "", "\u00b2", "\u0661"):
        with pytest.raises(ValueError, match="expected auto, off or a CPU number"):
            parse_python_cpu(bad)


@MULTI_CPU
def test_thread_mode_pins_the_calling_thread_and_the_threads_it_starts_only():
    before = os.sched_getaffinity(0)
    seen: dict[str, set[int]] = {}

    second = sorted(before)[1]

    def operator_thread() -> None:
        seen["cpu"] = {pin_python(str(second), "thread", 0)}
        child = threading.Thread(target=lambda: seen.setdefault("loop", os.sched_getaffinity(0)))
        child.start()
        child.join()
        seen["operator"] = os.sched_getaffinity(0)

    thread = threading.Thread(target=operator_thread)
    thread.start()
    thread.join()
    assert seen == {"cpu": {second}, "operator": {second}, "loop": {second}}
    assert os.sched_getaffinity(0) == before  # the caller (the JVM's other threads) is left alone


@MULTI_CPU
def test_process_mode_pins_every_thread_of_the_worker():
    script = (
        "import os, threading, time, json\n"
        "from pipelines.cpu_pinning import pin_python\n"
        "stop = threading.Event()\n"
        "threads = [threading.Thread(target=stop.wait) for _ in range(3)]\n"  # started before: gRPC's, say
        "[t.start() for t in threads]\n"
        "cpu = pin_python('auto', 'process', 1)\n"
        "print(cpu, flush=True)\n"
        "input()\n"
        "stop.set()\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    try:
        cpu = int(worker.stdout.readline())
        masks = thread_cpus(worker.pid)
        assert cpu in os.sched_getaffinity(0)  # subtask 1 starts at the second (claims: test_claims_...)
        assert len(masks) >= 4 and all(mask == {cpu} for mask in masks.values()), masks
    finally:
        worker.communicate("\n", timeout=30)


@MULTI_CPU
def test_a_sandbox_that_forbids_pinning_runs_the_operator_unpinned(monkeypatch, caplog):
    def forbidden(pid, cpus):
        raise PermissionError(1, "Operation not permitted")

    before = os.sched_getaffinity(0)
    monkeypatch.setattr(os, "sched_setaffinity", forbidden)
    with caplog.at_level("WARNING", logger="pipelines.cpu_pinning"):
        assert pin_python(str(sorted(before)[0]), "thread", 0) is None
        assert pin_python(str(sorted(before)[0]), "process", 0) is None
    assert caplog.text.count("it runs unpinned") == 2


def test_a_cpu_the_taskmanager_may_not_use_is_a_warning_not_a_failed_job(caplog):
    before = os.sched_getaffinity(0)
    with caplog.at_level("WARNING", logger="pipelines.cpu_pinning"):
        assert pin_python("4095", "thread", 0) is None
    assert "--python-cpu 4095: this process may run on CPUs" in caplog.text and "it runs unpinned" in caplog.text
    assert os.sched_getaffinity(0) == before


def test_knflow_run_refuses_a_cpu_outside_its_own_set_by_name():
    from filters.errors import KnflowError
    from pipelines.runners import check_local_python_cpu

    with pytest.raises(KnflowError, match="--python-cpu 4095: this process may run on CPUs"):
        check_local_python_cpu("4095")
    check_local_python_cpu(str(min(os.sched_getaffinity(0))))
    check_local_python_cpu("auto")


CLAIM = (
    "import sys\n"
    "from pathlib import Path\n"
    "from pipelines.cpu_pinning import claim_cpu\n"
    "print(claim_cpu([0, 1, 2], int(sys.argv[2]), Path(sys.argv[1])), flush=True)\n"
    "input()\n"
)


def test_claims_spread_processes_over_the_cpus_and_end_with_them(tmp_path, monkeypatch):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    holders = []

    def holder(first: int) -> int:  # another TaskManager or worker on this host
        proc = subprocess.Popen([sys.executable, "-c", CLAIM, str(tmp_path), str(first)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, cwd=repo)
        holders.append(proc)
        return int(proc.stdout.readline())

    try:
        assert holder(0) == 0
        assert holder(0) == 1  # 0 is taken: the next one
        monkeypatch.setattr(cpu_pinning, "_claim", None)
        assert claim_cpu([0, 1, 2], 1, tmp_path) == 2  # from 1 on, round robin
        assert claim_cpu([0, 1, 2], 0, tmp_path) == 2  # a process claims once: its operators share it
        assert holder(1) == 1  # every CPU claimed: its first choice, shared
        gone = holders.pop(0)
        gone.kill()  # a claim ends with its process, however it ends
        gone.wait(10)
        assert holder(0) == 0
    finally:
        for proc in holders:
            proc.kill()
            proc.wait(10)
