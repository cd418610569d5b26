"""DeliverySettings: the delivery flags as one value, from the CLI to either runner's
delivery step, including the JSON trip `knflow submit` makes to a Flink cluster."""
from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from filters.errors import KnflowError
from pipelines.cli import build_parser
from pipelines.delivery_settings import DeliverySettings
from pipelines.flink_job import FlinkJobOptions
from pipelines.options import flink_options
from pipelines.runners import run_job
from tests.plans import broker_yaml, plan_from_yaml, trigger_yaml

FLAGS = ["--concurrency", "7", "--delivery-timeout", "2.5", "--http-client", "aiohttp", "--event-loop", "asyncio",
         "--ref-url", "orders=http://127.0.0.1:9/orders", "--cel-native"]


def test_flags_become_one_settings_value_for_both_runners():
    args = build_parser().parse_args(["run", "m.yaml", *FLAGS])
    settings = DeliverySettings.from_options(args)
    assert settings == DeliverySettings(7, 2.5, "aiohttp", "asyncio", {"orders": "http://127.0.0.1:9/orders"}, cel_native=True)
    assert flink_options(args).delivery == settings
    defaults = DeliverySettings.from_options(build_parser().parse_args(["run", "m.yaml"]))
    assert defaults == DeliverySettings() and (defaults.concurrency, defaults.event_loop, defaults.cel_native) == (64, "uvloop", False)


def test_flink_options_survive_the_json_trip_to_a_cluster():
    options = flink_options(build_parser().parse_args(["submit", "m.yaml", "--jobmanager", "h:8081", *FLAGS]))
    shipped = json.loads(json.dumps(dataclasses.asdict(options)))  # what flink_entry receives
    back = FlinkJobOptions(**shipped)
    assert isinstance(back.delivery, DeliverySettings) and back.delivery == options.delivery
    assert back == options


def test_the_engine_follows_the_settings():
    plan = plan_from_yaml(broker_yaml() + trigger_yaml("t", "http://127.0.0.1:9/t"))
    triggers = {t.key: t for t in plan.triggers()}
    engine = DeliverySettings(concurrency=40, timeout=2.5, http_client="aiohttp").engine(triggers)
    assert engine.sender.name == "aiohttp" and engine.sender.limit == 160  # 4x the per-trigger concurrency
    assert engine.route("ns/t").timeout == 2.5
    assert DeliverySettings(concurrency=1).engine(triggers).sender.limit == 100  # never fewer than 100
    asyncio.run(engine.close())


def test_a_malformed_ref_url_is_a_clear_error(tmp_path):
    manifests = tmp_path / "m.yaml"
    manifests.write_text(broker_yaml() + trigger_yaml("t", "http://127.0.0.1:9/t"))
    args = build_parser().parse_args(["run", str(manifests), "--runner", "beam-direct", "--events-file", "x",
                                      "--ref-url", "orders"])
    with pytest.raises(KnflowError, match=r"--ref-url 'orders': expected NAME=http"):
        run_job(args)
