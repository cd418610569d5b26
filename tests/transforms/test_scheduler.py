"""The retry/ordering state machine of one partition, without an engine."""
from transforms.scheduler import (
    MemoryPartitionState, WorkItem, admit, after_chain, due, ordered_key, unordered_key,
)

K = ordered_key("ns/t", "room-1")
K2 = ordered_key("ns/t", "room-2")


def ordered(task: bytes, key: str = K) -> WorkItem:
    return WorkItem(key, True, task)


def test_unordered_tasks_run_at_once_as_chains_of_one():
    state = MemoryPartitionState()
    a, b = WorkItem(unordered_key("ns/u", "e1"), False, b"a"), WorkItem(unordered_key("ns/u", "e2"), False, b"b")
    assert admit(state, [a, b]) == [[a], [b]]
    assert state.queues == {}


def test_an_ordered_key_runs_its_events_as_one_chain_and_queues_later_ones():
    state = MemoryPartitionState()
    first = admit(state, [ordered(b"e1"), ordered(b"x1", K2), ordered(b"e2")])
    assert first == [[ordered(b"e1"), ordered(b"e2")], [ordered(b"x1", K2)]]
    assert state.queues == {K: [], K2: []}  # both gates closed while their chains run
    # A later batch while the chains still run: the key's events wait, in order.
    assert admit(state, [ordered(b"e3"), ordered(b"e4")]) == []
    assert state.queues[K] == [b"e3", b"e4"]
    # The chain settled: the queue is the next chain, at once, and the gate stays closed.
    chains, timers = after_chain(state, first[0], settled=2, follow_up=None, due_ms=0)
    assert chains == [[ordered(b"e3"), ordered(b"e4")]] and timers == [] and state.queues[K] == []
    # That one settled too, nothing waits: the gate opens.
    assert after_chain(state, chains[0], 2, None, 0) == ([], []) and K not in state.queues
    assert admit(state, [ordered(b"e5")]) == [[ordered(b"e5")]]


def test_a_retry_holds_the_key_and_its_rest_waits_ahead_of_later_events():
    state = MemoryPartitionState()
    [chain] = admit(state, [ordered(b"e1"), ordered(b"e2"), ordered(b"e3")])
    admit(state, [ordered(b"e4")])  # arrived while the chain ran
    retry = ordered(b"e1-attempt-2")
    chains, timers = after_chain(state, chain, settled=0, follow_up=retry, due_ms=5_000)
    assert chains == [] and timers == [5_000]
    assert state.queues[K] == [b"e2", b"e3", b"e4"]  # the not-started rest first, then what came later
    assert admit(state, [ordered(b"x", K2)]) == [[ordered(b"x", K2)]]  # other keys are never blocked
    assert due(state, 4_000) == []
    assert due(state, 5_000) == [[retry]]
    assert due(state, 5_000) == []  # released once
    chains, _ = after_chain(state, [retry], settled=1, follow_up=None, due_ms=0)
    assert chains == [[ordered(b"e2"), ordered(b"e3"), ordered(b"e4")]]


def test_a_retry_of_the_retry_keeps_holding_the_key():
    state = MemoryPartitionState()
    [chain] = admit(state, [ordered(b"e1")])
    after_chain(state, chain, 0, ordered(b"e1-2"), 1_000)
    admit(state, [ordered(b"e2")])
    [[again]] = due(state, 1_000)
    assert after_chain(state, [again], 0, ordered(b"e1-3"), 2_000) == ([], [2_000])
    assert state.queues[K] == [b"e2"]


def test_an_unordered_retry_is_held_without_a_gate():
    state = MemoryPartitionState()
    item = WorkItem(unordered_key("ns/u", "e1"), False, b"a")
    retry = WorkItem(item.key, False, b"a-2")
    assert after_chain(state, [item], 0, retry, 700) == ([], [700])
    assert state.queues == {} and due(state, 700) == [[retry]]
    assert after_chain(state, [retry], 1, None, 0) == ([], [])


def test_chains_in_flight_are_recorded_by_id():
    state = MemoryPartitionState()
    state.put_in_flight(7, [ordered(b"e1")])
    assert state.in_flight() == {7: [ordered(b"e1")]}
    state.drop_in_flight(7)
    assert state.in_flight() == {}
