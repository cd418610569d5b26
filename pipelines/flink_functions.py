"""The Python functions of the Flink job: thin adapters over ``transforms``.

Every Python operator emits one row type, ``ITEM_FIELDS``: a ``kind`` column says whether a
row is a Kafka record for the sink (``OUT``: topic, key, value, headers), a task ready for
an attempt (``WORK``) or one for the scheduler (``SCHEDULED``); the last two carry their
pickled ``WorkItem`` / ``Scheduled`` in ``value`` and their scheduling key in ``topic``.
The job splits the kinds with SQL ``WHERE kind = ...`` (``flink_job``): JVM Calc operators,
so a row crosses into Python only where Python code runs on it. (PyFlink's side outputs
are not used: an unconsumed one leaks into the main stream, and each adds a Python map.)
"""
from __future__ import annotations

import asyncio
import logging
import pickle
import time
from typing import Any

from pyflink.common import Row
from pyflink.datastream import FlatMapFunction, KeyedProcessFunction, RuntimeContext
from pyflink.datastream.functions import AsyncFunction
from pyflink.datastream.state import ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor
from pyflink.common.typeinfo import Types

from eventing.plan import Plan
from pipelines.delivery_settings import DeliverySettings
from pipelines.event_loop import install_policy
from transforms.delivery import DeliveryEngine, DeliveryTask, decide
from transforms.kafka_plane import Intake, OutRecord, Outbox, Topics, dead_letter_record, parse_retry_record
from transforms.records import DeadLetter, raw_text
from transforms.scheduler import Scheduled, WorkItem, on_scheduled, on_timer

log = logging.getLogger(__name__)


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


#: The columns of every row between the job's operators (see the module docstring).
ITEM_FIELDS = ("kind", "topic", "key", "value", "headers")
#: The Kafka sink's columns: an OUT row without its kind.
SINK_FIELDS = ITEM_FIELDS[1:]
OUT, WORK, SCHEDULED = 0, 1, 2


def item_row(item: WorkItem | Scheduled | OutRecord) -> Row:
    """Any item a Python operator emits -> its ``ITEM_FIELDS`` row."""
    if isinstance(item, OutRecord):
        return Row(OUT, *sink_row(item))
    kind = WORK if isinstance(item, WorkItem) else SCHEDULED
    return Row(kind, item.key, None, pickle.dumps(item, pickle.HIGHEST_PROTOCOL), None)


def row_item(row: Row) -> WorkItem | Scheduled:
    """A WORK or SCHEDULED row -> the item it carries."""
    return pickle.loads(row[3])


def sink_row(record: OutRecord) -> Row:
    """OutRecord -> the Kafka sink's row (``SINK_FIELDS``)."""
    return Row(record.topic, record.key, record.value, dict(record.headers))


class IntakeFunction(FlatMapFunction):
    """Broker-topic Row -> WORK | SCHEDULED | OUT rows (decode, route; bad -> dead letter)."""

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
            items = self.intake.ingest(row["topic"], _bytes(row["key"]), headers, _bytes(row["value"]), origin, time.time())
            rows = [item_row(item) for item in items]
        except Exception as exc:  # a bug must not stop the job or lose the record: dead-letter it
            log.exception("intake failed for %s", origin)
            rows = [item_row(internal_error(self.topics, f"intake failed: {type(exc).__name__}: {exc}", origin,
                                            _bytes(row["value"])))]
        yield from rows


class RetryRecordFunction(FlatMapFunction):
    """Retry-topic Row -> a SCHEDULED row; a foreign record is dead-lettered, never a crash."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics

    def flat_map(self, row: Row):
        headers = {k: bytes(v) for k, v in (row["headers"] or {}).items() if v is not None}
        try:
            yield item_row(parse_retry_record(_bytes(row["key"]), headers, _bytes(row["value"])))
        except (ValueError, UnicodeDecodeError) as exc:
            record = DeadLetter(reason=f"unreadable retry record: {exc}",
                                origin=f"{row['topic']}/{row['partition']}@{row['offset']}", raw=raw_text(_bytes(row["value"])))
            yield item_row(dead_letter_record(self.topics, record, None))


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

    def process_element(self, row: Row, ctx: KeyedProcessFunction.Context):
        now_ms = ctx.timer_service().current_processing_time()
        ready, timers = on_scheduled(self._state(), row_item(row), now_ms)
        for due in timers:
            ctx.timer_service().register_processing_time_timer(due)
        for item in ready:
            yield item_row(item)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        for item in on_timer(self._state(), ctx.get_current_key(), timestamp):
            yield item_row(item)


#: How long an attempt may run past its HTTP timeout before the operator gives up on it.
ATTEMPT_GRACE_S = 5.0


class DeliverFunction(AsyncFunction):
    """One delivery attempt per WORK row (bounded by its trigger's timeout); returns the
    Kafka sink rows its outcome causes. Many attempts are in flight; per-trigger concurrency
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

    async def async_invoke(self, row: Row):
        return [sink_row(record) for record in await self._attempt(row)]

    def timeout(self, row: Row):
        """PyFlink's operator-timeout hook (the job sets no operator timeout: see ``build_job``)."""
        return [sink_row(record) for record in self._timed_out(row_item(row))]

    async def _attempt(self, row: Row) -> list[OutRecord]:
        item = None
        try:
            item = row_item(row)
            engine = await self._engine()
            task = DeliveryTask.from_bytes(item.task)
            self.attempts.inc()
            async with self.limits[task.trigger]:
                try:
                    async with asyncio.timeout(engine.route(task.trigger).timeout + ATTEMPT_GRACE_S):
                        outcome = await engine.attempt(task)
                except TimeoutError:
                    return self._timed_out(item)
            return self.outbox.records(item, outcome)
        except Exception as exc:  # never fail the job over one task: dead-letter it with the reason
            origin = item.key if item else f"{row[0]}/{row[1]}"
            log.exception("delivery failed unexpectedly for %s", origin)
            raw = item.task if item else _bytes(row[3])
            return [internal_error(self.topics, f"delivery failed: {type(exc).__name__}: {exc}", origin, raw)]

    def _timed_out(self, item: WorkItem) -> list[OutRecord]:
        """The attempt overran its bound (the HTTP client's own timeout should have ended it
        first): a retryable failure, never a crash."""
        task = DeliveryTask.from_bytes(item.task)
        trigger = self.triggers[task.trigger]
        outcome = decide(task, trigger.delivery, time.time(), None, None, b"",
                         "delivery attempt timed out in the async operator",
                         url=trigger.subscriber.url(self.settings.ref_urls))
        return self.outbox.records(item, outcome)


def internal_error(topics: Topics, reason: str, origin: str, raw: bytes | None) -> OutRecord:
    """A record the job could not process (a bug, not bad input) for the dead-letter topic."""
    record = DeadLetter(reason=reason, origin=origin, raw=raw_text(raw))
    return dead_letter_record(topics, record, b"internal_error")

