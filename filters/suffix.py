"""Subscriptions API ``suffix``: every attribute ends with its value."""
from filters._attribute import AttributeFilter


class SuffixFilter(AttributeFilter):
    dialect = "suffix"

    @staticmethod
    def test(actual: str, expected: str) -> bool:
        return actual.endswith(expected)
