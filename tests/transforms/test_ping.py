"""PingSource ticks as job input, without an engine: the clock's steps (fresh, on time,
after a restore), the packed record a tick becomes, and how the intake routes it (to the
broker the source feeds, or to its direct sink)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from tests.plans import plan_from_yaml
from transforms.codec import decode_kafka
from transforms.kafka_plane import Intake, Topics
from transforms.packing import unpack_record
from transforms.ping import PingClock, tick_record
from transforms.scheduler import WorkItem
from transforms.sources import parse_schedule, ping_event, resume_ticks

UTC = timezone.utc
T0 = 1_800_000_000_000  # 2027-01-15T08:00:00Z, a whole second


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


MANIFESTS = """
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: live, namespace: ns}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: beats, namespace: ns}
spec:
  broker: live
  filters: [{exact: {type: dev.knative.sources.ping}}]
  subscriber: {uri: 'http://beats.local/'}
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: fed, namespace: ns}
spec:
  schedule: '@every 1s'
  contentType: application/json
  data: '{"beat": true}'
  ceOverrides: {extensions: {platform: live}}
  sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: live}}
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: direct, namespace: ns}
spec:
  schedule: '*/5 * * * *'
  dataBase64: AAE=
  sink: {uri: 'http://sink.local/'}
"""
PLAN = plan_from_yaml(MANIFESTS)
FED, DIRECT = PLAN.sources


def test_resume_emits_the_window_after_the_cursor_and_skips_older_missed_ticks():
    s = parse_schedule("@every 1s")
    cursor, now = at(2026, 1, 1, 0, 0, 0), at(2026, 1, 1, 0, 1, 0)   # down for a minute
    decision = resume_ticks(s, cursor, now, window=timedelta(seconds=3), grace=timedelta(seconds=2))
    assert decision.emit == (at(2026, 1, 1, 0, 0, 1), at(2026, 1, 1, 0, 0, 2), at(2026, 1, 1, 0, 0, 3),
                             at(2026, 1, 1, 0, 0, 58), at(2026, 1, 1, 0, 0, 59), at(2026, 1, 1, 0, 1, 0))
    assert decision.skipped == 54 and decision.cursor == now and decision.next_tick == at(2026, 1, 1, 0, 1, 1)
    # back within the window: every tick since the cursor, however late
    soon = resume_ticks(s, cursor, at(2026, 1, 1, 0, 0, 2, 500000), window=timedelta(seconds=30))
    assert soon.emit == (at(2026, 1, 1, 0, 0, 1), at(2026, 1, 1, 0, 0, 2)) and soon.skipped == 0
    # a clock behind the cursor never moves it back
    behind = resume_ticks(s, cursor, cursor - timedelta(seconds=5), window=timedelta(seconds=3))
    assert behind.emit == () and behind.cursor == cursor


def test_clock_steps_fresh_then_on_time_each_tick_once():
    clock = PingClock(FED)
    first = clock.step(None, T0 + 400)          # a new source: its first tick is the next one
    assert first.records == () and first.cursor_ms == T0 + 400 and first.next_ms == T0 + 1000
    ticks, cursor = [], first.cursor_ms
    for now in (T0 + 1000, T0 + 1000, T0 + 1700, T0 + 3050):   # a repeated timer emits nothing twice
        step = clock.step(cursor, now)
        ticks += step.ticks
        cursor = step.cursor_ms
        assert step.next_ms == (now // 1000 + 1) * 1000
    assert ticks == [T0 + 1000, T0 + 2000, T0 + 3000]


def test_clock_resumes_after_a_restore():
    clock = PingClock(FED, grace=timedelta(seconds=2), recovery_window=timedelta(seconds=3))
    step = clock.step(T0, T0 + 60_000, resumed=True)
    assert step.ticks == (T0 + 1000, T0 + 2000, T0 + 3000, T0 + 58_000, T0 + 59_000, T0 + 60_000)
    assert step.skipped == 54 and step.cursor_ms == T0 + 60_000
    # the same gap when not resuming (a timer of a running job): only the grace
    assert clock.step(T0, T0 + 60_000).ticks == (T0 + 58_000, T0 + 59_000, T0 + 60_000)


def test_a_tick_record_is_the_event_in_the_kafka_binding():
    tick = at(2027, 1, 15, 8, 0, 1)
    record = unpack_record(tick_record(FED, tick))
    assert (record.topic, record.partition, record.offset, record.timestamp) == (
        "knflow-ping/ns/fed", 0, T0 + 1000, T0 + 1000)
    event = decode_kafka(record.headers, record.value)
    expected = ping_event(tick, namespace="ns", name="fed", content_type="application/json", data={"beat": True},
                          ce_overrides={"platform": "live"})
    assert event.get_id() == expected.get_id() and event.get_type() == "dev.knative.sources.ping"
    assert event.get_source() == "/apis/v1/namespaces/ns/pingsources/fed"
    assert event.get_attributes()["platform"] == "live" and event.get_time() == tick
    assert json.loads(record.value) == {"beat": True}
    raw = unpack_record(tick_record(DIRECT, tick))
    assert raw.value == b"\x00\x01" and raw.topic == "knflow-ping/ns/direct"


def test_intake_routes_ticks_by_the_broker_fed_or_to_the_direct_sink():
    intake = Intake(PLAN, Topics.for_job("j"))
    tick = at(2027, 1, 15, 8, 0, 1)
    fed = [o for o in intake.ingest_record(unpack_record(tick_record(FED, tick)), now=1.0) if isinstance(o, WorkItem)]
    assert [w.task.trigger for w in fed] == ["ns/beats"]
    direct = [o for o in intake.ingest_record(unpack_record(tick_record(DIRECT, tick)), now=1.0)
              if isinstance(o, WorkItem)]
    assert [w.task.trigger for w in direct] == ["ns/PingSource:direct"]
    assert direct[0].task.request.body == b"\x00\x01" and not direct[0].ordered
    [plan_direct] = PLAN.direct_sources()
    [trigger] = plan_direct.triggers
    assert trigger.subscriber.uri == "http://sink.local/" and trigger.delivery.retry == 0  # Knative's defaults
