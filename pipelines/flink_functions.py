"""The Python function of the Flink job: a thin adapter over ``transforms.broker_worker``.

The job's only Python operator is ``BrokerPartitionFunction``, keyed by source partition.
It takes batches of packed Kafka records (``transforms.packing``: one BYTES value per
batch, made in the JVM) and returns one batch of packed records for the Kafka sink per
call; a checkpoint marker (also from the JVM) makes it settle or record the partition's
deliveries before the barrier (``transforms.broker_worker``). Retries, ordered keys' queues and chains in flight live in its keyed state; timers
bring due retries back. State and timers are checkpointed with the source offsets.
"""
from __future__ import annotations

import logging
from typing import Any

from pyflink.common.typeinfo import Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor

from eventing.plan import Plan
from pipelines.cpu_pinning import pin_python
from pipelines.delivery_settings import DeliverySettings
from pipelines.event_loop import new_event_loop
from pipelines.worker_exit import let_worker_exit
from transforms.gc_tuning import tune_for_streaming
from transforms.broker_worker import BrokerWorker, LoopThread
from transforms.delivery import DeliveryTask
from transforms.kafka_plane import OutRecord, Topics
from transforms.packing import is_marker, pack_batch, pack_out_record, unpack_batch, unpack_record
from transforms.scheduler import Chain, WorkItem

log = logging.getLogger(__name__)


def _items(stored: list[tuple[str, bool, bytes]]) -> list[WorkItem]:
    return [WorkItem(key, ordered, DeliveryTask.from_bytes(task)) for key, ordered, task in stored]


def _stored(items: list[WorkItem]) -> list[tuple[str, bool, bytes]]:
    """What waits in state is the task record (``DeliveryTask.to_bytes``): a stable format."""
    return [(item.key, item.ordered, item.task.to_bytes()) for item in items]


class FlinkPartitionState:
    """``transforms.scheduler.PartitionState`` over the function's keyed MapStates (the
    current key is the partition whose batch or timer is being handled)."""

    def __init__(self, queues: Any, held: Any, flying: Any) -> None:
        self.queues, self.held, self.flying = queues, held, flying

    def gate_closed(self, key: str) -> bool:
        return self.queues.contains(key)

    def close_gate(self, key: str) -> None:
        if not self.queues.contains(key):
            self.queues.put(key, [])

    def open_gate(self, key: str) -> None:
        self.queues.remove(key)

    def enqueue(self, key: str, tasks: list[DeliveryTask], front: bool = False) -> None:
        # task records stay bytes in the queue: appending never decodes what waits
        queue = self.queues.get(key) or []
        records = [task.to_bytes() for task in tasks]
        self.queues.put(key, records + queue if front else queue + records)

    def take_queue(self, key: str) -> list[DeliveryTask]:
        queue = self.queues.get(key) or []
        if queue:
            self.queues.put(key, [])
        return [DeliveryTask.from_bytes(record) for record in queue]

    def hold(self, due_ms: int, item: WorkItem) -> None:
        self.held.put(due_ms, (self.held.get(due_ms) or []) + _stored([item]))

    def take_due(self, due_ms: int) -> list[WorkItem]:
        stored = self.held.get(due_ms)
        if not stored:
            return []
        self.held.remove(due_ms)
        return _items(stored)

    def held_due(self) -> list[int]:
        return list(self.held.keys())

    def put_in_flight(self, chain_id: int, chain: Chain) -> None:
        self.flying.put(chain_id, _stored(chain))

    def drop_in_flight(self, chain_id: int) -> None:
        self.flying.remove(chain_id)

    def in_flight(self) -> dict[int, Chain]:
        return {chain_id: _items(stored) for chain_id, stored in self.flying.items()}


def out_batch(records: list[OutRecord]) -> bytes:
    """The sink's records as one batch (the JVM's ``Unbatch`` splits it)."""
    return pack_batch([pack_out_record(r.topic, r.key, r.value, r.headers) for r in records])


class BrokerPartitionFunction(KeyedProcessFunction):
    """Batches of one source partition's records -> batches of records for the Kafka sink."""

    def __init__(self, plan: Plan, topics: Topics, settings: DeliverySettings, wait_ms: int, collect_ms: int,
                 python_mode: str = "thread", python_cpu: str = "auto") -> None:
        self.plan = plan
        self.topics = topics
        self.settings = settings
        self.wait_ms = wait_ms
        self.collect_ms = collect_ms
        self.python_mode = python_mode
        self.python_cpu = python_cpu

    def open(self, runtime_context: RuntimeContext) -> None:
        # Before the delivery loop's thread starts: it inherits this thread's CPU. The subtask
        # index matters in process mode only; in thread mode PyFlink 2.2's runtime context
        # cannot tell it (it calls RuntimeContext.getIndexOfThisSubtask, gone in Flink 2).
        subtask = runtime_context.get_index_of_this_subtask() if self.python_mode == "process" else 0
        pin_python(self.python_cpu, self.python_mode, subtask)
        let_worker_exit()  # process mode: the worker must not outlive its TaskManager
        pickled = Types.PICKLED_BYTE_ARRAY()
        self.state = FlinkPartitionState(
            runtime_context.get_map_state(MapStateDescriptor("queues", Types.STRING(), pickled)),
            runtime_context.get_map_state(MapStateDescriptor("held", Types.LONG(), pickled)),
            runtime_context.get_map_state(MapStateDescriptor("in_flight", Types.LONG(), pickled)))
        loop = LoopThread(lambda: new_event_loop(self.settings.event_loop))
        engine = self.settings.engine({t.key: t for t in self.plan.delivery_triggers()})
        self.worker = BrokerWorker(self.plan, self.topics, engine, loop, concurrency=self.settings.concurrency,
                                   wait_s=self.wait_ms / 1000, collect_s=self.collect_ms / 1000,
                                   cel_native=self.settings.cel_native)
        log.info("deliveries run on %s with %s", type(loop.loop).__qualname__, self.settings.http_client)
        group = runtime_context.get_metrics_group()
        self.records_in = group.counter("knflow_records_in")
        self.attempts = group.counter("knflow_attempts")  # the worker counts; reported per call
        self.attempts_reported = 0
        tune_for_streaming()

    def close(self) -> None:
        worker = getattr(self, "worker", None)
        if worker is not None:
            worker.close()

    def process_element(self, batch: bytes, ctx: KeyedProcessFunction.Context):
        if is_marker(batch):  # a checkpoint barrier follows
            out, timers = self.worker.on_marker(ctx.get_current_key(), self.state)
        else:
            records = [unpack_record(record) for record in unpack_batch(batch)]
            self.records_in.inc(len(records))
            out, timers = self.worker.on_records(ctx.get_current_key(), self.state, records)
        yield from self._emit(out, timers, ctx)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        out, timers = self.worker.on_timer(ctx.get_current_key(), self.state, timestamp)
        yield from self._emit(out, timers, ctx)

    def _emit(self, out: list[OutRecord], timers: list[int], ctx: Any):
        attempts = self.worker.attempts
        self.attempts.inc(attempts - self.attempts_reported)
        self.attempts_reported = attempts
        service = ctx.timer_service()
        for due in set(timers):
            service.register_processing_time_timer(due)
        if out:
            yield out_batch(out)
