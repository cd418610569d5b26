"""Subscriptions API ``any``: PASS if any child passes; NO_FILTER when every child is."""
from __future__ import annotations

from filters.all import AllFilter
from filters.base import EventView, Explanation, FilterResult


class AnyFilter(AllFilter):
    dialect = "any"

    def filter(self, event: EventView) -> FilterResult:
        result = FilterResult.NO_FILTER
        for child in self._children:
            r = child.filter(event)
            if r is FilterResult.PASS:
                return r
            if r is FilterResult.FAIL:
                result = r
        return result

    def explain(self, event: EventView) -> Explanation:
        parts = tuple(child.explain(event) for child in self._children)
        result = FilterResult.NO_FILTER
        for part in parts:
            result = result.or_(part.result)
        return Explanation(f"{self.dialect} ({len(parts)} filters)", result, "", parts)
