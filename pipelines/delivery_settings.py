"""``DeliverySettings``: how the operator runs, one value from the job options to it.

The same options shape delivery in both runners (``--concurrency``,
``--delivery-timeout``, ``--http-client``, ``--event-loop``, ``--ref-url``), and
``--cel-native`` how its router's CEL filters run. They travel as this one value from the
CLI or Beam's options through the runner to the operator (the Beam DoFns, the Flink
function), so adding a setting touches its flag and its use, not every layer between them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from pipelines.event_loop import DEFAULT_EVENT_LOOP
from transforms.delivery import DeliveryEngine, destination_ca_certs
from transforms.sender import DEFAULT_SENDER, make_sender

__all__ = ["DeliverySettings"]


@dataclass(frozen=True)
class DeliverySettings:
    """``concurrency``: requests in flight per trigger; ``timeout``: seconds per attempt when
    a trigger's ``spec.delivery.timeout`` is not set; ``http_client``: the ``Sender``
    (``make_sender`` name); ``event_loop``: ``uvloop`` or ``asyncio``; ``ref_urls``: where
    ``ref`` subscribers and sinks resolve to; ``cel_native``: the routers build the compiled
    CEL filters into C (``transforms.router``)."""

    concurrency: int = 64
    timeout: float = 30.0
    http_client: str = DEFAULT_SENDER
    event_loop: str = DEFAULT_EVENT_LOOP
    ref_urls: Mapping[str, str] = field(default_factory=dict)
    cel_native: bool = False

    @classmethod
    def from_options(cls, options: Any) -> "DeliverySettings":
        """From parsed ``add_job_arguments`` flags (an argparse namespace or ``KnflowOptions``)."""
        from pipelines.options import parse_ref_urls

        return cls(options.concurrency, options.delivery_timeout, options.http_client, options.event_loop,
                   parse_ref_urls(options.ref_url or []), bool(getattr(options, "cel_native", False)))

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "DeliverySettings":
        """Back from ``dataclasses.asdict`` (the Flink job's options travel as JSON)."""
        return cls(**{**doc, "ref_urls": dict(doc.get("ref_urls") or {})})

    def engine(self, triggers: Mapping[str, Any]) -> DeliveryEngine:
        """A delivery engine for ``triggers`` on a new ``http_client`` sender whose pool allows
        4x the per-trigger concurrency (at least 100 connections) and that trusts the
        destinations' ``CACerts``."""
        sender = make_sender(self.http_client, limit=max(100, self.concurrency * 4),
                             ca_certs=destination_ca_certs(triggers, self.ref_urls))
        return DeliveryEngine(triggers, sender, ref_urls=self.ref_urls, default_timeout=self.timeout)
