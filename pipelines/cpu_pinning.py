"""Keep the Python operator's threads on one CPU: the GIL handed between cores is slow.

The delivering operator runs Python in two threads that take turns on one GIL: the
thread Flink calls it from (decode, route, settle) and the delivery loop
(``transforms.broker_worker.LoopThread``); in process mode also the worker's gRPC
threads. Unpinned, Linux spreads them over cores, and every hand-over of the GIL wakes a
thread on another core (a futex round trip, cold caches). Measured with
``bench/pipeline.py`` (30,000-event backlog, alternating runs, 2 cores):

- thread mode, the operator's thread and its loop on one CPU: 9,800 - 11,500 events/s
  against 7,200 - 8,600 unpinned (4 pairs), the job's CPU per event 97 - 114 us against
  126 - 150;
- process mode, the whole Python worker on one CPU: 7,700 - 8,800 against 6,500 - 7,400
  (3 triples); pinning only the operator's thread and its loop gained half of that.

What it costs: the pinned thread's JVM work (the batch crossing into Python, the chained
``Unbatch`` and Kafka sink writer) and native work outside the GIL (gRPC's C core in
process mode) no longer run beside the Python on another core; measured here, the gain
outweighs it. What is pinned: in thread mode the TaskManager thread that calls the
operator, and every thread it starts afterwards, which inherits its CPU set (the
delivery loop, and JVM threads the task creates later, such as Flink's pool for the
asynchronous part of checkpoints); the JVM's threads started before it (Kafka source,
network stack, the Batcher's task) are left alone. In process mode: the whole Python
worker process, which runs nothing but Python operators.

Which CPU, with ``auto``: in thread mode every Python operator of a TaskManager shares
the JVM's one interpreter, so all of them take the same CPU (the first choice by the
process id); in process mode each worker has its own GIL, so subtask ``i`` starts at the
``i``-th allowed CPU (round robin). From there each process claims the first CPU that no
other knflow process on the host has claimed (``claim_cpu``: a lock file per CPU), so
TaskManagers and workers on one host spread over its CPUs; when every CPU is claimed it
shares its first choice. ``auto`` pins
nothing where a CPU quota limits the process (a cgroup ``cpu.max`` or
``cpu.cfs_quota_us``, as Kubernetes sets for a CPU limit without a cpuset): the allowed
set then names the host's CPUs, not the ones the process is meant to use. An explicit
CPU number pins there (to keep Python off the CPU a co-located Kafka uses, say). Pinning
never stops the job: a CPU that is not allowed or a sandbox that forbids it is a warning,
and the operator runs unpinned.
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

AUTO, OFF = "auto", "off"

#: where a process's CPU quota is, in its own cgroup namespace (v2, then v1)
_QUOTA_FILES = ("/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
                "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us")


def parse_python_cpu(value: str) -> str:
    """``auto``, ``off`` or a CPU number (argparse type): the setting as text."""
    if value in (AUTO, OFF) or re.fullmatch(r"[0-9]+", value):
        return value
    raise ValueError(f"expected auto, off or a CPU number, got {value!r}")


def cpu_quota_set(files: tuple[str, ...] = _QUOTA_FILES) -> bool:
    """Whether a cgroup CPU quota limits this process (``cpu.max`` not ``max``, or
    ``cpu.cfs_quota_us`` not -1)."""
    for name in files:
        try:
            text = Path(name).read_text().split()
        except OSError:
            continue
        if text and text[0] not in ("max", "-1"):
            return True
    return False


def choose_cpu(setting: str, allowed: set[int], mode: str, subtask: int, pid: int,
               quota: bool = False) -> int | None:
    """The CPU to pin to, or None to leave the scheduler be (``off``; ``auto`` with one
    allowed CPU or under a CPU quota). Raises ValueError for a CPU not in ``allowed``."""
    if setting == OFF:
        return None
    if setting != AUTO:
        cpu = int(setting)
        if cpu not in allowed:
            raise ValueError(f"--python-cpu {cpu}: this process may run on CPUs {sorted(allowed)} only")
        return cpu
    if len(allowed) < 2 or quota:
        return None
    cpus = sorted(allowed)
    return cpus[(subtask if mode == "process" else pid) % len(cpus)]


#: where processes on this host claim CPUs: one lock file per CPU
LOCK_DIR = Path(tempfile.gettempdir()) / "knflow-python-cpus"
#: this process's claim: (CPU, the open lock file that holds it), for the process's life
_claim: tuple[int, int] | None = None
_claim_lock = threading.Lock()


def claim_cpu(cpus: list[int], first: int, lock_dir: Path | None = None) -> int:
    """``auto``: the first of ``cpus`` from ``first`` on (round robin) that no other
    process on this host has claimed, else ``first``. A claim is an exclusive ``flock`` on
    ``cpu-<n>.lock`` in ``lock_dir``, held by an open file for as long as this process
    lives (the kernel drops it when the process ends, however it ends: a killed
    TaskManager's claim does not outlive it). A process claims once: its later operators
    (in thread mode every operator of the TaskManager) take the same CPU."""
    global _claim
    with _claim_lock:
        if _claim is not None and _claim[0] in cpus:
            return _claim[0]
        directory = lock_dir or LOCK_DIR
        try:
            directory.mkdir(exist_ok=True)
            os.chmod(directory, 0o1777)  # shared by every user's processes, like /tmp
        except OSError:
            pass  # someone else's: its files can still be opened to lock
        start = cpus.index(first)
        for i in range(len(cpus)):
            cpu = cpus[(start + i) % len(cpus)]
            try:
                fd = os.open(directory / f"cpu-{cpu}.lock", os.O_RDONLY | os.O_CREAT, 0o666)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # claimed by another process
                os.close(fd)
                continue
            _claim = (cpu, fd)
            return cpu
        return first


def pin_python(setting: str, mode: str, subtask: int) -> int | None:
    """Pin the calling thread (thread mode) or this whole process (process mode) to one
    CPU per ``setting``; returns the CPU, or None when nothing was pinned. Never raises:
    what goes wrong is a warning, and the operator runs as it would unpinned."""
    if setting == OFF or not hasattr(os, "sched_setaffinity"):  # not Linux: nothing to do
        return None
    cpu = None
    try:
        allowed = os.sched_getaffinity(0)
        cpu = choose_cpu(setting, allowed, mode, subtask, os.getpid(), quota=setting == AUTO and cpu_quota_set())
        if cpu is None:
            return None
        if setting == AUTO:
            cpu = claim_cpu(sorted(allowed), cpu)
        if mode == "process":
            _pin_every_thread(cpu)
        else:
            os.sched_setaffinity(0, {cpu})  # 0: the calling thread
    except (OSError, ValueError) as exc:
        log.warning("could not pin the Python operator%s (%s): it runs unpinned",
                    "" if cpu is None else f" to CPU {cpu}", exc)
        return None
    log.info("the Python operator's %s runs on CPU %d", "process" if mode == "process" else "thread", cpu)
    return cpu


def _pin_every_thread(cpu: int) -> None:
    """``sched_setaffinity(pid)`` sets one thread's mask on Linux: set every thread's.
    Threads started later inherit the mask of the thread that starts them; one started
    while this runs may have the old mask, so look again until none has. If it fails
    part way, the threads pinned so far get their mask back (then it raises)."""
    before = os.sched_getaffinity(0)
    try:
        for _ in range(5):
            changed = False
            for tid in os.listdir("/proc/self/task"):
                try:
                    if os.sched_getaffinity(int(tid)) != {cpu}:
                        os.sched_setaffinity(int(tid), {cpu})
                        changed = True
                except ProcessLookupError:  # a thread that just ended
                    pass
            if not changed:
                return
    except OSError:
        for tid in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(tid), before)
            except OSError:
                pass
        raise
