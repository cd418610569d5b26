"""Durable retry timing and per-key ordering, as a pure state machine over keyed state.

The Flink job keys its delivering operator by source partition; this module decides, for
one partition's state, what runs now and what waits. Work runs as *chains*: an unordered
task is a chain of one; an ordered trigger's events of one partition key (its scheduling
key) run as one chain, one attempt after the other, so consecutive events of a key reach
the subscriber in the broker's order while other keys and triggers run concurrently.

- A chain stops at the first event that is not settled (a retry is due later, or the
  dead-letter sink is next): that follow-up is *held* until its due time (in Flink:
  keyed state and a processing-time timer, both checkpointed), and for an ordered key
  the not-started rest of the chain waits in the key's queue, ahead of what came later.
- An ordered key's gate is closed (its queue exists, possibly empty) from the moment a
  chain of it starts until its last event settled; events that arrive meanwhile queue.
  When the event in delivery settles, the queue becomes the next chain at once, in the
  same operator: a release never travels through Kafka.
- A chain still running when the operator returns is recorded as *in flight*, so a
  checkpoint taken meanwhile holds it and a restore runs it again (at least once).

Waiting out a backoff never happens inside a delivery attempt.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol


def ordered_key(trigger: str, partition_key: str) -> str:
    """Scheduling key of an ordered trigger's event: one gate per (trigger, partition key)."""
    return f"o|{trigger}|{partition_key}"


def unordered_key(trigger: str, event_id: str) -> str:
    """Scheduling key of an unordered task: no gate."""
    return f"u|{trigger}|{event_id}"


@dataclass(frozen=True, slots=True)
class WorkItem:
    """A task ready for one delivery attempt (a ``DeliveryTask``; opaque here), with its
    scheduling key. It stays an object on the way from intake to its attempt; only what
    waits in state is serialized (by the engine's state adapter)."""

    key: str
    ordered: bool
    task: Any


Chain = list[WorkItem]


class PartitionState(Protocol):
    """One partition's scheduling state: ordered keys' gates and queues, held follow-ups by
    due time, and chains in flight by id. Queue operations append or take whole runs, so
    a store can keep a long queue without reading it back on every event."""

    def gate_closed(self, key: str) -> bool: ...
    def close_gate(self, key: str) -> None: ...
    def open_gate(self, key: str) -> None: ...
    def enqueue(self, key: str, tasks: list[Any], front: bool = False) -> None: ...
    def take_queue(self, key: str) -> list[Any]: ...
    def hold(self, due_ms: int, item: WorkItem) -> None: ...
    def take_due(self, due_ms: int) -> list[WorkItem]: ...
    def held_due(self) -> list[int]: ...
    def put_in_flight(self, chain_id: int, chain: Chain) -> None: ...
    def drop_in_flight(self, chain_id: int) -> None: ...
    def in_flight(self) -> dict[int, Chain]: ...


@dataclass
class MemoryPartitionState:
    """A dict-backed ``PartitionState`` (tests, and in-process use)."""

    queues: dict[str, list[Any]] = field(default_factory=dict)  # a key present: its gate is closed
    held: dict[int, list[WorkItem]] = field(default_factory=dict)
    flying: dict[int, Chain] = field(default_factory=dict)

    def gate_closed(self, key: str) -> bool:
        return key in self.queues

    def close_gate(self, key: str) -> None:
        self.queues.setdefault(key, [])

    def open_gate(self, key: str) -> None:
        self.queues.pop(key, None)

    def enqueue(self, key: str, tasks: list[Any], front: bool = False) -> None:
        queue = self.queues.get(key, [])
        self.queues[key] = tasks + queue if front else queue + tasks

    def take_queue(self, key: str) -> list[Any]:
        queue = self.queues.get(key, [])
        if queue:
            self.queues[key] = []
        return queue

    def hold(self, due_ms: int, item: WorkItem) -> None:
        self.held.setdefault(due_ms, []).append(item)

    def take_due(self, due_ms: int) -> list[WorkItem]:
        return self.held.pop(due_ms, [])

    def held_due(self) -> list[int]:
        return list(self.held)

    def put_in_flight(self, chain_id: int, chain: Chain) -> None:
        self.flying[chain_id] = chain

    def drop_in_flight(self, chain_id: int) -> None:
        self.flying.pop(chain_id, None)

    def in_flight(self) -> dict[int, Chain]:
        return dict(self.flying)


def admit(state: PartitionState, items: Iterable[WorkItem]) -> list[Chain]:
    """Newly routed work, in broker order -> the chains to run now. An ordered key whose
    gate is closed queues its events instead; an open gate closes behind the new chain."""
    chains: list[Chain] = []
    ordered: dict[str, Chain] = {}
    waiting: dict[str, list[Any]] = {}
    for item in items:
        if not item.ordered:
            chains.append([item])
            continue
        if item.key in waiting:
            waiting[item.key].append(item.task)
            continue
        chain = ordered.get(item.key)
        if chain is None:
            if state.gate_closed(item.key):  # an earlier event of the key is still being delivered
                waiting[item.key] = [item.task]
                continue
            state.close_gate(item.key)
            chain = ordered[item.key] = []
            chains.append(chain)
        chain.append(item)
    for key, tasks in waiting.items():
        state.enqueue(key, tasks)
    return chains


def after_chain(state: PartitionState, chain: Chain, settled: int, follow_up: WorkItem | None,
                due_ms: int) -> tuple[list[Chain], list[int]]:
    """A chain ran: its first ``settled`` events settled; ``follow_up`` (due at ``due_ms``)
    is the next attempt of event ``settled`` if that one did not. Returns (chains to run
    now, timers to register)."""
    head = chain[0]
    if follow_up is not None:
        state.hold(due_ms, follow_up)
        rest = [item.task for item in chain[settled + 1:]]
        if head.ordered and rest:
            state.enqueue(head.key, rest, front=True)
        return [], [due_ms]
    if not head.ordered:
        return [], []
    queued = state.take_queue(head.key)
    if not queued:
        state.open_gate(head.key)  # nothing waits: the gate opens
        return [], []
    return [[WorkItem(head.key, True, task) for task in queued]], []  # the gate stays closed


def due(state: PartitionState, due_ms: int) -> list[Chain]:
    """A timer fired: each follow-up held for it runs as a chain of one (an ordered key's
    queue follows when it settles, through ``after_chain``)."""
    return [[item] for item in state.take_due(due_ms)]
