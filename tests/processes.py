"""Processes as /proc shows them: command lines and process trees (tests and benchmarks
find the JVMs and Python workers they started, or that were left behind)."""
from __future__ import annotations

from pathlib import Path


def cmdline(pid: int) -> str:
    """The command line of ``pid``, arguments separated by spaces ("" if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    """Every live process under ``pid`` (children, their children, ...), not ``pid`` itself."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    out, stack = [], list(children.get(pid, []))
    while stack:
        child = stack.pop()
        out.append(child)
        stack += children.get(child, [])
    return out
