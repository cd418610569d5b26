"""Plain records that leave the data plane: raw input records and dead letters.

Engine-neutral (Beam and Flink both emit them) and plain data, so any coder can carry them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RawRecord:
    """One record as read from a source: Kafka-style headers and value, plus where it came from."""

    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    origin: str = ""  # e.g. "events.jsonl:12" or "topic/partition@offset", named in dead letters

    @classmethod
    def structured(cls, value: bytes | str, origin: str = "") -> "RawRecord":
        """A structured-mode CloudEvent (JSON) as a record."""
        if isinstance(value, str):
            value = value.encode("utf-8")
        return cls(value, (("content-type", b"application/cloudevents+json"),), origin)


@dataclass(frozen=True)
class DeadLetter:
    """An event (or undecodable record) that the job's own dead-letter output keeps.

    ``event`` is the structured-mode dict when the event decoded; ``raw`` the record's value
    (text when it is UTF-8) when it did not. ``trigger`` is None for decode failures.
    """

    reason: str
    origin: str = ""
    trigger: str | None = None
    event_id: str | None = None
    destination: str | None = None  # the deadLetterSink URL it was stored in, if any
    stored: bool = False
    event: dict[str, Any] | None = None
    raw: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        doc = {k: v for k, v in self.__dict__.items() if v not in (None, {}, "")}
        return json.dumps(doc, sort_keys=True, default=str)


def raw_text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.hex()
