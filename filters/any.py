"""Subscriptions API ``any``: PASS if any child passes; NO_FILTER when every child is."""
from __future__ import annotations

from typing import Any

from filters.all import AllFilter
from filters.base import EventView, FilterResult


class AnyFilter(AllFilter):
    dialect = "any"
    combine = staticmethod(FilterResult.or_)

    def requirements(self) -> list[tuple[str, str, Any]]:
        """``any`` of exact matches on one attribute requires that attribute to be ``in`` them.

        Only when every child requires an exact value of the same attribute; a NO_FILTER
        child (no requirements) makes the whole node unindexable, as it should.
        """
        if not self._children:
            return []
        values: list[str] = []
        attribute = None
        for child in self._children:
            options = [r for r in child.requirements() if r[0] in ("exact", "in")]
            if not options:
                return []
            kind, name, value = options[0]
            if attribute is None:
                attribute = name
            match = next((r for r in options if r[1] == attribute), None)
            if match is None:
                return []
            values.extend([match[2]] if match[0] == "exact" else match[2])
        return [("in", attribute, tuple(values))]

    def fast(self):
        # any(x) gives exactly x's result too.
        if len(self._children) == 1:
            return self._children[0].fast()
        if not self._children:
            return self.filter
        children = tuple(child.fast() for child in self._children)
        PASS, FAIL, NO_FILTER = FilterResult.PASS, FilterResult.FAIL, FilterResult.NO_FILTER

        def any_of(event: EventView) -> FilterResult:
            result = NO_FILTER
            for child in children:
                r = child(event)
                if r is PASS:
                    return r
                if r is FAIL:
                    result = r
            return result
        return any_of

    def filter(self, event: EventView) -> FilterResult:
        result = FilterResult.NO_FILTER
        for child in self._children:
            r = child.filter(event)
            if r is FilterResult.PASS:
                return r
            if r is FilterResult.FAIL:
                result = r
        return result
