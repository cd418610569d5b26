"""Parse a Knative ``spec.delivery`` (plus our extensions) into a ``DeliveryPolicy``."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from eventing.destinations import DestinationError, parse_destination
from eventing.durations import parse_duration
from eventing.plan import DeliveryPolicy

#: Knative's DeliverySpec fields, then ours (backoffMax, maxRetryDuration).
KNATIVE_FIELDS = ("retry", "backoffPolicy", "backoffDelay", "timeout", "deadLetterSink", "retryAfterMax", "format")
EXTENSION_FIELDS = ("backoffMax", "maxRetryDuration")


def parse_delivery(value: Any, field: str, namespace: str, report: Callable[[str, str], None]) -> DeliveryPolicy | None:
    """The policy at ``field``, or None if it had problems (each passed to ``report``)."""
    if value is None:
        return DeliveryPolicy()
    if not isinstance(value, Mapping):
        report(field, f"must be a mapping, got {type(value).__name__}")
        return None
    ok = True

    def bad(sub: str, message: str) -> None:
        nonlocal ok
        ok = False
        report(f"{field}.{sub}" if sub else field, message)

    for key in value:
        if key not in KNATIVE_FIELDS + EXTENSION_FIELDS:
            bad(str(key), f"unknown field (known: {', '.join(KNATIVE_FIELDS + EXTENSION_FIELDS)})")
    kwargs: dict[str, Any] = {}
    retry = value.get("retry")
    if retry is not None:
        if isinstance(retry, bool) or not isinstance(retry, int):
            bad("retry", f"must be an integer, got {retry!r}")
        elif retry < 0:
            bad("retry", f"must not be negative, got {retry}")
        else:
            kwargs["retry"] = retry
    policy = value.get("backoffPolicy")
    if policy is not None:
        if policy not in ("linear", "exponential"):
            bad("backoffPolicy", f"must be linear or exponential, got {policy!r}")
        else:
            kwargs["backoff_policy"] = policy
    for key, attr in (("backoffDelay", "backoff_delay"), ("timeout", "timeout"), ("retryAfterMax", "retry_after_max"),
                      ("backoffMax", "backoff_max"), ("maxRetryDuration", "max_retry_duration")):
        if value.get(key) is None:
            continue
        try:
            seconds = parse_duration(value[key])
        except ValueError as exc:
            bad(key, str(exc))
            continue
        if key == "timeout" and seconds <= 0:
            bad(key, "must be greater than zero")
            continue
        kwargs[attr] = seconds
    fmt = value.get("format")
    if fmt is not None:
        if fmt not in ("json", "binary"):
            bad("format", f"must be json (structured mode) or binary, got {fmt!r}")
        else:
            kwargs["format"] = fmt
    if value.get("deadLetterSink") is not None:
        try:
            kwargs["dead_letter_sink"] = parse_destination(value["deadLetterSink"], f"{field}.deadLetterSink", namespace)
        except DestinationError as exc:
            ok = False
            report(exc.field, str(exc))
    return DeliveryPolicy(**kwargs) if ok else None
