"""The router: evaluate every trigger of a broker once per event, return the matches.

One job reads the broker topic once for all triggers (Knative reads it once per trigger);
the event is turned into an ``EventView`` once and the trigger index narrows which filters
run at all. A payload kept as received (``bytes``: ``decode_kafka(keep_payload=True)``) is
parsed for the filters only when one reads ``data``, once (``event_view``).
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from eventing.plan import BrokerPlan, TriggerPlan
from filters.base import EventView
from filters.index import TriggerIndex
from transforms.codec import payload_value

log = logging.getLogger(__name__)


def event_view(event: Any) -> EventView:
    """The filters' view of a ``cloudevents.core`` event. ``bytes`` data (a kept payload)
    is seen as what it holds per its content type (a JSON value, text), decoded on the
    first read (``codec.payload_value``); other data as it is."""
    data = event.get_data()
    return EventView(event.get_attributes(), data, payload_value if type(data) is bytes else None)


class Router:
    """``cel_native``: build the broker's compiled CEL filters into C first (job option
    ``--cel-native``). A build that cannot be done (no Cython, no C compiler) leaves them
    Python, with a warning: the job runs either way, with the same results."""

    def __init__(self, broker: BrokerPlan, cel_native: bool = False) -> None:
        self.broker = broker
        if cel_native:
            self._build_native()
        self.triggers = broker.triggers
        self.index: TriggerIndex[int] = TriggerIndex([(t.filter, i) for i, t in enumerate(broker.triggers)])
        self._counts = [0] * len(broker.triggers)
        self.routed = 0

    def _build_native(self) -> None:
        from filters.cel_compiler.native import NativeBuildError

        started = time.monotonic()
        try:
            built = build_native_filters(self.broker)
        except NativeBuildError as exc:
            log.warning("broker %s: --cel-native: the CEL filters stay Python: %s", self.broker.key, exc)
            return
        if built:
            log.info("broker %s: %d CEL filter(s) run as C (--cel-native), ready in %.1f s", self.broker.key, built,
                     time.monotonic() - started)

    def route(self, event: Any) -> list[TriggerPlan]:
        """Triggers that deliver ``event`` (a cloudevents.core event), in manifest order."""
        return self.route_view(event_view(event))

    def route_view(self, view: EventView) -> list[TriggerPlan]:
        positions = self.index.match(view)
        self.routed += 1
        counts, triggers = self._counts, self.triggers
        for position in positions:
            counts[position] += 1
        return [triggers[position] for position in positions]

    @property
    def matched(self) -> Counter[str]:
        """Events matched so far, per trigger key."""
        return Counter({t.key: n for t, n in zip(self.triggers, self._counts) if n})

    def filter_errors(self) -> dict[str, int]:
        """Evaluation errors per trigger so far (each one made that trigger FAIL)."""
        return {t.key: t.filter.error_count() for t in self.broker.triggers}


def build_native_filters(broker: BrokerPlan) -> int:
    """The broker's CEL filters built into C as one set (``filters.cel.build_native``: the
    set is the cache's key, so ``knflow run``'s build ahead and a worker's are the same);
    raises ``NativeBuildError``."""
    from filters.cel import build_native

    return build_native(t.filter for t in broker.triggers)
