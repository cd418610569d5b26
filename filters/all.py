"""Subscriptions API ``all``: FAIL if any child fails; NO_FILTER when every child is."""
from __future__ import annotations

from typing import Any

from filters.base import EventView, Explanation, Filter, FilterResult, Materializer
from filters.errors import FilterSpecError


class AllFilter(Filter):
    dialect = "all"

    def __init__(self, value: Any, path: str, materialize: Materializer) -> None:
        if value is None:
            value = []
        if not isinstance(value, list):
            raise FilterSpecError(path, f"must be a list of filters, got {type(value).__name__}")
        self._children = tuple(materialize(child, f"{path}[{i}]") for i, child in enumerate(value))

    def children(self) -> tuple[Filter, ...]:
        return self._children

    def requirements(self) -> list[tuple[str, str, Any]]:
        # FAIL if any child fails: every child's requirements hold when we do not fail.
        return [req for child in self._children for req in child.requirements()]

    #: ``all`` stops at the first FAIL and otherwise PASSes if any child PASSed;
    #: ``any`` swaps the two (stops at PASS, else FAILs if any child FAILed).
    short_circuit = FilterResult.FAIL
    sticky = FilterResult.PASS

    def fast(self):
        # all(x) and any(x) give exactly x's result (NO_FILTER, PASS or FAIL): no wrapper.
        if len(self._children) == 1:
            return self._children[0].fast()
        if not self._children:
            return self.filter
        children = tuple(child.fast() for child in self._children)
        short, sticky, NO_FILTER = self.short_circuit, self.sticky, FilterResult.NO_FILTER

        def fold(event: EventView) -> FilterResult:
            result = NO_FILTER
            for child in children:
                r = child(event)
                if r is short:
                    return r
                if r is sticky:
                    result = r
            return result
        return fold

    def filter(self, event: EventView) -> FilterResult:
        result = FilterResult.NO_FILTER
        short, sticky = self.short_circuit, self.sticky
        for child in self._children:
            r = child.filter(event)
            if r is short:
                return r
            if r is sticky:
                result = r
        return result

    #: how children's results combine (``any`` uses ``or_``)
    combine = staticmethod(FilterResult.and_)

    def explain(self, event: EventView) -> Explanation:
        parts = tuple(child.explain(event) for child in self._children)
        result = FilterResult.NO_FILTER
        for part in parts:
            result = self.combine(result, part.result)
        return Explanation(f"{self.dialect} ({len(parts)} filters)", result, "", parts)
