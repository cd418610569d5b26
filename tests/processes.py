"""Processes as /proc shows them: command lines, process trees and CPU time (tests and
benchmarks find the JVMs and Python workers they started, or that were left behind, and
what they cost); and stopping one the tests started."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def cmdline(pid: int) -> str:
    """The command line of ``pid``, arguments separated by spaces ("" if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (``[0]`` is the state)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot), None if it is gone or a zombie: with
    the pid, it names one process, not a later one that reuses the pid."""
    try:
        fields = _stat(pid)
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the live ``pids`` used so far."""
    ticks = 0
    for pid in pids:
        try:
            fields = _stat(pid)
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Every live process under ``pid`` (children, their children, ...), not ``pid`` itself."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    out, stack = [], list(children.get(pid, []))
    while stack:
        child = stack.pop()
        out.append(child)
        stack += children.get(child, [])
    return out


def thread_cpus(pid: int) -> dict[int, set[int]]:
    """The CPUs each live thread of ``pid`` may run on (its affinity mask), by thread id."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    for tid in tids:
        try:
            out[int(tid)] = os.sched_getaffinity(int(tid))
        except OSError:  # the thread ended
            continue
    return out


def stop(process: "subprocess.Popen", sig: int = signal.SIGTERM, timeout: float = 60.0) -> bool:
    """Send ``sig`` to ``process`` and wait up to ``timeout`` s for it to exit; kill it
    if it does not. Returns whether it exited by itself (callers that require a clean
    stop assert it)."""
    process.send_signal(sig)
    try:
        process.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(30)
        return False
