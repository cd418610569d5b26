"""Subscriptions API ``any``: PASS if any child passes; NO_FILTER when every child is."""
from __future__ import annotations

from typing import Any

from filters.all import AllFilter
from filters.base import FilterResult


class AnyFilter(AllFilter):
    dialect = "any"
    combine = staticmethod(FilterResult.or_)
    short_circuit = FilterResult.PASS
    sticky = FilterResult.FAIL

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
