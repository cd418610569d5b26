"""Subscriptions API ``exact``: every attribute equals its value."""
from filters._attribute import AttributeFilter


class ExactFilter(AttributeFilter):
    dialect = "exact"
    index_kind = "exact"

    @staticmethod
    def test(actual: str, expected: str) -> bool:
        return actual == expected
