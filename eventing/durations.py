"""ISO-8601 durations as Knative's delivery spec writes them (``PT0.2S``, ``PT1M30S``, ``P1D``)."""
from __future__ import annotations

import re

_DURATION = re.compile(
    r"^P(?!$)(?:(?P<weeks>\d+(?:\.\d+)?)W)?(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)
_SECONDS = {"weeks": 604800.0, "days": 86400.0, "hours": 3600.0, "minutes": 60.0, "seconds": 1.0}


def parse_duration(text: object) -> float:
    """Seconds in an ISO-8601 duration; raises ValueError saying what a valid one looks like.

    Years and months are rejected: their length in seconds is ambiguous.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected an ISO-8601 duration string such as PT0.5S, got {type(text).__name__} {text!r}")
    match = _DURATION.match(text.strip().upper())
    if not match:
        raise ValueError(f"invalid ISO-8601 duration {text!r} (expected e.g. PT0.2S, PT1M30S, P1D; years and months are not allowed)")
    return sum(float(v) * _SECONDS[k] for k, v in match.groupdict().items() if v)
