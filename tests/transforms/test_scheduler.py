"""The retry/ordering state machine, without an engine."""
from transforms.scheduler import (
    NEW, RELEASE, RETRY, MemoryKeyState, Scheduled, WorkItem, is_ordered_key, on_scheduled, on_timer, ordered_key,
    unordered_key,
)


def test_retry_due_later_waits_for_its_timer():
    state = MemoryKeyState()
    key = unordered_key("ns/t", "e1")
    ready, timers = on_scheduled(state, Scheduled(RETRY, key, False, 5_000, b"task"), now_ms=1_000)
    assert ready == [] and timers == [5_000]
    assert on_timer(state, key, 4_000) == []
    assert on_timer(state, key, 5_000) == [WorkItem(key, False, b"task")]
    assert on_timer(state, key, 5_000) == []  # released once


def test_retry_already_due_is_attempted_at_once():
    ready, timers = on_scheduled(MemoryKeyState(), Scheduled(RETRY, "u|t|e", False, 900, b"x"), now_ms=1_000)
    assert ready == [WorkItem("u|t|e", False, b"x")] and timers == []


def test_ordered_key_lets_one_event_through_at_a_time():
    state = MemoryKeyState()
    key = ordered_key("ns/t", "room-1")
    assert is_ordered_key(key) and not is_ordered_key(unordered_key("ns/t", "e"))
    first, _ = on_scheduled(state, Scheduled(NEW, key, True, 0, b"e1"), 0)
    second, _ = on_scheduled(state, Scheduled(NEW, key, True, 0, b"e2"), 0)
    third, _ = on_scheduled(state, Scheduled(NEW, key, True, 0, b"e3"), 0)
    assert first == [WorkItem(key, True, b"e1", 1)] and second == [] and third == []
    # e1 is retried: the gate stays closed, its retry (same ticket) passes by timer.
    retry, timers = on_scheduled(state, Scheduled(RETRY, key, True, 10, b"e1-retry", 1), 0)
    assert retry == [] and timers == [10]
    assert on_timer(state, key, 10) == [WorkItem(key, True, b"e1-retry", 1)]
    # e1 settles: e2 goes, then e3, then the gate opens for good.
    assert on_scheduled(state, Scheduled(RELEASE, key, True, ticket=1), 20)[0] == [WorkItem(key, True, b"e2", 2)]
    assert on_scheduled(state, Scheduled(RELEASE, key, True, ticket=2), 30)[0] == [WorkItem(key, True, b"e3", 3)]
    assert on_scheduled(state, Scheduled(RELEASE, key, True, ticket=3), 40)[0] == []
    assert state.in_delivery() == 0
    assert on_scheduled(state, Scheduled(NEW, key, True, 0, b"e4"), 50)[0] == [WorkItem(key, True, b"e4", 4)]


def test_a_repeated_release_does_not_open_the_gate_again():
    """After a restore the same release can arrive twice: the second must not let a third
    event through while the second is in delivery."""
    state = MemoryKeyState()
    key = ordered_key("ns/t", "room-1")
    for task in (b"e1", b"e2", b"e3"):
        on_scheduled(state, Scheduled(NEW, key, True, 0, task), 0)
    release_e1 = Scheduled(RELEASE, key, True, ticket=1)
    assert on_scheduled(state, release_e1, 10)[0] == [WorkItem(key, True, b"e2", 2)]
    assert on_scheduled(state, release_e1, 11) == ([], [])  # replayed: e2 is still in delivery
    assert state.in_delivery() == 2 and state.queue == [b"e3"]
    assert on_scheduled(state, Scheduled(RELEASE, key, True, ticket=2), 12)[0] == [WorkItem(key, True, b"e3", 3)]


def test_a_stale_retry_keeps_its_own_ticket_so_its_release_is_ignored():
    """A retry of e1 replayed after e1 settled is attempted once more (at least once), but
    its outcome's release names e1's ticket and leaves e2's gate closed."""
    state = MemoryKeyState()
    key = ordered_key("ns/t", "room-1")
    on_scheduled(state, Scheduled(NEW, key, True, 0, b"e1"), 0)
    on_scheduled(state, Scheduled(NEW, key, True, 0, b"e2"), 0)
    on_scheduled(state, Scheduled(RELEASE, key, True, ticket=1), 5)
    stale, _ = on_scheduled(state, Scheduled(RETRY, key, True, 0, b"e1-retry", 1), 6)
    assert stale == [WorkItem(key, True, b"e1-retry", 1)]
    on_scheduled(state, Scheduled(NEW, key, True, 0, b"e3"), 7)
    assert on_scheduled(state, Scheduled(RELEASE, key, True, ticket=stale[0].ticket), 8) == ([], [])
    assert state.in_delivery() == 2 and state.queue == [b"e3"]


def test_release_without_ticket_from_an_older_job_opens_the_gate():
    state = MemoryKeyState()
    key = ordered_key("ns/t", "room-1")
    on_scheduled(state, Scheduled(NEW, key, True, 0, b"e1"), 0)
    on_scheduled(state, Scheduled(NEW, key, True, 0, b"e2"), 0)
    assert on_scheduled(state, Scheduled(RELEASE, key, True), 1)[0] == [WorkItem(key, True, b"e2", 2)]
    # ... but never while the gate is open
    assert on_scheduled(state, Scheduled(RELEASE, key, True), 2)[0] == []
    assert on_scheduled(state, Scheduled(RELEASE, key, True), 3) == ([], [])
    assert state.in_delivery() == 0 and state.queue == []
