"""Subscriptions API ``prefix``: every attribute starts with its value."""
from filters._attribute import AttributeFilter


class PrefixFilter(AttributeFilter):
    dialect = "prefix"
    index_kind = "prefix"

    @staticmethod
    def test(actual: str, expected: str) -> bool:
        return actual.startswith(expected)
