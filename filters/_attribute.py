"""Shared core of the exact / prefix / suffix dialects: a map of attribute -> string test."""
from __future__ import annotations

import re
from typing import Any, Mapping

from filters.base import EventView, Explanation, Filter, FilterResult
from filters.errors import FilterSpecError

#: Knative's webhook: attribute names are lowercase letters and digits, starting with a letter.
ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9]*$")


def validated_attribute_map(value: Any, path: str, *, allow_empty_value: bool) -> dict[str, str]:
    """Check a ``{attribute: value}`` map once, at construction, as Knative's webhook does."""
    if not isinstance(value, Mapping):
        raise FilterSpecError(path, f"must be a map of attribute name to string, got {type(value).__name__}")
    if not value:
        raise FilterSpecError(path, "must name at least one attribute")
    out: dict[str, str] = {}
    for name, expected in value.items():
        if not isinstance(name, str) or not ATTRIBUTE_NAME.match(name):
            raise FilterSpecError(path, f"invalid attribute name {name!r}: must match ^[a-z][a-z0-9]*$")
        if not isinstance(expected, str):
            raise FilterSpecError(f"{path}.{name}", f"value must be a string, got {type(expected).__name__} {expected!r} (quote it)")
        if not expected and not allow_empty_value:
            raise FilterSpecError(f"{path}.{name}", "value must not be empty")
        out[name] = expected
    return out


class AttributeFilter(Filter):
    """PASS when every named attribute exists and its string form satisfies ``test``."""

    allow_empty_value = False

    def __init__(self, value: Any, path: str) -> None:
        self.attributes = validated_attribute_map(value, path, allow_empty_value=self.allow_empty_value)
        self._items = tuple(self.attributes.items())

    #: the index kind this dialect's conditions are (None: not indexable).
    index_kind: str | None = None

    @staticmethod
    def test(actual: str, expected: str) -> bool:
        raise NotImplementedError

    def requirements(self) -> list[tuple[str, str, Any]]:
        if self.index_kind is None:
            return []
        return [(self.index_kind, name, value) for name, value in self._items if value]

    def fast(self):
        items = self._items
        if not items:  # the legacy dialect's empty map: its filter says NO_FILTER
            return self.filter
        PASS, FAIL = FilterResult.PASS, FilterResult.FAIL
        if self.index_kind == "exact" and all(expected for _, expected in items):
            # Plain equality for every attribute (an empty legacy value means "present"
            # instead, and takes the general path).
            if len(items) == 1:
                (name, expected), = items

                def exact(event: EventView) -> FilterResult:
                    return PASS if event.string(name) == expected else FAIL
                return exact

            def exact_all(event: EventView) -> FilterResult:
                string = event.string
                for name, expected in items:
                    if string(name) != expected:
                        return FAIL
                return PASS
            return exact_all
        if len(items) != 1:
            return self.filter
        (name, expected), = items
        test = self.test

        def one(event: EventView) -> FilterResult:
            actual = event.string(name)
            return PASS if actual is not None and test(actual, expected) else FAIL
        return one

    def filter(self, event: EventView) -> FilterResult:
        string = event.string
        test = self.test
        for name, expected in self._items:
            actual = string(name)
            if actual is None or not test(actual, expected):
                return FilterResult.FAIL
        return FilterResult.PASS

    def explain(self, event: EventView) -> Explanation:
        for name, expected in self._items:
            actual = event.string(name)
            if actual is None:
                return Explanation(self.describe(), FilterResult.FAIL, f"event has no attribute {name!r}")
            if not self.test(actual, expected):
                return Explanation(self.describe(), FilterResult.FAIL, f"{name}={actual!r} does not {self.dialect}-match {expected!r}")
        return Explanation(self.describe(), FilterResult.PASS, "all attributes match")
