"""BrokerWorker: one partition's records to settled deliveries, against real HTTP consumers.

The worker is what the Flink operator runs; here it is driven directly, as the operator
drives it (batches of records, timers, and the marker before each checkpoint), with its
state in memory.
"""
from __future__ import annotations

import copy
import json
import time

import pytest

from pipelines.delivery_settings import DeliverySettings
from pipelines.event_loop import new_event_loop
from tests.consumers import ConsumerServer, Received, Reply, accept, slow
from tests.plans import broker_yaml, plan_from_yaml, trigger_yaml
from transforms.broker_worker import BrokerWorker, LoopThread
from transforms.codec import encode_kafka, event_from_dict
from transforms.kafka_plane import Topics
from transforms.packing import InRecord
from transforms.scheduler import MemoryPartitionState

TOPIC = "knative-broker-ns-b"
TOPICS = Topics.for_job("w")
ORDERED = "{kafka.eventing.knative.dev/delivery.order: ordered}"


def record(n: int, room: str = "room-1", type_: str = "gift") -> InRecord:
    event = event_from_dict({"specversion": "1.0", "id": f"e{n}", "source": "/s", "type": type_,
                             "partitionkey": room, "data": {"n": n}})
    key, headers, value = encode_kafka(event, "binary")
    return InRecord(TOPIC, 0, n, 0, key, value, dict(headers))


def worker_for(manifest: str, wait_s: float = 2.0) -> BrokerWorker:
    plan = plan_from_yaml(manifest)
    loop = LoopThread(lambda: new_event_loop("uvloop"))
    engine = DeliverySettings().engine({t.key: t for t in plan.triggers()})
    return BrokerWorker(plan, TOPICS, engine, loop, wait_s=wait_s, collect_s=0.01)


def kinds(out) -> list[str]:
    """The outcome documents' kinds, in order (a record holds one or more, as JSON lines)."""
    return [json.loads(line)["k"] for r in out if r.topic == TOPICS.outcomes for line in r.value.splitlines()]


def run_timers(worker: BrokerWorker, state, timers: list[int], until, limit_s: float = 30.0) -> list:
    """Fire the registered timers when due (as Flink would) until ``until()``; returns their records."""
    out, pending, deadline = [], sorted(set(timers)), time.time() + limit_s
    while not until():
        assert pending and time.time() < deadline, "nothing left to fire, or too slow"
        due = pending.pop(0)
        time.sleep(max(0.0, due / 1000 - time.time()))
        records, more = worker.on_timer("g", state, due)
        out += records
        pending = sorted(set(pending + more))
    return out


def test_a_batch_does_not_wait_for_its_deliveries_and_a_marker_settles_them():
    with ConsumerServer(slow(0.3)) as consumer:
        worker = worker_for(broker_yaml() + trigger_yaml("all", consumer.url), wait_s=30.0)
        try:
            state = MemoryPartitionState()
            out, timers = worker.on_records("g", state, [record(n) for n in range(20)])
            assert kinds(out) == ["routed"] * 20 and timers  # back before the answers, a timer to collect them
            assert state.in_flight() == {}  # nothing written to state on the way
            settled, timers = worker.on_marker("g", state)  # a checkpoint barrier follows
        finally:
            worker.close()
    assert sorted(r.event.get_id() for r in consumer.requests) == sorted(f"e{n}" for n in range(20))
    assert kinds(settled) == ["delivered"] * 20
    assert timers == [] and state.in_flight() == {}


def test_a_calls_outcomes_are_few_records_of_json_lines():
    with ConsumerServer(accept()) as consumer:
        worker = worker_for(broker_yaml() + trigger_yaml("all", consumer.url))
        try:
            out, _ = worker.on_records("g", MemoryPartitionState(), [record(n) for n in range(50)])
        finally:
            worker.close()
    [outcomes] = [r for r in out if r.topic == TOPICS.outcomes]  # one record for the call's 50+ documents
    docs = [json.loads(line) for line in outcomes.value.splitlines()]
    assert [d["id"] for d in docs if d["k"] == "routed"] == [f"e{n}" for n in range(50)]


def test_finished_deliveries_are_collected_by_the_next_timer():
    with ConsumerServer(accept()) as consumer:
        worker = worker_for(broker_yaml() + trigger_yaml("all", consumer.url))
        try:
            state = MemoryPartitionState()
            out, timers = worker.on_records("g", state, [record(n) for n in range(5)])
            out += run_timers(worker, state, timers, lambda: not worker._running["g"])  # all collected
        finally:
            worker.close()
    assert kinds(out).count("delivered") == 5 and state.in_flight() == {}


def fail_first_attempt_of(event_id: str):
    """500 to the first request for ``event_id``, 200 to everything else."""
    seen: set[str] = set()

    def behaviour(req: Received) -> Reply:
        ident = req.event.get_id()
        if ident == event_id and ident not in seen:
            seen.add(ident)
            return Reply(500)
        return Reply(200)

    return behaviour


def test_an_ordered_key_keeps_broker_order_across_a_retry_without_blocking_other_keys():
    with ConsumerServer(fail_first_attempt_of("e1")) as ordered, ConsumerServer(accept()) as other:
        manifest = (broker_yaml() + trigger_yaml("o", ordered.url, annotations=ORDERED,
                                                 delivery="retry: 3\nbackoffDelay: PT0.2S\n")
                    + trigger_yaml("u", other.url))
        worker = worker_for(manifest)
        try:
            state = MemoryPartitionState()
            out, timers = worker.on_records("g", state, [record(1), record(2), record(3, "room-2")])
            timers += worker.on_marker("g", state)[1]
            # e1 failed once: room-1 waits for its retry, room-2 went on
            assert sorted(r.event.get_id() for r in ordered.requests) == ["e1", "e3"]
            out2, more = worker.on_records("g", state, [record(4)])
            more += worker.on_marker("g", state)[1]
            assert "e4" not in [r.event.get_id() for r in ordered.requests]  # queued behind e1's retry
            assert {r.event.get_id() for r in other.requests} == {"e1", "e2", "e3", "e4"}
            run_timers(worker, state, timers + more, lambda: len(ordered.requests) >= 5)
        finally:
            worker.close()
    room1 = [r.event.get_id() for r in ordered.requests if r.event.get_attributes()["partitionkey"] == "room-1"]
    assert room1 == ["e1", "e1", "e2", "e4"]
    assert state.queues == {} and state.held == {}  # both gates open again, nothing held


def test_a_slow_subscriber_runs_on_in_flight_state_and_is_collected_by_a_timer():
    with ConsumerServer(slow(0.5)) as consumer:
        worker = worker_for(broker_yaml() + trigger_yaml("slow", consumer.url), wait_s=0.05)
        try:
            state = MemoryPartitionState()
            out, timers = worker.on_records("g", state, [record(1)])
            assert kinds(out) == ["routed"] and timers  # left before the answer, with a timer to collect it
            out, timers = worker.on_marker("g", state)  # waits 0.05 s, then records what still runs
            assert out == [] and timers
            assert len(state.in_flight()) == 1  # the checkpoint holds the chain
            collected = run_timers(worker, state, timers, lambda: state.in_flight() == {})
        finally:
            worker.close()
    assert kinds(collected) == ["delivered"]


def test_chains_in_flight_at_a_checkpoint_run_again_after_a_restore():
    with ConsumerServer(slow(0.5)) as consumer:
        before = worker_for(broker_yaml() + trigger_yaml("slow", consumer.url), wait_s=0.05)
        state = MemoryPartitionState()
        try:
            before.on_records("g", state, [record(1)])
            before.on_marker("g", state)
            snapshot = MemoryPartitionState(dict(state.queues), dict(state.held), dict(state.flying))
        finally:
            before.close()
        after = worker_for(broker_yaml() + trigger_yaml("slow", consumer.url), wait_s=2.0)
        try:
            out, _ = after.on_timer("g", snapshot, 0)  # the restored collect timer fires
        finally:
            after.close()
    assert kinds(out) == ["delivered"] and snapshot.in_flight() == {}
    assert [r.event.get_id() for r in consumer.requests].count("e1") >= 2  # at least once


def test_a_restore_registers_the_timers_of_retries_held_in_state_again():
    """A checkpoint can hold a retry without its timer (PyFlink's process mode registers a
    timer after the snapshot of the bundle that asked for it): the first call of the
    partition after a restore registers the held retries' timers again."""
    with ConsumerServer(fail_first_attempt_of("e1")) as consumer:
        manifest = broker_yaml() + trigger_yaml("r", consumer.url, delivery="retry: 2\nbackoffDelay: PT0.2S\n")
        before = worker_for(manifest)
        state = MemoryPartitionState()
        try:
            before.on_records("g", state, [record(1)])
            out, lost = before.on_marker("g", state)  # the retry is held; its timer never reaches the checkpoint
            assert kinds(out) == ["retried"] and len(state.held_due()) == 1
            snapshot = copy.deepcopy(state)
        finally:
            before.close()
        after = worker_for(manifest)
        try:
            out, timers = after.on_marker("g", snapshot)  # the Batcher's marker after a restore
            assert timers == snapshot.held_due() == lost
            assert after.on_marker("g", snapshot)[1] == []  # once per partition
            out = run_timers(after, snapshot, timers, lambda: snapshot.held_due() == [] and not after._running["g"])
        finally:
            after.close()
    assert kinds(out) == ["delivered"]
    assert [r.event.get_id() for r in consumer.requests] == ["e1", "e1"]


@pytest.mark.parametrize("value", [b"not json", None])
def test_an_undecodable_record_is_dead_lettered_with_its_origin(value):
    with ConsumerServer(accept()) as consumer:
        worker = worker_for(broker_yaml() + trigger_yaml("all", consumer.url))
        try:
            out, _ = worker.on_records("g", MemoryPartitionState(), [InRecord(TOPIC, 2, 9, 0, None, value, {})])
        finally:
            worker.close()
    [dead] = [r for r in out if r.topic == TOPICS.dead_letters]
    assert json.loads(dead.value)["origin"] == f"{TOPIC}/2@9" and consumer.requests == []


def test_a_triggers_concurrency_bounds_its_requests_in_flight():
    with ConsumerServer(slow(0.2)) as consumer:
        plan = plan_from_yaml(broker_yaml() + trigger_yaml("all", consumer.url))
        loop = LoopThread(lambda: new_event_loop("uvloop"))
        engine = DeliverySettings().engine({t.key: t for t in plan.triggers()})
        worker = BrokerWorker(plan, TOPICS, engine, loop, concurrency=3, wait_s=30.0)
        try:
            state = MemoryPartitionState()
            worker.on_records("g", state, [record(n) for n in range(12)])
            settled, _ = worker.on_marker("g", state)
        finally:
            worker.close()
    assert kinds(settled) == ["delivered"] * 12
    arrivals = sorted(r.at for r in consumer.requests)
    # With 3 in flight, the 4th request can only start once one of the first 3 was answered,
    # 0.2 s after it arrived: a lower bound that a slow machine only makes wider.
    assert arrivals[3] - arrivals[0] >= 0.19


class _HangingSender:
    """An HTTP client that never returns (a bug in it, or a lost wake-up): the worker's
    deadline sweep is the only thing that can end such an attempt."""

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def post(self, url, headers, body, timeout):
        import asyncio

        await asyncio.Event().wait()


def test_an_attempt_that_hangs_past_its_deadline_ends_and_frees_its_slot(monkeypatch):
    import transforms.broker_worker as broker_worker
    from transforms.delivery import DeliveryEngine

    monkeypatch.setattr(broker_worker, "ATTEMPT_GRACE_S", 0.2)
    monkeypatch.setattr(broker_worker, "SWEEP_S", 0.05)
    plan = plan_from_yaml(broker_yaml() + trigger_yaml("all", "http://127.0.0.1:9/never"))
    loop = LoopThread(lambda: new_event_loop("uvloop"))
    engine = DeliveryEngine({t.key: t for t in plan.triggers()}, _HangingSender(), default_timeout=0.1)
    worker = BrokerWorker(plan, TOPICS, engine, loop, concurrency=1, wait_s=30.0)
    try:
        state = MemoryPartitionState()
        worker.on_records("g", state, [record(n) for n in range(2)])
        settled, _ = worker.on_marker("g", state)
    finally:
        worker.close()
    docs = [json.loads(line) for r in settled if r.topic == TOPICS.outcomes for line in r.value.splitlines()]
    # both attempts ended (the second could only start once the first freed the trigger's one slot)
    # (no retries configured: each is dead-lettered with the reason)
    assert [d["k"] for d in docs] == ["dead_lettered", "dead_lettered"]
    assert all("did not finish in its timeout" in d["reason"] for d in docs)
