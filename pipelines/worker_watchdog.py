"""A process-mode Python worker ends when its TaskManager does.

PyFlink starts each Python worker as ``pyflink-udf-runner.sh`` -> ``python -m
pyflink.fn_execution.beam.beam_boot ... | tee``. When the TaskManager's JVM is killed
(``kill -9``, the OOM killer, a lost container), nothing tells the worker: the shell and
its children are re-parented and the worker may keep its memory, its delivery loop's
connections and its CPU claim (``pipelines.cpu_pinning``) until someone kills it, while
the job restores elsewhere from its checkpoint. Often PyFlink's harness notices the broken
connection and exits within a second, but not always: in one CI run the worker of a killed
TaskManager was still alive 180 s later. A daemon thread here watches the
TaskManager (the nearest ``java`` ancestor, by pid and start time, so a reused pid is not
mistaken for it) and ends the worker once it is gone. Nothing is lost by that: the job
replays from its last checkpoint what the worker had not settled (at least once).

Thread mode needs none of this: the operator runs inside the TaskManager's JVM.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

_started = False
_lock = threading.Lock()


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(command name, parent pid, start time in clock ticks) of ``pid``, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    name = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):  # a zombie is gone too: only its parent's wait is missing
        return None
    return name, int(fields[1]), int(fields[19])


def jvm_ancestor(pid: int | None = None) -> tuple[int, int] | None:
    """(pid, start time) of the nearest ``java`` process above ``pid`` (default: this one)."""
    stat = _stat(os.getpid() if pid is None else pid)
    while stat is not None and stat[1] > 1:
        parent = stat[1]
        stat = _stat(parent)
        if stat is not None and stat[0] == "java":
            return parent, stat[2]
    return None


def watch(pid: int, start_time: int, on_gone: Callable[[], None], interval_s: float = 1.0) -> threading.Thread:
    """Call ``on_gone`` (in a daemon thread) once process ``pid`` started at ``start_time``
    no longer runs; checks every ``interval_s``."""

    def run() -> None:
        while True:
            stat = _stat(pid)
            if stat is None or stat[2] != start_time:
                on_gone()
                return
            time.sleep(interval_s)

    thread = threading.Thread(target=run, name="knflow-taskmanager-watch", daemon=True)
    thread.start()
    return thread


def _exit_worker(pid: int) -> None:
    log.warning("TaskManager (pid %d) is gone: this Python worker (pid %d) exits; the job replays what it had "
                "not settled from its last checkpoint", pid, os.getpid())
    logging.shutdown()
    os._exit(1)  # not sys.exit: the fn harness's gRPC threads would keep the process alive


def exit_with_taskmanager() -> None:
    """Called by every Python operator's ``open``: in a process-mode worker, end the worker
    when its TaskManager's JVM is gone (one watch per process). In thread mode this process
    is the JVM itself, and nothing is watched."""
    global _started
    with _lock:
        if _started:
            return
        _started = True
    me = _stat(os.getpid())
    if me is None or me[0] == "java":  # no /proc (not Linux), or thread mode
        return
    found = jvm_ancestor()
    if found is None:
        log.info("no TaskManager JVM among this Python worker's ancestors: not watching it")
        return
    pid, start_time = found
    watch(pid, start_time, lambda: _exit_worker(pid))
