"""Legacy ``spec.filter.attributes``: exact match, where ``""`` means present and non-empty."""
from __future__ import annotations

from typing import Any

from filters._attribute import AttributeFilter
from filters.base import EventView, FilterResult


class LegacyAttributesFilter(AttributeFilter):
    dialect = "attributes"
    index_kind = "exact"  # "" (present) values are skipped by requirements()
    allow_empty_value = True

    def __init__(self, value: Any, path: str) -> None:
        if not value:  # `filter: {}` or `attributes: {}` matches everything
            self.attributes, self._items = {}, ()
            return
        super().__init__(value, path)

    @staticmethod
    def test(actual: str, expected: str) -> bool:
        return actual == expected if expected else actual != ""

    def filter(self, event: EventView) -> FilterResult:
        if not self._items:
            return FilterResult.NO_FILTER
        return super().filter(event)
