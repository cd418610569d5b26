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

Nothing is lost by pinning: one GIL lets one of these threads run Python at a time
anyway. What is pinned: in thread mode the TaskManager's thread that calls the operator
(and the threads it starts afterwards, which inherit its CPU set: the delivery loop),
never the JVM's other threads (Kafka source, network, checkpoints); in process mode the
whole Python worker process, which runs nothing but the operator.

Which CPU, with ``auto``: in thread mode every Python operator of a TaskManager shares
the JVM's one interpreter, so all of them take the same CPU (chosen by the process id,
so TaskManagers on one host spread); in process mode each worker has its own GIL, so
subtask ``i`` takes the ``i``-th allowed CPU (round robin). An explicit CPU number pins
there (to keep Python off the CPU a co-located Kafka uses, say); ``off`` pins nothing.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

AUTO, OFF = "auto", "off"


def parse_python_cpu(value: str) -> str:
    """``auto``, ``off`` or a CPU number (argparse type): the setting as text."""
    if value in (AUTO, OFF) or (value.isdigit() and int(value) < 4096):
        return value
    raise ValueError(f"expected auto, off or a CPU number, got {value!r}")


def choose_cpu(setting: str, allowed: set[int], mode: str, subtask: int, pid: int) -> int | None:
    """The CPU to pin to, or None to leave the scheduler be (``off``, a single allowed CPU)."""
    if setting == OFF or len(allowed) < 2:
        return None
    if setting != AUTO:
        cpu = int(setting)
        if cpu not in allowed:
            raise ValueError(f"--python-cpu {cpu}: this process may run on CPUs {sorted(allowed)} only")
        return cpu
    cpus = sorted(allowed)
    return cpus[(subtask if mode == "process" else pid) % len(cpus)]


def pin_python(setting: str, mode: str, subtask: int) -> int | None:
    """Pin the calling thread (thread mode) or this whole process (process mode) to one
    CPU per ``setting``; returns the CPU, or None when nothing was pinned."""
    if not hasattr(os, "sched_setaffinity"):  # not Linux: nothing to do
        return None
    cpu = choose_cpu(setting, os.sched_getaffinity(0), mode, subtask, os.getpid())
    if cpu is None:
        return None
    try:
        if mode == "process":
            _pin_every_thread(cpu)
        else:
            os.sched_setaffinity(0, {cpu})  # 0: the calling thread
    except OSError as exc:  # a sandbox that forbids it: run unpinned rather than not at all
        log.warning("could not pin the Python operator to CPU %d (%s): it runs unpinned", cpu, exc)
        return None
    log.info("the Python operator's %s runs on CPU %d", "process" if mode == "process" else "thread", cpu)
    return cpu


def _pin_every_thread(cpu: int) -> None:
    """``sched_setaffinity(pid)`` sets one thread's mask on Linux: set every thread's.
    Threads started later inherit the mask of the thread that starts them; one started
    while this runs may have the old mask, so look again until none has."""
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
