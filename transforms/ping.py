"""PingSource ticks as records of the job's input, engine-neutral.

An engine keeps one cursor per PingSource in its checkpointed state and calls
``PingClock.step`` when the source's timer fires (or when the job starts); the step
returns the ticks to emit, each as a packed in-record (``transforms.packing``: the bytes
the JVM's ``PackedRecordDeserializer`` makes of a Kafka record), the new cursor, and when
to wake next. A tick's record carries the pseudo topic ``knflow-ping/<ns>/<name>``
(``PingSourcePlan.tick_topic``), partition 0, offset and timestamp the tick's epoch
milliseconds, and the event in the CloudEvents Kafka binding (binary mode): it enters the
job where a broker-topic record enters, and is decoded, routed and delivered the same way
(``transforms.kafka_plane.Intake`` routes the pseudo topic to the source's broker, or to
its direct sink).

Semantics (``transforms.sources``: ``due_ticks``, ``resume_ticks``, ``ping_event``):
- one event per tick, id a UUID 5 of the source and the tick time;
- the cursor advances in the same checkpoint as the emitted records, so a checkpoint
  holds each tick once;
- a new source's first tick is the first one after the job first ran it;
- after a restore, the ticks of ``recovery_window`` after the restored cursor are
  emitted (possibly again, with the same id), later ticks older than ``grace`` are
  skipped (missed while the job was down, as Knative skips them).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from transforms.codec import encode_kafka
from transforms.packing import InRecord, pack_record
from transforms.sources import DEFAULT_GRACE, due_ticks, parse_schedule, ping_event, resume_ticks

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)


def _moment(epoch_ms: int) -> datetime:
    return _EPOCH + epoch_ms * _MS


def _epoch_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // _MS


def tick_record(source, tick: datetime) -> bytes:
    """The packed in-record of ``source``'s (a ``PingSourcePlan``) event for ``tick``."""
    event = ping_event(tick, namespace=source.namespace, name=source.name, content_type=source.content_type,
                       data=source.data, ce_overrides=source.ce_overrides)
    key, headers, value = encode_kafka(event, "binary")
    tick_ms = _epoch_ms(tick)
    return pack_record(InRecord(source.tick_topic, 0, tick_ms, tick_ms, key, value, dict(headers)))


@dataclass(frozen=True)
class Step:
    """What one wake-up of a source does: emit ``records`` (in tick order), store
    ``cursor_ms``, wake again at ``next_ms``."""

    records: tuple[bytes, ...]
    ticks: tuple[int, ...]  # the emitted ticks, epoch ms
    skipped: int
    cursor_ms: int
    next_ms: int


class PingClock:
    """One PingSource's schedule, turned into steps. Pure: no clock of its own, no I/O."""

    def __init__(self, source, *, grace: timedelta = DEFAULT_GRACE,
                 recovery_window: timedelta = DEFAULT_GRACE) -> None:
        self.source = source
        self.schedule = parse_schedule(source.schedule, source.timezone)
        self.grace = grace
        self.recovery_window = recovery_window

    def step(self, cursor_ms: int | None, now_ms: int, *, resumed: bool = False) -> Step:
        """The source's step at ``now_ms`` with ``cursor_ms`` from state (None: a new
        source). ``resumed``: the first step of this source since the job was restored
        from a checkpoint or savepoint (the engine's process, not its state, knows)."""
        now = _moment(now_ms)
        if cursor_ms is None:
            return Step((), (), 0, now_ms, _epoch_ms(self.schedule.next_after(now)))
        cursor = _moment(cursor_ms)
        if resumed:
            decision = resume_ticks(self.schedule, cursor, now, window=self.recovery_window, grace=self.grace)
        else:
            decision = due_ticks(self.schedule, cursor, now, grace=self.grace)
        return Step(tuple(tick_record(self.source, tick) for tick in decision.emit),
                    tuple(_epoch_ms(tick) for tick in decision.emit), decision.skipped,
                    max(cursor_ms, _epoch_ms(decision.cursor)), _epoch_ms(decision.next_tick))
