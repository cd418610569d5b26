"""The Python functions of the Flink job: thin adapters over ``transforms``.

Everything between operators is a pickled Python object (``WorkItem``, ``Scheduled``,
``OutRecord``); only the Kafka sink sees a typed Row. No side outputs (PyFlink leaks an
unconsumed side output into the main stream, and a union of one with a chained Python
operator can run the downstream function twice): one stream carries every kind, and
plain ``filter``s split it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pyflink.common import Row
from pyflink.datastream import FlatMapFunction, KeyedProcessFunction, MapFunction, RuntimeContext
from pyflink.datastream.functions import AsyncFunction
from pyflink.datastream.state import ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor
from pyflink.common.typeinfo import Types

from eventing.plan import Plan
from pipelines.delivery_settings import DeliverySettings
from pipelines.event_loop import install_policy
from transforms.delivery import DeliveryEngine, DeliveryTask, decide
from transforms.kafka_plane import Intake, OutRecord, Outbox, Topics, parse_retry_record
from transforms.records import DeadLetter, raw_text
from transforms.scheduler import Scheduled, WorkItem, on_scheduled, on_timer

log = logging.getLogger(__name__)


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


class IntakeFunction(FlatMapFunction):
    """Broker-topic Row -> WorkItem | Scheduled | OutRecord (decode, route; bad -> dead letter)."""

    def __init__(self, plan: Plan, topics: Topics) -> None:
        self.plan = plan
        self.topics = topics

    def open(self, runtime_context: RuntimeContext) -> None:
        self.intake = Intake(self.plan, self.topics)
        group = runtime_context.get_metrics_group()
        self.records_in = group.counter("knflow_records_in")

    def flat_map(self, row: Row):
        self.records_in.inc()
        headers = {k: bytes(v) for k, v in (row["headers"] or {}).items() if v is not None}
        origin = f"{row['topic']}/{row['partition']}@{row['offset']}"
        try:
            yield from self.intake.ingest(row["topic"], _bytes(row["key"]), headers, _bytes(row["value"]), origin, time.time())
        except Exception as exc:  # a bug must not stop the job or lose the record: dead-letter it
            log.exception("intake failed for %s", origin)
            yield internal_error(self.topics, f"intake failed: {type(exc).__name__}: {exc}", origin, _bytes(row["value"]))


class RetryRecordFunction(FlatMapFunction):
    """Retry-topic Row -> Scheduled; a foreign record is dead-lettered, never a crash."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics

    def flat_map(self, row: Row):
        headers = {k: bytes(v) for k, v in (row["headers"] or {}).items() if v is not None}
        try:
            yield parse_retry_record(_bytes(row["key"]), headers, _bytes(row["value"]))
        except (ValueError, UnicodeDecodeError) as exc:
            record = DeadLetter(reason=f"unreadable retry record: {exc}",
                                origin=f"{row['topic']}/{row['partition']}@{row['offset']}", raw=raw_text(_bytes(row["value"])))
            yield OutRecord(self.topics.dead_letters, None, record.to_json().encode(), {})


class SchedulerFunction(KeyedProcessFunction):
    """Keyed by scheduling key: holds retries until due (timers) and gates ordered keys.

    State and timers are checkpointed with the Kafka offsets, so a retry waiting for its
    due time survives a crash; nothing waits inside a delivery attempt.
    """

    def open(self, runtime_context: RuntimeContext) -> None:
        self.busy = runtime_context.get_state(ValueStateDescriptor("busy", Types.BOOLEAN()))  # before tickets
        self.gate = runtime_context.get_state(ValueStateDescriptor("gate", Types.LONG()))
        self.last = runtime_context.get_state(ValueStateDescriptor("last_ticket", Types.LONG()))
        self.queue = runtime_context.get_list_state(ListStateDescriptor("queue", Types.PICKLED_BYTE_ARRAY()))
        self.held = runtime_context.get_map_state(MapStateDescriptor("held", Types.LONG(), Types.PICKLED_BYTE_ARRAY()))

    def _state(self):
        function = self

        class FlinkKeyState:
            def in_delivery(self) -> int:
                ticket = function.gate.value()
                if ticket is None:  # never set since tickets: -1 = busy under a job from before them
                    return -1 if function.busy.value() else 0
                return ticket

            def set_in_delivery(self, ticket: int) -> None:
                function.gate.update(ticket)  # from now on the old flag is never read

            def last_ticket(self) -> int:
                return function.last.value() or 0

            def set_last_ticket(self, ticket: int) -> None:
                function.last.update(ticket)

            def push(self, task: bytes) -> None:
                function.queue.add(task)

            def pop(self):
                items = list(function.queue.get() or [])
                if not items:
                    return None
                function.queue.update(items[1:])
                return items[0]

            def hold(self, due_ms: int, ticket: int, task: bytes) -> None:
                tasks = function.held.get(due_ms) or []
                function.held.put(due_ms, tasks + [(ticket, task)])

            def take_due(self, due_ms: int) -> list[tuple[int, bytes]]:
                tasks = function.held.get(due_ms) or []
                if tasks:
                    function.held.remove(due_ms)
                # a bare task was held by a job from before tickets
                return [held if isinstance(held, tuple) else (0, held) for held in tasks]

        return FlinkKeyState()

    def process_element(self, item: Scheduled, ctx: KeyedProcessFunction.Context):
        now_ms = ctx.timer_service().current_processing_time()
        ready, timers = on_scheduled(self._state(), item, now_ms)
        for due in timers:
            ctx.timer_service().register_processing_time_timer(due)
        yield from ready

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        yield from on_timer(self._state(), ctx.get_current_key(), timestamp)


#: How long an attempt may run past its HTTP timeout before the operator gives up on it.
ATTEMPT_GRACE_S = 5.0


class DeliverFunction(AsyncFunction):
    """One delivery attempt per WorkItem (bounded by its trigger's timeout); returns the
    Kafka records its outcome causes. Many attempts are in flight; per-trigger concurrency
    is bounded by a semaphore."""

    def __init__(self, plan: Plan, topics: Topics, settings: DeliverySettings) -> None:
        self.plan = plan
        self.topics = topics
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        install_policy(self.settings.event_loop)  # the async operator creates its loop after this
        self.triggers = {t.key: t for t in self.plan.triggers()}
        self.outbox = Outbox(self.plan, self.topics)
        self.engine: DeliveryEngine | None = None
        self.limits: dict[str, asyncio.Semaphore] = {}
        group = runtime_context.get_metrics_group()
        self.attempts = group.counter("knflow_attempts")

    async def _engine(self) -> DeliveryEngine:
        if self.engine is None:  # created on the operator's own event loop
            engine = self.settings.engine(self.triggers)
            await engine.open()
            loop = type(asyncio.get_running_loop())
            log.info("deliveries run on %s.%s with %s", loop.__module__, loop.__qualname__, self.settings.http_client)
            self.limits = {key: asyncio.Semaphore(max(1, self.settings.concurrency)) for key in self.triggers}
            self.engine = engine
        return self.engine

    async def async_invoke(self, item: WorkItem):
        try:
            engine = await self._engine()
            task = DeliveryTask.from_bytes(item.task)
            self.attempts.inc()
            async with self.limits[task.trigger]:
                try:
                    async with asyncio.timeout(engine.route(task.trigger).timeout + ATTEMPT_GRACE_S):
                        outcome = await engine.attempt(task)
                except TimeoutError:
                    return self.timeout(item)
            return self.outbox.records(item, outcome)
        except Exception as exc:  # never fail the job over one task: dead-letter it with the reason
            log.exception("delivery failed unexpectedly for %s", item.key)
            return [internal_error(self.topics, f"delivery failed: {type(exc).__name__}: {exc}", item.key, item.task)]

    def timeout(self, item: WorkItem):
        """The attempt overran its bound (the HTTP client's own timeout should have ended it
        first): a retryable failure, never a crash. Also PyFlink's operator-timeout hook,
        though the job sets no operator timeout (see ``build_job``)."""
        task = DeliveryTask.from_bytes(item.task)
        trigger = self.triggers[task.trigger]
        outcome = decide(task, trigger.delivery, time.time(), None, None, b"",
                         "delivery attempt timed out in the async operator",
                         url=trigger.subscriber.url(self.settings.ref_urls))
        return self.outbox.records(item, outcome)


class ToSinkRow(MapFunction):
    """OutRecord -> the Kafka sink's Row(topic, key, value, headers)."""

    def map(self, record: OutRecord) -> Row:
        return Row(topic=record.topic, key=record.key, value=record.value, headers=dict(record.headers))


def internal_error(topics: Topics, reason: str, origin: str, raw: bytes | None) -> OutRecord:
    """A record the job could not process (a bug, not bad input) for the dead-letter topic."""
    record = DeadLetter(reason=reason, origin=origin, raw=raw_text(raw))
    return OutRecord(topics.dead_letters, None, record.to_json().encode(), {"knflow_kind": b"internal_error"})


def is_work(value: Any) -> bool:
    return isinstance(value, WorkItem)


def is_scheduled(value: Any) -> bool:
    return isinstance(value, Scheduled)


def is_out(value: Any) -> bool:
    return isinstance(value, OutRecord)

