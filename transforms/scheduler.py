"""Durable retry timing and per-key ordering, as a pure state machine over keyed state.

Waiting out a backoff never happens inside a delivery attempt. A task due later is
handed here (in Flink: read back from the retry topic into a keyed operator whose state
and processing-time timers are checkpointed), held until its due time, then released for
one more attempt.

Ordered triggers: per scheduling key (trigger + partition key) one event is in delivery
at a time. A new event waits in the key's queue while the gate is closed; the outcome of
the event in delivery (delivered or finally dead-lettered) sends a *release* that opens
the gate for the next one. Other keys are never blocked.

Tickets make releases idempotent. Each event let through the gate gets the key's next
ticket (1, 2, ...); its work items, retries and release carry it, and a release opens the
gate only if its ticket is the one in delivery. After a restore, Kafka replays records
written after the checkpoint and the async operator repeats attempts that were in
flight, so the same release can arrive twice, or a stale retry can be delivered once
more: without tickets, the second release would open the gate while the next event is
in delivery, and two events of one key would overlap. Ticket 0 means "none" (records of
a job from before tickets): such a release opens the gate as it always did.
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
    ticket: int = 0  # ordered keys: the gate ticket of the event (0: none)


@dataclass(frozen=True)
class WorkItem:
    """A task ready for one delivery attempt, with what its outcome needs to know."""

    key: str
    ordered: bool
    task: bytes
    ticket: int = 0


class KeyState(Protocol):
    """Per-key state: the ordered gate (the ticket in delivery, 0 when open, and the last
    ticket issued), its queue, and tasks waiting for timers with their tickets."""

    def in_delivery(self) -> int: ...
    def set_in_delivery(self, ticket: int) -> None: ...
    def last_ticket(self) -> int: ...
    def set_last_ticket(self, ticket: int) -> None: ...
    def push(self, task: bytes) -> None: ...
    def pop(self) -> bytes | None: ...
    def hold(self, due_ms: int, ticket: int, task: bytes) -> None: ...
    def take_due(self, due_ms: int) -> list[tuple[int, bytes]]: ...


@dataclass
class MemoryKeyState:
    """A dict-backed ``KeyState`` (tests, and in-process use)."""

    current: int = 0
    last: int = 0
    queue: list[bytes] = field(default_factory=list)
    timers: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)

    def in_delivery(self) -> int:
        return self.current

    def set_in_delivery(self, ticket: int) -> None:
        self.current = ticket

    def last_ticket(self) -> int:
        return self.last

    def set_last_ticket(self, ticket: int) -> None:
        self.last = ticket

    def push(self, task: bytes) -> None:
        self.queue.append(task)

    def pop(self) -> bytes | None:
        return self.queue.pop(0) if self.queue else None

    def hold(self, due_ms: int, ticket: int, task: bytes) -> None:
        self.timers.setdefault(due_ms, []).append((ticket, task))

    def take_due(self, due_ms: int) -> list[tuple[int, bytes]]:
        return self.timers.pop(due_ms, [])


def _let_through(state: KeyState, key: str, task: bytes) -> WorkItem:
    """Close the gate behind ``task`` under the key's next ticket."""
    ticket = state.last_ticket() + 1
    state.set_last_ticket(ticket)
    state.set_in_delivery(ticket)
    return WorkItem(key, True, task, ticket)


def on_scheduled(state: KeyState, item: Scheduled, now_ms: int) -> tuple[list[WorkItem], list[int]]:
    """Handle one item: returns (tasks to attempt now, timers to register)."""
    if item.kind == RELEASE:
        current = state.in_delivery()
        if not current or (item.ticket and item.ticket != current):
            return [], []  # a repeated or stale release: the gate stays as it is
        state.set_in_delivery(0)
        nxt = state.pop()
        if nxt is None:
            return [], []
        return [_let_through(state, item.key, nxt)], []
    assert item.task is not None, f"{item.kind} item without a task"
    if item.kind == NEW:
        if state.in_delivery():
            state.push(item.task)
            return [], []
        return [_let_through(state, item.key, item.task)], []
    if item.due_ms <= now_ms:
        return [WorkItem(item.key, item.ordered, item.task, item.ticket)], []
    state.hold(item.due_ms, item.ticket, item.task)
    return [], [item.due_ms]


def on_timer(state: KeyState, key: str, due_ms: int) -> list[WorkItem]:
    """A timer fired: the tasks held for it are due."""
    ordered = is_ordered_key(key)
    return [WorkItem(key, ordered, task, ticket) for ticket, task in state.take_due(due_ms)]
