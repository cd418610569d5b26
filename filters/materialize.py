"""Build a compiled filter tree from a Trigger's filter spec, raising on any bad node.

One recursive function, like Knative's ``MaterializeFiltersList``, except that a bad
spec is an error (with the path of the field at fault), never silently skipped.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from filters.base import Filter
from filters.errors import FilterSpecError


def _registry() -> dict[str, Callable[[Any, str], Filter]]:
    from filters.all import AllFilter
    from filters.any import AnyFilter
    from filters.attributes import LegacyAttributesFilter
    from filters.cel import CelFilter
    from filters.exact import ExactFilter
    from filters.not_ import NotFilter
    from filters.prefix import PrefixFilter
    from filters.suffix import SuffixFilter

    def cesql(value: Any, path: str) -> Filter:
        try:
            from filters.cesql import CesqlFilter
        except ImportError:
            raise FilterSpecError(path, "the cesql dialect is not supported yet") from None
        return CesqlFilter(value, path)

    return {
        "exact": ExactFilter,
        "prefix": PrefixFilter,
        "suffix": SuffixFilter,
        "all": lambda v, p: AllFilter(v, p, materialize),
        "any": lambda v, p: AnyFilter(v, p, materialize),
        "not": lambda v, p: NotFilter(v, p, materialize),
        "cesql": cesql,
        "cel": CelFilter,
        # Internal roots, reachable only through materialize_trigger():
        "filters": lambda v, p: AllFilter(v, p, materialize),
        "attributes": LegacyAttributesFilter,
    }


_DIALECTS: dict[str, Callable[[Any, str], Filter]] | None = None
_INTERNAL = frozenset({"filters", "attributes"})
#: The dialects a user may write inside ``spec.filters``.
USER_DIALECTS = ("exact", "prefix", "suffix", "all", "any", "not", "cesql", "cel")


def materialize(spec: Any, path: str = "spec.filters", _root: bool = False) -> Filter:
    """Compile one filter object ``{dialect: value}`` found at ``path``."""
    global _DIALECTS
    if _DIALECTS is None:
        _DIALECTS = _registry()
    if not isinstance(spec, Mapping):
        raise FilterSpecError(path, f"a filter must be an object with one dialect ({', '.join(USER_DIALECTS)}), got {type(spec).__name__}")
    dialects = [key for key, value in spec.items() if value is not None or key == "not"]
    if not dialects:
        node = _DIALECTS["all"]([], path)  # an empty filter matches everything
    elif len(dialects) > 1:
        raise FilterSpecError(path, f"multiple dialects found ({', '.join(dialects)}), filters can have only one dialect set")
    else:
        dialect = dialects[0]
        if dialect not in _DIALECTS or (dialect in _INTERNAL and not _root):
            raise FilterSpecError(f"{path}.{dialect}", f"unknown filter dialect {dialect!r}; expected one of {', '.join(USER_DIALECTS)}")
        node = _DIALECTS[dialect](spec[dialect], f"{path}.{dialect}")
    node._origin = (dict(spec), path, _root)
    return node


def materialize_trigger(attributes: Mapping[str, Any] | None, filters: list | None, path: str = "spec") -> Filter:
    """The root filter of a Trigger, with Knative's precedence.

    A non-empty ``spec.filters`` wins over ``spec.filter.attributes`` (its entries are
    ANDed); otherwise the legacy attributes apply; with neither, everything passes.
    """
    if filters:
        return materialize({"filters": list(filters)}, path, True)
    return materialize({"attributes": dict(attributes or {})}, f"{path}.filter", True)
