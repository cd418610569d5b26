"""The retry policy as plain data + pure functions: no engine, no I/O, no clock."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventing.plan import DeliveryPolicy
from transforms.retry_policy import (
    GiveUp,
    Retry,
    backoff_delay,
    is_retryable,
    is_success,
    next_step,
    parse_retry_after,
    retry_after_seconds,
)

# 1994-11-06T08:49:37Z, the RFC 9110 example date, as epoch seconds.
RFC_EXAMPLE = 784111777.0


# -- which failures are retried -------------------------------------------------------------
@pytest.mark.parametrize(
    "status, retried",
    [
        (None, True),  # network error / timeout
        (400, False), (401, False), (403, False),
        (404, True),   # pod becoming ready
        (405, False), (406, False),
        (408, True),   # request timeout
        (409, True),   # conflict / processing in progress
        (410, False), (413, False), (415, False), (422, False),
        (429, True),   # too many requests
        (431, False), (451, False),
        (500, True), (501, True), (502, True), (503, True), (504, True), (599, True),
        (300, False), (301, False), (302, False), (307, False), (308, False),
        (100, False), (200, False), (202, False), (204, False),
    ],
)
def test_status_table(status: int | None, retried: bool) -> None:
    assert is_retryable(status) is retried


def test_every_status_code() -> None:
    for code in range(100, 600):
        expected = code >= 500 or code in (404, 408, 409, 429)
        assert is_retryable(code) is expected, code
        assert is_success(code) is (200 <= code <= 299), code


# -- backoff series ---------------------------------------------------------------------------
def _series(policy: DeliveryPolicy, n: int = 5) -> list[float]:
    return [backoff_delay(policy, k) for k in range(1, n + 1)]


def test_linear_series_matches_knative() -> None:
    # knative/eventing retries_test.go: linear PT2.5S, retries 1..5
    policy = DeliveryPolicy(retry=5, backoff_policy="linear", backoff_delay=2.5)
    assert _series(policy) == [2.5, 5.0, 7.5, 10.0, 12.5]


@pytest.mark.parametrize(
    "delay, expected",
    [(1.5, [3.0, 6.0, 12.0, 24.0, 48.0]), (0.5, [1.0, 2.0, 4.0, 8.0, 16.0])],
)
def test_exponential_series_matches_knative(delay: float, expected: list[float]) -> None:
    # knative/eventing retries_test.go: exponential PT1.5S and PT0.5S, retries 1..5
    policy = DeliveryPolicy(retry=5, backoff_policy="exponential", backoff_delay=delay)
    assert _series(policy) == expected


def test_backoff_max_caps_each_interval() -> None:
    exp = DeliveryPolicy(retry=6, backoff_policy="exponential", backoff_delay=0.5, backoff_max=5.0)
    assert _series(exp, 6) == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    lin = DeliveryPolicy(retry=6, backoff_policy="linear", backoff_delay=2.0, backoff_max=5.0)
    assert _series(lin, 4) == [2.0, 4.0, 5.0, 5.0]


def test_unknown_policy_is_exponential_and_huge_retry_numbers_do_not_overflow() -> None:
    policy = DeliveryPolicy(backoff_policy="fibonacci", backoff_delay=1.0)
    assert backoff_delay(policy, 3) == 8.0
    capped = DeliveryPolicy(backoff_delay=1.0, backoff_max=60.0)
    assert backoff_delay(capped, 100_000) == 60.0
    assert backoff_delay(DeliveryPolicy(backoff_delay=0.0), 50) == 0.0


def test_retry_number_starts_at_one() -> None:
    with pytest.raises(ValueError):
        backoff_delay(DeliveryPolicy(), 0)


@given(
    delay=st.floats(min_value=0, max_value=100),
    cap=st.none() | st.floats(min_value=0, max_value=1000),
    kind=st.sampled_from(["linear", "exponential"]),
    n=st.integers(min_value=1, max_value=200),
)
def test_backoff_is_monotonic_and_capped(delay: float, cap: float | None, kind: str, n: int) -> None:
    policy = DeliveryPolicy(backoff_policy=kind, backoff_delay=delay, backoff_max=cap)
    assert 0 <= backoff_delay(policy, n) <= backoff_delay(policy, n + 1)
    if cap is not None:
        assert backoff_delay(policy, n) <= cap


# -- Retry-After --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, expected",
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("Sun, 06 Nov 1994 08:49:37 GMT", 30.0),     # IMF-fixdate
        ("Sunday, 06-Nov-94 08:49:37 GMT", 30.0),    # obsolete RFC 850
        ("Sun Nov  6 08:49:37 1994", 30.0),          # ANSI C asctime()
        ("Sun, 06 Nov 1994 08:48:37 GMT", 0.0),      # in the past: no wait
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("", None),
        ("Sun, 32 Nov 1994 08:49:37 GMT", None),
        ("Sun, 06 Foo 1994 08:49:37 GMT", None),
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, now=RFC_EXAMPLE - 30) == expected


def test_retry_after_only_on_429_and_503_and_only_when_opted_in() -> None:
    headers = {"retry-after": "20"}
    assert retry_after_seconds(429, headers, 0.0, 60.0) == 20.0
    assert retry_after_seconds(503, headers, 0.0, 60.0) == 20.0
    for status in (500, 502, 404, 408, None):
        assert retry_after_seconds(status, headers, 0.0, 60.0) is None
    # Knative (delivery-retryafter, alpha/beta): ignored unless retryAfterMax is set; PT0S opts out.
    assert retry_after_seconds(429, headers, 0.0, None) is None
    assert retry_after_seconds(429, headers, 0.0, 0.0) is None


def test_retry_after_is_capped_and_header_name_is_case_insensitive() -> None:
    assert retry_after_seconds(429, {"retry-after": "3600"}, 0.0, 30.0) == 30.0
    assert retry_after_seconds(503, {"Retry-After": "5"}, 0.0, 30.0) == 5.0
    assert retry_after_seconds(429, {}, 0.0, 30.0) is None
    assert retry_after_seconds(429, {"retry-after": "later"}, 0.0, 30.0) is None
    date = "Sun, 06 Nov 1994 08:49:37 GMT"
    assert retry_after_seconds(429, {"retry-after": date}, RFC_EXAMPLE - 100, 30.0) == 30.0
    assert retry_after_seconds(429, {"retry-after": date}, RFC_EXAMPLE - 10, 30.0) == 10.0


# -- next_step ------------------------------------------------------------------------------------
def test_retry_count_is_respected() -> None:
    policy = DeliveryPolicy(retry=3, backoff_policy="linear", backoff_delay=1.0)
    now = 1000.0
    steps = [next_step(policy, attempt, now, now, 500, {}) for attempt in (1, 2, 3, 4)]
    assert steps[:3] == [Retry(1001.0, 1.0, 1), Retry(1002.0, 2.0, 2), Retry(1003.0, 3.0, 3)]
    assert isinstance(steps[3], GiveUp)
    assert "3 of 3 retries" in steps[3].reason


def test_no_retries_by_default() -> None:
    step = next_step(DeliveryPolicy(), 1, 0.0, 0.0, 503, {})
    assert step == GiveUp("status 503 after 0 of 0 retries")


def test_non_retryable_status_gives_up_at_once() -> None:
    step = next_step(DeliveryPolicy(retry=10), 1, 0.0, 0.0, 400, {})
    assert step == GiveUp("status 400 is not retryable")


def test_network_error_is_retried() -> None:
    step = next_step(DeliveryPolicy(retry=1, backoff_delay=0.25), 1, 5.0, 5.0, None, {})
    assert step == Retry(5.5, 0.5, 1)


def test_success_is_not_a_failure() -> None:
    with pytest.raises(ValueError):
        next_step(DeliveryPolicy(retry=1), 1, 0.0, 0.0, 200, {})
    with pytest.raises(ValueError):
        next_step(DeliveryPolicy(retry=1), 0, 0.0, 0.0, 500, {})


def test_retry_after_wins_when_longer_than_backoff() -> None:
    policy = DeliveryPolicy(retry=2, backoff_policy="linear", backoff_delay=1.0, retry_after_max=30.0)
    assert next_step(policy, 1, 0.0, 0.0, 429, {"retry-after": "10"}) == Retry(10.0, 10.0, 1)
    # shorter than the backoff: the backoff stands
    assert next_step(policy, 2, 0.0, 0.0, 503, {"retry-after": "1"}) == Retry(2.0, 2.0, 2)
    # not opted in: ignored
    plain = DeliveryPolicy(retry=2, backoff_policy="linear", backoff_delay=1.0)
    assert next_step(plain, 1, 0.0, 0.0, 429, {"retry-after": "10"}) == Retry(1.0, 1.0, 1)


def test_max_retry_duration_caps_total_time_in_retries() -> None:
    policy = DeliveryPolicy(retry=100, backoff_policy="linear", backoff_delay=2.0, max_retry_duration=10.0)
    first = 100.0
    # retry 1 due at 104 (4s after the first attempt): fine
    assert next_step(policy, 1, first, 102.0, 500, {}) == Retry(104.0, 2.0, 1)
    # retry 3 due exactly at the limit: still allowed
    assert next_step(policy, 3, first, 104.0, 500, {}) == Retry(110.0, 6.0, 3)
    # retry 3 due 1s past the limit: give up
    step = next_step(policy, 3, first, 105.0, 500, {})
    assert isinstance(step, GiveUp) and "maxRetryDuration 10s" in step.reason
    # first_attempt_at None means "this attempt was the first"
    assert next_step(policy, 1, None, 50.0, 500, {}) == Retry(52.0, 2.0, 1)


@given(
    attempt=st.integers(min_value=1, max_value=50),
    retry=st.integers(min_value=0, max_value=50),
    now=st.floats(min_value=0, max_value=1e9),
    status=st.none() | st.integers(min_value=300, max_value=599),
)
def test_next_step_is_consistent(attempt: int, retry: int, now: float, status: int | None) -> None:
    policy = DeliveryPolicy(retry=retry, backoff_delay=0.1, backoff_max=30.0)
    step = next_step(policy, attempt, now, now, status, {})
    if is_retryable(status) and attempt <= retry:
        assert isinstance(step, Retry)
        assert step.retry == attempt and now <= step.at <= now + 30.0
    else:
        assert isinstance(step, GiveUp)
