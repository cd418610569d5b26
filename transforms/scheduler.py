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
from typing import Iterable, Protocol


def ordered_key(trigger: str, partition_key: str) -> str:
    """Scheduling key of an ordered trigger's event: one gate per (trigger, partition key)."""
    return f"o|{trigger}|{partition_key}"


def unordered_key(trigger: str, event_id: str) -> str:
    """Scheduling key of an unordered task: no gate."""
    return f"u|{trigger}|{event_id}"


@dataclass(frozen=True, slots=True)
class WorkItem:
    """A task (``DeliveryTask`` bytes) ready for one delivery attempt, with its scheduling key."""

    key: str
    ordered: bool
    task: bytes


Chain = list[WorkItem]


class PartitionState(Protocol):
    """One partition's scheduling state: ordered keys' queues (None: gate open), held
    follow-ups by due time, and chains in flight by id."""

    def queue(self, key: str) -> list[bytes] | None: ...
    def set_queue(self, key: str, tasks: list[bytes] | None) -> None: ...
    def hold(self, due_ms: int, item: WorkItem) -> None: ...
    def take_due(self, due_ms: int) -> list[WorkItem]: ...
    def put_in_flight(self, chain_id: int, chain: Chain) -> None: ...
    def drop_in_flight(self, chain_id: int) -> None: ...
    def in_flight(self) -> dict[int, Chain]: ...


@dataclass
class MemoryPartitionState:
    """A dict-backed ``PartitionState`` (tests, and in-process use)."""

    queues: dict[str, list[bytes]] = field(default_factory=dict)
    held: dict[int, list[WorkItem]] = field(default_factory=dict)
    flying: dict[int, Chain] = field(default_factory=dict)

    def queue(self, key: str) -> list[bytes] | None:
        return self.queues.get(key)

    def set_queue(self, key: str, tasks: list[bytes] | None) -> None:
        if tasks is None:
            self.queues.pop(key, None)
        else:
            self.queues[key] = tasks

    def hold(self, due_ms: int, item: WorkItem) -> None:
        self.held.setdefault(due_ms, []).append(item)

    def take_due(self, due_ms: int) -> list[WorkItem]:
        return self.held.pop(due_ms, [])

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
    waiting: dict[str, list[bytes]] = {}
    for item in items:
        if not item.ordered:
            chains.append([item])
            continue
        if item.key in waiting:
            waiting[item.key].append(item.task)
            continue
        chain = ordered.get(item.key)
        if chain is None:
            queued = state.queue(item.key)
            if queued is not None:  # an earlier event of the key is still being delivered
                waiting[item.key] = queued + [item.task]
                continue
            state.set_queue(item.key, [])
            chain = ordered[item.key] = []
            chains.append(chain)
        chain.append(item)
    for key, tasks in waiting.items():
        state.set_queue(key, tasks)
    return chains


def after_chain(state: PartitionState, chain: Chain, settled: int, follow_up: WorkItem | None,
                due_ms: int) -> tuple[list[Chain], list[int]]:
    """A chain ran: its first ``settled`` events settled; ``follow_up`` (due at ``due_ms``)
    is the next attempt of event ``settled`` if that one did not. Returns (chains to run
    now, timers to register)."""
    head = chain[0]
    if follow_up is not None:
        state.hold(due_ms, follow_up)
        if head.ordered:
            rest = [item.task for item in chain[settled + 1:]]
            state.set_queue(head.key, rest + (state.queue(head.key) or []))
        return [], [due_ms]
    if not head.ordered:
        return [], []
    queued = state.queue(head.key)
    if not queued:
        state.set_queue(head.key, None)  # nothing waits: the gate opens
        return [], []
    state.set_queue(head.key, [])  # the queue runs next, the gate stays closed
    return [[WorkItem(head.key, True, task) for task in queued]], []


def due(state: PartitionState, due_ms: int) -> list[Chain]:
    """A timer fired: each follow-up held for it runs as a chain of one (an ordered key's
    queue follows when it settles, through ``after_chain``)."""
    return [[item] for item in state.take_due(due_ms)]
