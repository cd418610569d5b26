"""The multi-trigger index: which triggers can still match an event.

Like AWS event-ruler, matching cost should not grow with the number of rules. Every
filter reports conditions that must hold whenever it does not FAIL (``requirements``);
each trigger is filed under one of them in a hash index (exact / in) or a prefix index,
and an event only evaluates the triggers whose condition it satisfies, plus the few with
no indexable condition. Results are identical to evaluating every trigger: a candidate
set only ever drops triggers that would have FAILed.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Generic, Sequence, TypeVar

from filters.base import EventView, Filter, FilterResult

T = TypeVar("T")

#: Attributes most events carry with selective values: preferred index keys.
_PREFERRED = {"type": 0, "source": 1, "subject": 2}


def _choose(requirements: list[tuple[str, str, Any]]) -> tuple[str, str, Any] | None:
    """Pick the most selective condition: exact before in before prefix, type first."""
    rank = {"exact": 0, "in": 1, "prefix": 2}
    usable = [r for r in requirements if r[0] in rank and isinstance(r[1], str)]
    if not usable:
        return None
    return min(usable, key=lambda r: (rank[r[0]], _PREFERRED.get(r[1], 9), -len(str(r[2]))))


class TriggerIndex(Generic[T]):
    """Index ``(filter, payload)`` pairs; ``match(event)`` returns delivering payloads in order."""

    def __init__(self, entries: Sequence[tuple[Filter, T]]) -> None:
        self._entries = list(entries)
        self._filters = [f for f, _ in self._entries]
        self._fast = [f.fast() for f in self._filters]
        self._payloads = [p for _, p in self._entries]
        self._always: list[int] = []
        self._exact: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        prefix: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        self.indexed_by: list[tuple[str, str, Any] | None] = []
        for position, flt in enumerate(self._filters):
            condition = _choose(flt.requirements())
            self.indexed_by.append(condition)
            if condition is None:
                self._always.append(position)
            elif condition[0] == "exact":
                self._exact[condition[1]][condition[2]].append(position)
            elif condition[0] == "in":
                for value in set(condition[2]):
                    self._exact[condition[1]][value].append(position)
            else:
                prefix[condition[1]][condition[2]].append(position)
        self._exact = {a: dict(v) for a, v in self._exact.items()}
        self._exact_items = tuple(self._exact.items())
        # Prefix lookup: for each attribute, the distinct prefix lengths, then a dict hit per length.
        self._prefix = {
            attr: (sorted({len(p) for p in table}), dict(table)) for attr, table in prefix.items()
        }
        self._all_positions = list(range(len(self._filters)))

    def __len__(self) -> int:
        return len(self._entries)

    def candidates(self, event: EventView) -> list[int]:
        """Positions of the triggers that might match, in trigger order."""
        if not self._exact and not self._prefix:
            return self._all_positions
        found = list(self._always)
        string = event.string
        for attr, table in self._exact_items:
            hit = table.get(string(attr))
            if hit:
                found.extend(hit)
        for attr, (lengths, table) in self._prefix.items():
            value = string(attr)
            if value is None:
                continue
            for length in lengths:
                if length > len(value):
                    break
                hit = table.get(value[:length])
                if hit:
                    found.extend(hit)
        found.sort()
        return found

    def match(self, event: EventView) -> list[T]:
        """Payloads of every trigger whose filter delivers (PASS or NO_FILTER) the event."""
        filters, payloads = self._fast, self._payloads
        fail = FilterResult.FAIL
        out = []
        previous = -1
        candidates = self.candidates(event) if (self._exact or self._prefix) else self._all_positions
        for position in candidates:
            if position == previous:  # a trigger filed twice by an `in` with repeated values
                continue
            previous = position
            if filters[position](event) is not fail:
                out.append(payloads[position])
        return out

    def match_all(self, event: EventView) -> list[T]:
        """The reference: evaluate every trigger (used by tests and ``knflow match``)."""
        fail = FilterResult.FAIL
        return [p for f, p in self._entries if f.filter(event) is not fail]
