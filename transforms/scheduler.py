"""Durable retry timing and per-key ordering, as a pure state machine over keyed state.

Waiting out a backoff never happens inside a delivery attempt. A task due later is
handed here (in Flink: read back from the retry topic into a keyed operator whose state
and processing-time timers are checkpointed), held until its due time, then released for
one more attempt.

Ordered triggers: per scheduling key (trigger + partition key) one event is in delivery
at a time. A new event waits in the key's queue while the gate is closed; the outcome of
the event in delivery (delivered or finally dead-lettered) sends a *release* that opens
the gate for the next one. Other keys are never blocked.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

NEW = "new"          # a routed event of an ordered trigger: must pass the key's gate
RETRY = "retry"      # a task due at ``due_ms`` (unordered, or the ordered key's current event)
RELEASE = "release"  # the ordered key's current event settled: open the gate


def ordered_key(trigger: str, partition_key: str) -> str:
    """Scheduling key of an ordered trigger's event: one gate per (trigger, partition key)."""
    return f"o|{trigger}|{partition_key}"


def unordered_key(trigger: str, event_id: str) -> str:
    """Scheduling key of an unordered retry: spreads retries over keys, no gate."""
    return f"u|{trigger}|{event_id}"


def is_ordered_key(key: str) -> bool:
    return key.startswith("o|")


@dataclass(frozen=True)
class Scheduled:
    kind: str
    key: str
    ordered: bool
    due_ms: int = 0
    task: bytes | None = None


@dataclass(frozen=True)
class WorkItem:
    """A task ready for one delivery attempt, with what its outcome needs to know."""

    key: str
    ordered: bool
    task: bytes


class KeyState(Protocol):
    """Per-key state: the ordered gate, its queue, and tasks waiting for timers."""

    def is_busy(self) -> bool: ...
    def set_busy(self, busy: bool) -> None: ...
    def push(self, task: bytes) -> None: ...
    def pop(self) -> bytes | None: ...
    def hold(self, due_ms: int, task: bytes) -> None: ...
    def take_due(self, due_ms: int) -> list[bytes]: ...


@dataclass
class MemoryKeyState:
    """A dict-backed ``KeyState`` (tests, and in-process use)."""

    busy: bool = False
    queue: list[bytes] = field(default_factory=list)
    timers: dict[int, list[bytes]] = field(default_factory=dict)

    def is_busy(self) -> bool:
        return self.busy

    def set_busy(self, busy: bool) -> None:
        self.busy = busy

    def push(self, task: bytes) -> None:
        self.queue.append(task)

    def pop(self) -> bytes | None:
        return self.queue.pop(0) if self.queue else None

    def hold(self, due_ms: int, task: bytes) -> None:
        self.timers.setdefault(due_ms, []).append(task)

    def take_due(self, due_ms: int) -> list[bytes]:
        return self.timers.pop(due_ms, [])


def on_scheduled(state: KeyState, item: Scheduled, now_ms: int) -> tuple[list[WorkItem], list[int]]:
    """Handle one item: returns (tasks to attempt now, timers to register)."""
    if item.kind == RELEASE:
        state.set_busy(False)
        nxt = state.pop()
        if nxt is None:
            return [], []
        state.set_busy(True)
        return [WorkItem(item.key, True, nxt)], []
    assert item.task is not None, f"{item.kind} item without a task"
    if item.kind == NEW:
        if state.is_busy():
            state.push(item.task)
            return [], []
        state.set_busy(True)
        return [WorkItem(item.key, True, item.task)], []
    if item.due_ms <= now_ms:
        return [WorkItem(item.key, item.ordered, item.task)], []
    state.hold(item.due_ms, item.task)
    return [], [item.due_ms]


def on_timer(state: KeyState, key: str, due_ms: int) -> list[WorkItem]:
    """A timer fired: the tasks held for it are due."""
    ordered = is_ordered_key(key)
    return [WorkItem(key, ordered, task) for task in state.take_due(due_ms)]
