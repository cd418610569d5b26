"""PingSources inside the Flink job: a keyed timer per source that emits its ticks as
packed in-records, unioned into the job's records where the broker topic enters.

    OncePerStart (JVM source: each PingSource's key once per job start, then idle, never
    ending) --key by source--> PingFunction (Python: the source's cursor in keyed
    ValueState, a processing-time timer for its next tick; each due tick -> a packed
    in-record of the pseudo topic knflow-ping/<ns>/<name>) --union--> Batcher -> ...

Why an unbounded driver: a keyed function behind a bounded input ends when that input
ends, and its processing-time timers never fire (measured on Flink 2.2 with
``from_collection``: the job finished at once). Timers and the cursor are Flink keyed
state, so they are checkpointed with the Kafka offsets; checkpoint barriers align through
the union, so a checkpoint holds each tick once (the record in the Python operator's
state or delivered, and the cursor past it). After a restore the driver emits every key
again; the function finds the key's cursor and only re-arms (a timer for the same time
is one timer), so nothing doubles.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Sequence

from pyflink.common import Types, WatermarkStrategy
from pyflink.datastream import DataStream, KeyedProcessFunction, KeyedStream, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from eventing.plan import PingSourcePlan
from pipelines.worker_exit import let_worker_exit
from transforms.ping import PingClock
from transforms.sources import DEFAULT_GRACE

log = logging.getLogger(__name__)


class PingFunction(KeyedProcessFunction):
    """Keyed by PingSource (``namespace/name``): its cursor (epoch ms up to which every tick
    is accounted for) in ValueState, its next tick in a processing-time timer."""

    def __init__(self, sources: Sequence[PingSourcePlan], recovery_window_s: float) -> None:
        self.sources = tuple(sources)
        self.recovery_window_s = recovery_window_s

    def open(self, runtime_context: RuntimeContext) -> None:
        let_worker_exit()  # process mode: the worker must not outlive its TaskManager
        self.cursor = runtime_context.get_state(ValueStateDescriptor("cursor", Types.LONG()))
        window = timedelta(seconds=self.recovery_window_s)
        self.clocks = {s.key: PingClock(s, recovery_window=window) for s in self.sources}
        # Keys this process has stepped: the first step after a restore is a resume.
        self.stepped: set[str] = set()
        group = runtime_context.get_metrics_group()
        self.ticks = group.counter("knflow_ping_ticks")
        self.skipped = group.counter("knflow_ping_skipped")

    def process_element(self, key: str, ctx: KeyedProcessFunction.Context):
        # the driver's element: once per job start and key
        yield from self._step(ctx.get_current_key(), ctx.timer_service().current_processing_time(), ctx)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        now = max(timestamp, ctx.timer_service().current_processing_time())
        yield from self._step(ctx.get_current_key(), now, ctx)

    def _step(self, key: str, now_ms: int, ctx: Any):
        clock = self.clocks.get(key)
        if clock is None:  # a restored source that is no longer in the manifests
            self.cursor.clear()
            return
        cursor = self.cursor.value()
        step = clock.step(cursor, now_ms, resumed=cursor is not None and key not in self.stepped)
        self.stepped.add(key)
        self.cursor.update(step.cursor_ms)
        ctx.timer_service().register_processing_time_timer(step.next_ms)
        if step.skipped:
            self.skipped.inc(step.skipped)
            log.warning("PingSource %s: %d tick(s) missed while the job was down were skipped", key, step.skipped)
        if step.records:
            self.ticks.inc(len(step.records))
            yield from step.records


def ping_stream(env: Any, sources: Sequence[PingSourcePlan], recovery_window_s: float) -> DataStream:
    """The packed in-records of ``sources``' ticks (bytes), to union with the job's records."""
    from pyflink.java_gateway import get_gateway

    gateway = get_gateway()
    keys = gateway.new_array(gateway.jvm.String, len(sources))
    for index, source in enumerate(sources):
        keys[index] = source.key
    j_driver = (env._j_stream_execution_environment
                .fromSource(gateway.jvm.io.knflow.flink.OncePerStart(keys),
                            WatermarkStrategy.no_watermarks()._j_watermark_strategy, "PingSources (once per start)")
                .uid("knflow-ping-driver")
                .setParallelism(1))
    # The driver emits Row(key, key), PyFlink's keyed shape: no Python key selector operator.
    j_keyed = j_driver.keyBy(gateway.jvm.KeyByKeySelector(), Types.ROW([Types.STRING()]).get_java_type_info())
    keyed = KeyedStream(j_keyed, Types.STRING(), DataStream(j_driver))
    return (keyed.process(PingFunction(sources, recovery_window_s), output_type=Types.PRIMITIVE_ARRAY(Types.BYTE()))
            .name("PingSource ticks").uid("knflow-ping-ticks"))


def recovery_window_s(checkpoint_interval_s: float) -> float:
    """How far past a restored cursor ticks are emitted again: a checkpoint interval (the
    run that failed may have emitted that much after its last checkpoint) plus the grace."""
    return max(0.0, checkpoint_interval_s) + DEFAULT_GRACE.total_seconds()
