"""Subscriptions API ``not``: inverts PASS and FAIL; NO_FILTER stays NO_FILTER."""
from __future__ import annotations

from typing import Any

from filters.base import EventView, Explanation, Filter, FilterResult, Materializer

_INVERT = {
    FilterResult.PASS: FilterResult.FAIL,
    FilterResult.FAIL: FilterResult.PASS,
    FilterResult.NO_FILTER: FilterResult.NO_FILTER,
}


class NotFilter(Filter):
    dialect = "not"

    def __init__(self, value: Any, path: str, materialize: Materializer) -> None:
        self.child = None if value is None else materialize(value, path)

    def children(self) -> tuple[Filter, ...]:
        return () if self.child is None else (self.child,)

    def fast(self):
        if self.child is None:
            return self.filter
        child = self.child.fast()
        invert = _INVERT
        return lambda event: invert[child(event)]

    def filter(self, event: EventView) -> FilterResult:
        if self.child is None:
            return FilterResult.NO_FILTER
        return _INVERT[self.child.filter(event)]

    def explain(self, event: EventView) -> Explanation:
        if self.child is None:
            return Explanation("not (empty)", FilterResult.NO_FILTER)
        part = self.child.explain(event)
        return Explanation("not", _INVERT[part.result], "", (part,))
