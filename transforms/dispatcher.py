"""Run (trigger, event) pairs to settlement in one process: the DirectRunner's delivery loop.

Engine-neutral asyncio around ``DeliveryEngine``: many requests in flight (bounded per
trigger), in-process waiting for backoffs (allowed here, never in the Flink path), ordered
triggers delivered one event at a time per partition key (other keys are not blocked),
replies routed back through the broker's router, dead letters sent to their sink.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable

from cloudevents.core.v1.event import CloudEvent

from eventing.plan import ORDERED, BrokerPlan, TriggerPlan
from transforms.codec import event_to_dict
from transforms.delivery import (
    DeadLettered, DeadLetterStored, Delivered, DeliveryEngine, DeliveryTask, Replied, Retrying, first_attempts,
)
from transforms.records import DeadLetter
from transforms.router import Router

log = logging.getLogger(__name__)

#: Counter names, per trigger: the summary ``knflow run`` prints.
MATCHED, DELIVERED, RETRIED, DEAD_LETTERED, REPLIES = "matched", "delivered", "retried", "dead_lettered", "replies"


@dataclass(frozen=True)
class DeliveryRecord:
    trigger: str
    event_id: str
    status: int
    attempts: int


@dataclass(frozen=True)
class ReplyRecord:
    trigger: str
    event_id: str
    reply: CloudEvent


class InProcessDispatcher:
    def __init__(
        self,
        broker: BrokerPlan,
        engine: DeliveryEngine,
        *,
        concurrency: int = 64,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        stuck_limit: int = 10,
        cel_native: bool = False,
    ) -> None:
        self.broker = broker
        self.engine = engine
        self.cel_native = cel_native
        self._router: Router | None = None  # built on the first route(): in Beam, only replies are routed here
        self.clock = clock
        self.sleep = sleep
        self.stuck_limit = stuck_limit
        self._triggers = {t.key: t for t in broker.triggers}
        self._limits = {t.key: asyncio.Semaphore(max(1, concurrency)) for t in broker.triggers}
        self.counts: Counter[tuple[str, str]] = Counter()
        self.delivered: list[DeliveryRecord] = []
        self.dead_letters: list[DeadLetter] = []
        self.replies: list[ReplyRecord] = []

    def route(self, event: CloudEvent) -> list[TriggerPlan]:
        if self._router is None:
            self._router = Router(self.broker, self.cel_native)
        matches = self._router.route(event)
        for trigger in matches:
            self.counts[(trigger.key, MATCHED)] += 1
        return matches

    async def dispatch(self, pairs: Iterable[tuple[TriggerPlan, CloudEvent]]) -> None:
        """Deliver every pair (and every reply they cause) until each one settled."""
        by_event: dict[int, tuple[CloudEvent, list[TriggerPlan]]] = {}
        for trigger, event in pairs:
            by_event.setdefault(id(event), (event, []))[1].append(trigger)
        now = self.clock()
        chains: dict[tuple[str, str], list[DeliveryTask]] = defaultdict(list)
        singles: list[DeliveryTask] = []
        for event, triggers in by_event.values():
            # one encoding per event and delivery format, shared by its triggers' tasks
            for trigger, task in zip(triggers, first_attempts(event, triggers, now)):
                if trigger.ordering == ORDERED:
                    key = str(event.get_attributes().get("partitionkey", ""))
                    chains[(trigger.key, key)].append(task)
                else:
                    singles.append(task)
        jobs = [self._settle(task) for task in singles]
        jobs += [self._chain(tasks) for tasks in chains.values()]
        await asyncio.gather(*jobs)

    async def _chain(self, tasks: list[DeliveryTask]) -> None:
        for task in tasks:  # the next event of this key waits for the previous outcome
            await self._settle(task)

    async def _settle(self, task: DeliveryTask) -> None:
        trigger_key, event = task.trigger, task.event
        stuck = 0
        while True:
            wait = task.due_at - self.clock()
            if wait > 0:
                await self.sleep(wait)
            async with self._limits[trigger_key]:
                outcome = await self.engine.attempt(task)
            if isinstance(outcome, Retrying):
                self.counts[(trigger_key, RETRIED)] += 1
                if outcome.stuck:
                    stuck += 1
                    log.warning("dead-letter sink of %s keeps failing for event %s: %s",
                                trigger_key, event.get_id(), outcome.error)
                    if stuck >= self.stuck_limit:
                        self._dead_letter(outcome.task, outcome.task.event,
                                          f"dead-letter sink unavailable after {stuck} retries: {outcome.error}")
                        return
                task = outcome.task
                continue
            if isinstance(outcome, Delivered):
                self.counts[(trigger_key, DELIVERED)] += 1
                self.delivered.append(DeliveryRecord(trigger_key, event.get_id(), outcome.status, task.attempt + 1))
            elif isinstance(outcome, Replied):
                self.counts[(trigger_key, DELIVERED)] += 1
                self.counts[(trigger_key, REPLIES)] += 1
                self.delivered.append(DeliveryRecord(trigger_key, event.get_id(), outcome.status, task.attempt + 1))
                self.replies.append(ReplyRecord(trigger_key, event.get_id(), outcome.reply))
                await self.dispatch((t, outcome.reply) for t in self.route(outcome.reply))
            elif isinstance(outcome, DeadLettered):
                self.counts[(trigger_key, DEAD_LETTERED)] += 1
                if outcome.delivered:  # the original got a 2xx; its reply is what is dead-lettered
                    self.counts[(trigger_key, DELIVERED)] += 1
                    self.delivered.append(DeliveryRecord(trigger_key, event.get_id(), 200, task.attempt + 1))
                if outcome.next_task is not None:
                    task = outcome.next_task
                    continue
                reason = outcome.reason
                if outcome.destination is not None and outcome.destination.kafka_topic is not None:
                    reason += (f" (deadLetterSink {outcome.destination.describe()} is written by the flink runner; "
                               "this runner keeps the event in its own dead-letter output)")
                self._dead_letter(task, outcome.event, reason)
            elif isinstance(outcome, DeadLetterStored):
                error = task.error
                self.dead_letters.append(DeadLetter(
                    reason=error.reason if error else "dead-lettered", trigger=trigger_key,
                    event_id=event.get_id(), destination=self.engine.route(trigger_key).dead_letter_url, stored=True,
                    event=event_to_dict(task.event),
                ))
            return

    def _dead_letter(self, task: DeliveryTask, event: CloudEvent, reason: str) -> None:
        """No sink (or the sink is gone for good): the job's own dead-letter output keeps it."""
        log.warning("dead letter (job output) trigger=%s event=%s: %s", task.trigger, event.get_id(), reason)
        self.dead_letters.append(DeadLetter(reason=reason, trigger=task.trigger, event_id=event.get_id(),
                                            stored=False, event=event_to_dict(event)))

    def take(self) -> tuple[list[DeliveryRecord], list[DeadLetter], list[ReplyRecord]]:
        """Records produced since the last call."""
        out = (self.delivered, self.dead_letters, self.replies)
        self.delivered, self.dead_letters, self.replies = [], [], []
        return out
