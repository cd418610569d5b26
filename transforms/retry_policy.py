"""The retry policy: plain data and pure functions, no I/O, no clock reads.

Like Knative's ``pkg/kncloudevents/retries.go``: which failures are retried, how long to wait
before the next attempt, and when to give up. Every function takes the current time as an
argument, so the policy is unit-tested exactly and the same code decides in a DirectRunner,
in a Flink operator or when a held retry comes due.

Conventions (checked against Knative, see each function):

- ``attempt`` counts attempts already made, the failed one included: after the first POST
  failed, ``attempt == 1`` and the retry about to be scheduled is retry number 1.
- Durations and instants are seconds (floats); instants are on whatever clock the caller
  uses (``time.time()`` by default in the engine).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping

from eventing.plan import DeliveryPolicy

__all__ = [
    "GiveUp",
    "Retry",
    "backoff_delay",
    "is_retryable",
    "is_success",
    "next_step",
    "parse_retry_after",
    "retry_after_seconds",
]

#: Status codes retried besides every 5xx. One reason each, as Knative's SelectiveRetry gives
#: them (knative/eventing pkg/kncloudevents/retries.go); the Kafka broker's data plane retries
#: the same set (WebClientCloudEventSender.isRetryableStatusCode).
_RETRIED_4XX = frozenset(
    {
        # 404 Not Found: a consumer whose pod is still becoming ready answers 404 for a moment
        # (Knative Serving's activator/queue-proxy); retrying is what gets the event through.
        404,
        # 408 Request Timeout: the server gave up waiting for us; the request itself was fine.
        408,
        # 409 Conflict: "processing in progress" / a concurrent update; Knative's own e2e
        # receivers return it and expect a retry.
        409,
        # 429 Too Many Requests: the consumer is overloaded; a delayed retry (backoff, or its
        # Retry-After) is exactly what it asks for.
        429,
    }
)


def is_success(status: int) -> bool:
    """2xx is success; everything else (1xx, 3xx, 4xx, 5xx) is a failed delivery.

    Knative does not follow redirects on event delivery: a 3xx is a failure (not retried).
    """
    return 200 <= status < 300


def is_retryable(status: int | None) -> bool:
    """Whether a failed attempt is retried. ``None`` means no HTTP response at all.

    - ``None`` (connection refused or reset, DNS failure, timeout): retried; the consumer may
      simply not be up yet or be briefly overloaded.
    - 5xx: retried; server-side errors are presumed transient.
    - 404, 408, 409, 429: retried (reasons at ``_RETRIED_4XX``).
    - Any other status (1xx, 2xx, 3xx, other 4xx): not retried. A 400/401/403/413/422...
      will fail the same way every time, so the event goes straight to the dead letter.
    """
    if status is None:
        return True
    if status >= 500:
        return True
    return status in _RETRIED_4XX


def backoff_delay(policy: DeliveryPolicy, attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = the first retry).

    Knative's DeliverySpec: "For linear policy, backoff delay is backoffDelay*<numberOfRetries>.
    For exponential policy, backoff delay is backoffDelay*2^<numberOfRetries>"
    (knative/eventing pkg/apis/duck/v1/delivery_types.go). With the first retry being
    numberOfRetries = 1 this gives, for delay d:

    - linear:      d, 2d, 3d, ...
    - exponential: 2d, 4d, 8d, ...

    This is what Knative's own ``retries_test.go`` asserts (PT0.5S exponential -> 1s, 2s, 4s
    for retries 1, 2, 3) and what the Kafka broker does (its Vert.x circuit breaker calls the
    policy with retryCount + 1, i.e. 1 for the first retry). (Knative's channel-based broker
    passes go-retryablehttp's 0-based loop index instead, so there the first exponential wait
    is d and the first linear wait is 0; we follow the documented and Kafka broker form.)

    An unrecognised policy name is treated as exponential, as the Kafka broker does.
    ``policy.backoff_max`` (our extension) caps every single interval.
    """
    if attempt < 1:
        raise ValueError(f"retry number must be >= 1, got {attempt}")
    delay = max(0.0, float(policy.backoff_delay))
    if policy.backoff_policy == "linear":
        value = delay * attempt
    else:
        # ldexp(d, n) = d * 2**n without float overflow for any realistic retry count.
        value = math.ldexp(delay, min(attempt, 1000))
    if policy.backoff_max is not None:
        value = min(value, max(0.0, float(policy.backoff_max)))
    return value


_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
# RFC 9110 section 5.6.7: IMF-fixdate, the obsolete RFC 850 form, and ANSI C asctime().
_IMF_FIXDATE = re.compile(
    r"^[A-Za-z]{3}, (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$")
_RFC850 = re.compile(
    r"^[A-Za-z]+, (\d{2})-([A-Za-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$")
_ASCTIME = re.compile(
    r"^[A-Za-z]{3} ([A-Za-z]{3}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})$")


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (no time zone, no locale)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _http_date(value: str, now: float) -> float | None:
    """Epoch seconds of an HTTP-date, or None when ``value`` is not one."""
    if m := _IMF_FIXDATE.match(value):
        day, mon, year, hh, mm, ss = m.groups()
    elif m := _RFC850.match(value):
        day, mon, yy, hh, mm, ss = m.groups()
        # RFC 9110: a two-digit year more than 50 years in the future is in the past century.
        now_year = 1970 + int(now // 31556952)
        year_i = (now_year // 100) * 100 + int(yy)
        if year_i > now_year + 50:
            year_i -= 100
        year = str(year_i)
    elif m := _ASCTIME.match(value):
        mon, day, hh, mm, ss, year = m.groups()
    else:
        return None
    month = _MONTHS.get(mon.lower())
    day_i, hh_i, mm_i, ss_i = int(day), int(hh), int(mm), int(ss)
    if month is None or not (1 <= day_i <= 31 and hh_i < 24 and mm_i < 60 and ss_i <= 60):
        return None
    days = _days_from_civil(int(year), month, day_i)
    return float(days * 86400 + hh_i * 3600 + mm_i * 60 + ss_i)


def parse_retry_after(value: str, now: float) -> float | None:
    """Seconds to wait that a ``Retry-After`` value asks for, or None when it is malformed.

    Both RFC 9110 forms: delay-seconds (``"120"``) and an HTTP-date (seconds from ``now``;
    a date in the past means 0). Like Knative's parseRetryAfterDuration, which tries an
    integer first and then an HTTP date.
    """
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    at = _http_date(text, now)
    if at is None:
        return None
    return max(0.0, at - now)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def retry_after_seconds(
    status: int | None,
    headers: Mapping[str, str],
    now: float,
    retry_after_max: float | None,
) -> float | None:
    """The ``Retry-After`` wait to honour for this response, or None to ignore it.

    Follows Knative (generateBackoffFn in pkg/kncloudevents, the ``delivery-retryafter``
    feature as implemented): the header is looked at only on 429 and 503, and only when the
    delivery spec sets ``retryAfterMax`` (opt-in while the feature is alpha/beta); a
    ``retryAfterMax`` of 0 ("PT0S") opts out; otherwise the value is capped at
    ``retryAfterMax``. The caller waits the larger of this and the backoff.
    """
    if status not in (429, 503):
        return None
    if retry_after_max is None or retry_after_max <= 0:
        return None
    raw = _header(headers, "retry-after")
    if raw is None:
        return None
    seconds = parse_retry_after(raw, now)
    if seconds is None:
        return None
    return min(seconds, float(retry_after_max))


@dataclass(frozen=True)
class Retry:
    """Try again at ``at`` (the ``retry``-th retry, after waiting ``delay`` seconds)."""

    at: float
    delay: float
    retry: int


@dataclass(frozen=True)
class GiveUp:
    """No more attempts: the event goes to the dead letter. ``reason`` says why."""

    reason: str


def next_step(
    policy: DeliveryPolicy,
    attempt: int,
    first_attempt_at: float | None,
    now: float,
    status: int | None,
    headers: Mapping[str, str] | None = None,
) -> Retry | GiveUp:
    """What to do after a failed attempt.

    ``attempt``: attempts made so far, the failed one included (>= 1). ``first_attempt_at``:
    when the first of them started (None = this one, i.e. ``now``). ``status``: the HTTP
    status, None for a network error or timeout.

    Gives up when the failure is not retryable, when ``policy.retry`` retries were already
    made, or when the retry would be due later than ``max_retry_duration`` (our extension)
    after the first attempt. Otherwise waits the backoff, or the honoured ``Retry-After``
    when that is longer.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1 after a failure, got {attempt}")
    if status is not None and is_success(status):
        raise ValueError(f"status {status} is a success, not a failure")
    what = "network error or timeout" if status is None else f"status {status}"
    if not is_retryable(status):
        return GiveUp(f"{what} is not retryable")
    retries_made = attempt - 1
    if retries_made >= policy.retry:
        return GiveUp(f"{what} after {retries_made} of {policy.retry} retries")
    retry = retries_made + 1
    delay = backoff_delay(policy, retry)
    honoured = retry_after_seconds(status, headers or {}, now, policy.retry_after_max)
    if honoured is not None and honoured > delay:
        delay = honoured
    at = now + delay
    if policy.max_retry_duration is not None:
        start = now if first_attempt_at is None else first_attempt_at
        if at - start > policy.max_retry_duration:
            return GiveUp(
                f"{what}; retry {retry} would be due {at - start:g}s after the first attempt, "
                f"past maxRetryDuration {policy.max_retry_duration:g}s"
            )
    return Retry(at=at, delay=delay, retry=retry)
