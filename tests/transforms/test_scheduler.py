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
    assert first == [WorkItem(key, True, b"e1")] and second == [] and third == []
    # e1 is retried: the gate stays closed, its retry passes by timer.
    retry, timers = on_scheduled(state, Scheduled(RETRY, key, True, 10, b"e1-retry"), 0)
    assert retry == [] and timers == [10]
    assert on_timer(state, key, 10) == [WorkItem(key, True, b"e1-retry")]
    # e1 settles: e2 goes, then e3, then the gate opens for good.
    assert on_scheduled(state, Scheduled(RELEASE, key, True), 20)[0] == [WorkItem(key, True, b"e2")]
    assert on_scheduled(state, Scheduled(RELEASE, key, True), 30)[0] == [WorkItem(key, True, b"e3")]
    assert on_scheduled(state, Scheduled(RELEASE, key, True), 40)[0] == []
    assert not state.is_busy()
    assert on_scheduled(state, Scheduled(NEW, key, True, 0, b"e4"), 50)[0] == [WorkItem(key, True, b"e4")]
