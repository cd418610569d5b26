"""Plan -> Beam pipeline: decode -> route -> deliver, failures through tagged outputs.

Like Beam's ``requestresponse.py``: ``BrokerDataflow`` is a thin PTransform whose
``expand()`` only wires private DoFns; the sender is opened in ``setup()`` and closed in
``teardown()``; bad records and dead letters leave through tagged outputs, never as
exceptions.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from eventing.plan import BrokerPlan
from pipelines.delivery_settings import DeliverySettings
from pipelines.event_loop import new_event_loop
from transforms.codec import CodecError, decode_kafka
from transforms.dispatcher import InProcessDispatcher
from transforms.records import DeadLetter, RawRecord, raw_text
from transforms.router import Router

log = logging.getLogger(__name__)

DEAD_LETTERS = "dead_letters"
REPLIES = "replies"
METRICS_NAMESPACE = "knflow"


def counter(trigger: str, name: str):
    return Metrics.counter(METRICS_NAMESPACE, f"{trigger}|{name}")


class BrokerOutputs(NamedTuple):
    delivered: Any     # PCollection[DeliveryRecord]
    dead_letters: Any  # PCollection[DeadLetter]: undecodable records + events dead-lettered
    replies: Any       # PCollection[ReplyRecord]: replies (already routed again)


class _Decode(beam.DoFn):
    """RawRecord -> CloudEvent; a record that is not a valid CloudEvent is a dead letter."""

    def process(self, record: RawRecord) -> Iterable[Any]:
        try:
            yield decode_kafka(record.headers, record.value)
        except CodecError as exc:
            counter("-", "undecodable").inc()
            log.warning("dead letter: %s: %s", record.origin or "record", exc)
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter(
                reason=f"not a valid CloudEvent: {exc}", origin=record.origin, raw=raw_text(record.value),
                headers={k: raw_text(v) or "" for k, v in record.headers},
            ))


class _Route(beam.DoFn):
    """CloudEvent -> (trigger key, event) for every trigger that delivers it."""

    def __init__(self, broker: BrokerPlan, cel_native: bool = False) -> None:
        self.broker = broker
        self.cel_native = cel_native

    def setup(self) -> None:
        self.router = Router(self.broker, self.cel_native)

    def process(self, event: Any) -> Iterable[tuple[str, Any]]:
        for trigger in self.router.route(event):
            counter(trigger.key, "matched").inc()
            yield trigger.key, event


class _Deliver(beam.DoFn):
    """Deliver (trigger, event) pairs with many requests in flight per bundle.

    Pairs are buffered and settled together at ``max_buffer`` or at the bundle's end
    (retries wait in process: this is the DirectRunner path), so up to ``concurrency``
    requests per trigger are in flight. Replies are routed again through the broker.
    """

    def __init__(self, broker: BrokerPlan, settings: DeliverySettings, max_buffer: int = 1024) -> None:
        self.broker = broker
        self.settings = settings
        self.max_buffer = max_buffer

    def setup(self) -> None:
        self.loop = new_event_loop(self.settings.event_loop)
        self.triggers = {t.key: t for t in self.broker.triggers}
        self.engine = self.settings.engine(self.triggers)
        self.loop.run_until_complete(self.engine.open())
        self.dispatcher = self.loop.run_until_complete(self._make_dispatcher())
        self.pending: list[tuple[str, Any]] = []

    async def _make_dispatcher(self) -> InProcessDispatcher:
        # Semaphores bind to the running loop: create the dispatcher inside it.
        return InProcessDispatcher(self.broker, self.engine, concurrency=self.settings.concurrency,
                                   cel_native=self.settings.cel_native)

    def start_bundle(self) -> None:
        self.pending = []

    def process(self, pair: tuple[str, Any]) -> Iterable[Any]:
        self.pending.append(pair)
        if len(self.pending) >= self.max_buffer:
            yield from self._flush(windowed=False)

    def finish_bundle(self) -> Iterable[Any]:
        yield from self._flush(windowed=True)

    def _flush(self, windowed: bool) -> Iterable[Any]:
        if not self.pending:
            return
        pairs = [(self.triggers[key], event) for key, event in self.pending]
        self.pending = []
        before = self.dispatcher.counts.copy()
        self.loop.run_until_complete(self.dispatcher.dispatch(pairs))
        for (trigger, name), value in (self.dispatcher.counts - before).items():
            counter(trigger, name).inc(value)
        delivered, dead_letters, replies = self.dispatcher.take()
        wrap = GlobalWindows.windowed_value if windowed else (lambda v: v)
        for record in delivered:
            yield wrap(record)
        for record in dead_letters:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, wrap(record))
        for record in replies:
            yield beam.pvalue.TaggedOutput(REPLIES, wrap(record))

    def teardown(self) -> None:
        loop = getattr(self, "loop", None)
        if loop is not None and not loop.is_closed():
            loop.run_until_complete(self.engine.close())
            loop.close()


class BrokerDataflow(beam.PTransform):
    """One broker's dataflow over a PCollection of ``RawRecord``s."""

    def __init__(self, broker: BrokerPlan, settings: DeliverySettings | None = None) -> None:
        super().__init__(label=f"Broker[{broker.key}]")
        self.broker = broker
        self.settings = settings or DeliverySettings()

    def expand(self, records: Any) -> BrokerOutputs:
        decoded = records | "Decode" >> beam.ParDo(_Decode()).with_outputs(DEAD_LETTERS, main="events")
        routed = decoded.events | "Route" >> beam.ParDo(_Route(self.broker, self.settings.cel_native))
        delivered = routed | "Deliver" >> beam.ParDo(_Deliver(self.broker, self.settings)).with_outputs(
            DEAD_LETTERS, REPLIES, main="delivered")
        dead_letters = (decoded[DEAD_LETTERS], delivered[DEAD_LETTERS]) | "DeadLetters" >> beam.Flatten()
        return BrokerOutputs(delivered.delivered, dead_letters, delivered[REPLIES])
