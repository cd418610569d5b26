"""The one interface every filter dialect implements, and the event as filters see it.

Mirrors Knative's ``pkg/eventfilter``: a filter answers PASS, FAIL or NO_FILTER, and only
FAIL drops an event. Filters are compiled once (at plan time and again on each worker,
because a compiled filter pickles as its spec) and evaluated many times, so constructors
validate and precompute, and ``filter()`` does as little as possible.
"""
from __future__ import annotations

import base64
import enum
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, ClassVar, Mapping


class FilterResult(enum.Enum):
    PASS = "Pass"
    FAIL = "Fail"
    NO_FILTER = "NoFilter"

    def and_(self, other: "FilterResult") -> "FilterResult":
        """Knative's ``And``: FAIL wins, NO_FILTER is neutral."""
        if self is FilterResult.FAIL or other is FilterResult.FAIL:
            return FilterResult.FAIL
        if self is FilterResult.NO_FILTER:
            return other
        return self

    def or_(self, other: "FilterResult") -> "FilterResult":
        """Knative's ``Or``: PASS wins, NO_FILTER is neutral."""
        if self is FilterResult.PASS or other is FilterResult.PASS:
            return FilterResult.PASS
        if self is FilterResult.NO_FILTER:
            return other
        return self

    @property
    def delivers(self) -> bool:
        """Only FAIL drops an event; NO_FILTER delivers like PASS."""
        return self is not FilterResult.FAIL


def format_rfc3339(value: datetime) -> str:
    """Render a timestamp the way Go's ``time.RFC3339Nano`` does (UTC as ``Z``)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    value = value.astimezone(timezone.utc)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += ("." + f"{value.microsecond:06d}").rstrip("0")
    return text + "Z"


def attribute_string(value: Any) -> str:
    """The canonical string form of a CloudEvents attribute value.

    Knative compares attributes as strings; non-string values (integers, booleans,
    timestamps, binary) compare as the string form the CloudEvents type system gives them.
    A decoded ``time`` (``transforms.codec.Timestamp``) is the very text it came with: any
    RFC 3339 text is that form (nanoseconds, ``+05:45``, lower-case ``t``/``z``), and it is
    the text the event is delivered with; other datetimes are rendered (``format_rfc3339``).
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        text = getattr(value, "text", None)  # a Timestamp made by arithmetic has none
        if type(text) is str:
            return text
        return format_rfc3339(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


class EventView:
    """One event as every filter sees it.

    ``attributes`` holds context attributes and extensions by name (``time`` as a
    datetime); ``data`` is the decoded payload (JSON value, str, or bytes). Derived forms
    that dialects need (string forms, a CEL activation, ...) are built once per event in
    ``cache`` and shared by all triggers of a broker; the compiled CEL filters' view has
    its own slot, ``cel`` (None until built): every CEL trigger reads it first, and a slot
    is ~14 ns cheaper to read than a ``cache`` entry, a tenth of a short filter's cost.

    ``decode``: the payload is given as received (``data``, ``bytes``) and decoded on the
    first read of ``data``, as ``decode(payload, datacontenttype)`` (the router passes
    ``transforms.codec.payload_value``): an event no filter reads the data of is never
    parsed, and one that several filters read is parsed once. ``has_data`` says whether
    there is a payload without decoding it.
    """

    __slots__ = ("attributes", "_data", "_decode", "_strings", "cache", "cel")

    def __init__(self, attributes: Mapping[str, Any], data: Any = None,
                 decode: Callable[[Any, Any], Any] | None = None) -> None:
        self.attributes = attributes
        self._data = data
        self._decode = decode if data is not None else None
        self._strings: dict[str, str | None] = {}
        self.cache: dict[str, Any] = {}
        self.cel: dict[str, Any] | None = None

    @property
    def data(self) -> Any:
        """The payload as filters see it (decoded now if it was given as received)."""
        decode = self._decode
        if decode is None:
            return self._data
        self._decode = None
        data = self._data = decode(self._data, self.attributes.get("datacontenttype"))
        return data

    @property
    def has_data(self) -> bool:
        """Whether the event has a payload (without decoding it). A payload that decodes to
        JSON ``null`` is a payload here, while ``data`` is then None."""
        return self._data is not None

    @classmethod
    def of(cls, event: Any, decode: Callable[[Any, Any], Any] | None = None) -> "EventView":
        """View of a ``cloudevents.core`` event (anything with get_attributes/get_data);
        ``decode``: see the class docstring."""
        return cls(event.get_attributes(), event.get_data(), decode)

    def string(self, name: str) -> str | None:
        """String form of attribute ``name``, or None when the event does not have it."""
        value = self.attributes.get(name)
        if value is None or value.__class__ is str:  # the common case: no conversion, no cache
            return value
        try:
            return self._strings[name]
        except KeyError:
            text = self._strings[name] = attribute_string(value)
            return text


@dataclass(frozen=True)
class Explanation:
    """Why a filter node gave its result, for ``knflow match``."""

    node: str
    result: FilterResult
    detail: str = ""
    children: tuple["Explanation", ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node, "result": self.result.value}
        if self.detail:
            out["detail"] = self.detail
        if self.children:
            out["children"] = [c.to_dict() for c in self.children]
        return out

    def lines(self, indent: int = 0) -> list[str]:
        text = f"{'  ' * indent}{self.result.value:<8} {self.node}"
        if self.detail:
            text += f"  ({self.detail})"
        out = [text]
        for child in self.children:
            out.extend(child.lines(indent + 1))
        return out


Materializer = Callable[[Any, str], "Filter"]


class Filter(ABC):
    """A compiled filter node.

    Subclasses validate in ``__init__`` (raising ``FilterSpecError`` with the path) and
    implement ``filter``. A node pickles as the spec it was materialized from, so a Plan
    can be shipped to engine workers and recompiled there.
    """

    dialect: ClassVar[str] = ""

    #: set by ``materialize``: the spec and path this node was built from.
    _origin: tuple[Any, str] | None = None

    @abstractmethod
    def filter(self, event: EventView) -> FilterResult:
        """Evaluate on one event. Must not raise: evaluation errors are FAIL."""

    def children(self) -> tuple["Filter", ...]:
        return ()

    def fast(self) -> Callable[[EventView], FilterResult]:
        """A callable with exactly ``filter``'s results, specialised for the hot path.

        Composites fold their children's fast callables into closures; a node without a
        specialisation returns its bound ``filter``.
        """
        return self.filter

    def describe(self) -> str:
        spec = self._origin[0] if self._origin else {}
        return json.dumps(spec, sort_keys=True, default=str)

    def explain(self, event: EventView) -> Explanation:
        return Explanation(self.describe(), self.filter(event))

    def requirements(self) -> list[tuple[str, str, Any]]:
        """Conditions that hold whenever ``filter()`` is not FAIL, for the trigger index.

        Each is ``("exact", attr, value)``, ``("prefix", attr, value)`` or
        ``("in", attr, (value, ...))`` on the string form of ``attr``. An empty list is
        always correct (the trigger is then evaluated for every event).
        """
        return []

    def error_count(self) -> int:
        """Evaluation errors seen so far by this node and its children."""
        return sum(child.error_count() for child in self.children())

    def __reduce__(self):  # pickle as the spec; recompiled on load
        if self._origin is None:
            raise TypeError(f"{type(self).__name__} was not built by materialize()")
        from filters.materialize import materialize

        return (materialize, self._origin)
