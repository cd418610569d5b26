"""One source partition's events, from Kafka records to settled deliveries, engine-neutral.

The Flink job calls ``BrokerWorker`` once per batch of a partition's records, once per
timer of that partition, and once per checkpoint marker (its operator is keyed by
partition): decode and route each record (``Intake``), run the resulting chains of
delivery attempts on a persistent event loop in a thread of its own
(``transforms.scheduler`` says what runs now and what waits), and return the Kafka
records their outcomes cause (``Outbox``).

Why a loop thread, chains and markers: one hand-off to the loop per batch, not per event;
requests of a batch run concurrently (bounded per trigger); and the operator does not
wait for a batch's HTTP round trips before it takes the next batch (``on_records``
returns at once; finished chains are collected by the next call of the partition, or by
a timer ``collect_s`` ahead). What makes that safe is the *marker* the JVM's Batcher sends
for each partition just before every checkpoint barrier (``on_marker``): the worker then
waits up to ``wait_s`` for the partition's chains and records those still running (slow
subscribers) in the partition's state, so a checkpoint never covers an event whose
delivery is neither settled nor in state; a restore runs recorded chains again (at least
once) and registers the timers of the retries held in state again (a checkpoint may hold
a retry without its timer: PyFlink's process mode registers a timer after the bundle that
asked for it, and the snapshot does not wait; the JVM's Batcher sends a marker for every
partition after a restore, so this happens even in a partition with no new records).
Chains started by timers (retries) are recorded the same way when they outlive
``wait_s``, since no marker may follow for a partition without new records.
``max_in_flight`` bounds the chains running at once: past it the operator waits, which is
the job's backpressure.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import random
import threading
import time
from collections import defaultdict, deque
from typing import Any, Callable, Iterable

from eventing.plan import Plan
from transforms.delivery import DeadLettered, DeliveryEngine, DeliveryTask, Outcome, Retrying, decide
from transforms.kafka_plane import Intake, OutRecord, Outbox, Topics, dead_letter_record
from transforms.packing import InRecord
from transforms.records import DeadLetter, raw_text
from transforms.scheduler import Chain, PartitionState, WorkItem, admit, after_chain, due

log = logging.getLogger(__name__)

#: How long an attempt may run past its HTTP timeout before the worker gives up on it.
ATTEMPT_GRACE_S = 5.0
#: How often the worker looks for attempts past that deadline.
SWEEP_S = 1.0
#: Outcome documents are written as JSON lines, up to about this many bytes a record.
OUTCOME_RECORD_BYTES = 512 * 1024


class LoopThread:
    """A persistent event loop in a daemon thread (created by ``new_loop``)."""

    def __init__(self, new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self.loop = new_loop()
        self._thread = threading.Thread(target=self._run, name="knflow-deliveries", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, function: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(function, *args)

    def run(self, coroutine: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class ChainDone:
    """A chain that ran: its outcomes in order (the last one may leave its event unsettled;
    an exception stands for an attempt that failed by a bug, not by the subscriber)."""

    __slots__ = ("chain_id", "chain", "outcomes")

    def __init__(self, chain_id: int, chain: Chain, outcomes: list[Outcome | Exception]) -> None:
        self.chain_id = chain_id
        self.chain = chain
        self.outcomes = outcomes


class _Limit:
    """A trigger's bound on requests in flight: a counter, and a future only when it is
    full (``asyncio.Semaphore``'s ``async with`` costs a coroutine per request even when
    free, a few percent of the job's Python time)."""

    __slots__ = ("free", "waiters")

    def __init__(self, size: int) -> None:
        self.free = size
        self.waiters: deque[asyncio.Future] = deque()

    async def wait(self) -> None:
        future = asyncio.get_running_loop().create_future()
        self.waiters.append(future)
        await future  # release() hands its slot over

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


def _settled(outcome: Outcome | Exception) -> bool:
    """False when the event needs another delivery: a retry, or its deadLetterSink next."""
    if isinstance(outcome, Retrying):
        return False
    return not (isinstance(outcome, DeadLettered) and outcome.next_task is not None)


class BrokerWorker:
    """Decode, route, deliver; one instance per operator, shared by its partitions."""

    def __init__(self, plan: Plan, topics: Topics, engine: DeliveryEngine, loop: LoopThread, *,
                 concurrency: int = 64, wait_s: float = 0.2, collect_s: float = 0.01,
                 max_in_flight: int = 10_000, clock: Callable[[], float] = time.time, cel_native: bool = False) -> None:
        self.plan = plan
        self.topics = topics
        self.intake = Intake(plan, topics, cel_native)
        self.outbox = Outbox(plan, topics)
        self.engine = engine
        self.loop = loop
        self.concurrency = concurrency
        self.wait_s = wait_s
        self.collect_s = collect_s
        self.max_in_flight = max_in_flight
        self.clock = clock
        self.triggers = {t.key: t for t in plan.delivery_triggers()}
        self._limits: dict[str, _Limit] = {}
        self._ids = itertools.count(random.getrandbits(40) << 22)  # chain ids, unique across restarts
        self._done: dict[str, list[ChainDone]] = defaultdict(list)
        self._outstanding: dict[str, int] = defaultdict(int)  # chains started and not done, per group
        # group -> chain id -> [recorded in flight?, chain, started by a timer?]
        self._running: dict[str, dict[int, list[Any]]] = defaultdict(dict)
        self._in_flight = 0  # chains started and not collected, all groups
        self._resumed: set[str] = set()
        self._cond = threading.Condition()
        self._deadlines: dict[asyncio.Task, float] = {}  # chain task -> deadline of its attempt (monotonic)
        self._expired: set[asyncio.Task] = set()  # chain tasks the sweeper cancelled
        self.attempts = 0  # attempts started (the loop thread counts; the Flink function reports it as a metric)
        loop.run(self._open())

    async def _open(self) -> None:
        await self.engine.open()
        self._limits = {key: _Limit(max(1, self.concurrency)) for key in self.triggers}
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)

    def close(self) -> None:
        try:
            self.loop.run(self.engine.close(), timeout=10)
        finally:
            self.loop.stop()

    # -- what the engine calls: a batch, a checkpoint marker, a timer -------------------

    def on_records(self, group: str, state: PartitionState, records: Iterable[InRecord]) -> tuple[list[OutRecord], list[int]]:
        """A batch of one partition's records -> (records to write, timers to register)."""
        out: list[OutRecord] = []
        items: list[WorkItem] = []
        now = self.clock()
        for record in records:
            try:
                for produced in self.intake.ingest_record(record, now):
                    (items if isinstance(produced, WorkItem) else out).append(produced)
            except Exception as exc:  # a bug must not stop the job or lose the record: dead-letter it
                log.exception("intake failed for %s", record.origin)
                out.append(internal_error(self.topics, f"intake failed: {type(exc).__name__}: {exc}", record.origin,
                                          record.value))
        chains, timers = self._resume(group, state)
        chains += admit(state, items)
        return self._run(group, state, chains, out, timers, wait_s=0.0, record=None)

    def on_marker(self, group: str, state: PartitionState) -> tuple[list[OutRecord], list[int]]:
        """A checkpoint barrier follows (or the job was restored): settle the partition's
        chains, or record them."""
        chains, timers = self._resume(group, state)
        return self._run(group, state, chains, [], timers, wait_s=self.wait_s, record="all")

    def on_timer(self, group: str, state: PartitionState, timestamp_ms: int) -> tuple[list[OutRecord], list[int]]:
        """A timer of the partition fired: due follow-ups run, finished chains are collected."""
        chains, timers = self._resume(group, state)
        chains += due(state, timestamp_ms)
        return self._run(group, state, chains, [], timers, wait_s=self.wait_s if chains else 0.0, record="timer",
                         from_timer=True)

    # -- internals ----------------------------------------------------------------------

    def _resume(self, group: str, state: PartitionState) -> tuple[list[Chain], list[int]]:
        """The first call of a partition since the worker started: chains recorded in flight
        by the run before a restore run again, and the retries held in state get their
        timers again (Flink keeps one timer per time, so one that survived is not doubled).
        Returns (chains, timers)."""
        if group in self._resumed:
            return [], []
        self._resumed.add(group)
        flying = state.in_flight()
        for chain_id in flying:
            state.drop_in_flight(chain_id)
        held = state.held_due()
        if flying or held:
            log.info("partition %s: running %d chain(s) again that were in flight at the last checkpoint; "
                     "%d retry time(s) held", group, len(flying), len(held))
        return list(flying.values()), held

    def _start(self, group: str, chains: list[Chain], from_timer: bool = False) -> None:
        running = self._running[group]
        started = []
        for chain in chains:
            chain_id = next(self._ids)
            running[chain_id] = [False, chain, from_timer]
            started.append((chain_id, chain))
        self._in_flight += len(started)
        if started:
            self.loop.call(self._spawn, group, started)

    def _spawn(self, group: str, started: list[tuple[int, Chain]]) -> None:  # on the loop thread
        self._outstanding[group] += len(started)
        create_task = self.loop.loop.create_task
        for chain_id, chain in started:
            create_task(self._chain(group, chain_id, chain))

    async def _chain(self, group: str, chain_id: int, chain: Chain) -> None:
        outcomes: list[Outcome | Exception] = []
        try:
            for item in chain:
                try:
                    outcome: Outcome | Exception = await self._attempt(item)
                except Exception as exc:  # a bug: the task is dead-lettered with the reason (_settle)
                    log.exception("delivery failed unexpectedly for %s", item.key)
                    outcome = exc
                outcomes.append(outcome)
                if not _settled(outcome):
                    break
        finally:
            self._outstanding[group] -= 1
            with self._cond:
                self._done[group].append(ChainDone(chain_id, chain, outcomes))
                # Wake the operator when all of the group's chains are done, or when an
                # ordered key's queue may go on: not once per chain (each wake-up
                # contends for the GIL with this loop).
                if not self._outstanding[group] or chain[0].ordered:
                    self._cond.notify_all()

    async def _attempt(self, item: WorkItem) -> Outcome:
        task: DeliveryTask = item.task
        self.attempts += 1
        wait = task.due_at - time.time()
        if wait > 0:  # a follow-up whose timer fired a little early
            await asyncio.sleep(wait)
        limit = self._limits[task.trigger]
        if limit.free > 0:
            limit.free -= 1
        else:
            await limit.wait()
        me = asyncio.current_task()
        deadlines = self._deadlines
        deadlines[me] = time.monotonic() + self.engine.route(task.trigger).timeout + ATTEMPT_GRACE_S
        try:
            return await self.engine.attempt(task)
        except asyncio.CancelledError:
            if me not in self._expired:  # cancelled from outside (shutdown): not ours to handle
                raise
            self._expired.discard(me)
            me.uncancel()
            trigger = self.triggers[task.trigger]
            return decide(task, trigger.delivery, time.time(), None, None, b"",
                          "delivery attempt did not finish in its timeout",
                          url=self.engine.route(task.trigger).url)
        finally:
            del deadlines[me]
            limit.release()

    def _sweep(self) -> None:  # on the loop thread, every SWEEP_S
        """Cancel the attempts past their deadline: the HTTP client's own timeout should
        end every attempt; this is the guard for one that hangs anyway. One sweep a second
        instead of an ``asyncio.timeout`` per attempt (its set-up and tear-down were ~6%
        of the worker's CPU, ``bench/worker.py``)."""
        now = time.monotonic()
        if self._expired:  # a chain whose attempt ended just as it was cancelled ends on its next await
            self._expired = {chain_task for chain_task in self._expired if not chain_task.done()}
        for chain_task, deadline in list(self._deadlines.items()):
            if deadline < now and chain_task not in self._expired:
                self._expired.add(chain_task)
                chain_task.cancel()
        self._sweeper = self.loop.loop.call_later(SWEEP_S, self._sweep)

    def _run(self, group: str, state: PartitionState, chains: list[Chain], out: list[OutRecord],
             timers: list[int], *, wait_s: float, record: str | None,
             from_timer: bool = False) -> tuple[list[OutRecord], list[int]]:
        """Start ``chains``; collect the group's finished chains (waiting up to ``wait_s``
        for all of them, and past that while over ``max_in_flight``); then ``record`` in
        state the ones still running: ``"all"``, ``"timer"`` (those started by timers) or
        None. Returns (records, ``timers`` and the timers to register)."""
        self._start(group, chains, from_timer)
        running = self._running[group]
        deadline = time.monotonic() + wait_s
        while running:
            with self._cond:
                if not self._done[group]:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        if self._in_flight <= self.max_in_flight:
                            break
                        left = 0.005  # backpressure: too much in flight, wait for some of it
                    self._cond.wait(left)
                finished, self._done[group] = self._done[group], []
            self._in_flight -= len(finished)
            for done in finished:
                if running.pop(done.chain_id)[0]:
                    state.drop_in_flight(done.chain_id)
                more, new_timers = self._settle(state, done, out)
                timers += new_timers
                self._start(group, more, from_timer)
        if running:
            if record is not None:  # what a checkpoint must find in state: record it
                for chain_id, entry in running.items():
                    if not entry[0] and (record == "all" or entry[2]):
                        entry[0] = True
                        state.put_in_flight(chain_id, entry[1])
            timers.append(int((time.time() + self.collect_s) * 1000))  # collect the rest soon
        return self._merge_outcomes(out), timers

    def _merge_outcomes(self, out: list[OutRecord]) -> list[OutRecord]:
        """A call's outcome documents as few records (JSON lines, up to ~512 KiB each): one
        Kafka record per event and delivery cost the JVM and Kafka more than the rest of
        the job's output together."""
        topic = self.topics.outcomes
        if topic is None:
            return out
        docs = [record.value for record in out if record.topic == topic]
        if len(docs) < 2:
            return out
        merged = [record for record in out if record.topic != topic]
        chunk: list[bytes] = []
        size = 0
        for doc in docs:
            chunk.append(doc)
            size += len(doc) + 1
            if size >= OUTCOME_RECORD_BYTES:
                merged.append(OutRecord(topic, None, b"\n".join(chunk), {}))
                chunk, size = [], 0
        if chunk:
            merged.append(OutRecord(topic, None, b"\n".join(chunk), {}))
        return merged

    def _settle(self, state: PartitionState, done: ChainDone, out: list[OutRecord]) -> tuple[list[Chain], list[int]]:
        """A finished chain's records into ``out``; then what its key does next."""
        follow_up: WorkItem | None = None
        due_ms = 0
        for item, outcome in zip(done.chain, done.outcomes):
            if isinstance(outcome, Exception):
                out.append(internal_error(self.topics, f"delivery failed: {type(outcome).__name__}: {outcome}",
                                          item.key, _task_bytes(item.task)))
                continue
            records, next_task = self.outbox.records(outcome)
            out += records
            if next_task is not None:
                follow_up = WorkItem(item.key, item.ordered, next_task)
                due_ms = int(next_task.due_at * 1000)
        settled = len(done.outcomes) - (1 if follow_up is not None else 0)
        if settled < len(done.chain) and follow_up is None:  # cut short without an outcome: run it again
            follow_up, due_ms = done.chain[settled], int(time.time() * 1000)
        return after_chain(state, done.chain, settled, follow_up, due_ms)


def _task_bytes(task: DeliveryTask) -> bytes | None:
    try:
        return task.to_bytes()
    except Exception:  # the task itself is what failed: keep what can be kept
        return None


def internal_error(topics: Topics, reason: str, origin: str, raw: bytes | None) -> OutRecord:
    """A record the job could not process (a bug, not bad input) for the dead-letter topic."""
    record = DeadLetter(reason=reason, origin=origin, raw=raw_text(raw))
    return dead_letter_record(topics, record, b"internal_error")
