"""The event loop deliveries run on: chosen by --event-loop, used by both runners."""
from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest
import uvloop

from filters.errors import KnflowError
from pipelines.beam_pipeline import _Deliver
from pipelines.cli import build_parser
from pipelines.delivery_settings import DeliverySettings
from pipelines.event_loop import DEFAULT_EVENT_LOOP, install_policy, new_event_loop
from pipelines.runners import run_beam_direct
from tests.consumers import ConsumerServer, accept
from tests.plans import broker_yaml, plan_from_yaml, trigger_yaml
from transforms.records import RawRecord


def test_new_event_loop_makes_the_named_kind():
    for name, is_uvloop in (("uvloop", True), ("asyncio", False)):
        loop = new_event_loop(name)
        try:
            assert isinstance(loop, uvloop.Loop) is is_uvloop
            assert loop.run_until_complete(asyncio.sleep(0, result=name)) == name
        finally:
            loop.close()
    assert DEFAULT_EVENT_LOOP == "uvloop"


def test_unknown_loop_is_an_error_naming_the_option():
    with pytest.raises(KnflowError, match=r"--event-loop 'tokio': expected one of uvloop, asyncio"):
        new_event_loop("tokio")


def test_install_policy_decides_what_asyncio_new_event_loop_makes():
    before = asyncio.get_event_loop_policy()
    try:
        install_policy("uvloop")
        loop = asyncio.new_event_loop()  # what PyFlink's async operator calls after open()
        assert isinstance(loop, uvloop.Loop)
        loop.close()
        install_policy("asyncio")
        loop = asyncio.new_event_loop()
        assert not isinstance(loop, uvloop.Loop)
        loop.close()
    finally:
        asyncio.set_event_loop_policy(before)


def test_cli_takes_event_loop_and_rejects_others(capsys):
    parser = build_parser()
    assert parser.parse_args(["run", "m.yaml"]).event_loop == "uvloop"
    assert parser.parse_args(["run", "m.yaml", "--event-loop", "asyncio"]).event_loop == "asyncio"
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["run", "m.yaml", "--event-loop", "tokio"])
    assert exc.value.code == 2
    assert "--event-loop" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["uvloop", "asyncio"])
def test_beam_delivery_runs_on_the_chosen_loop(name):
    consumer = ConsumerServer(accept()).start()
    try:
        plan = plan_from_yaml(broker_yaml() + trigger_yaml("t", consumer.url))
        deliver = _Deliver(plan.brokers[0], DeliverySettings(concurrency=4, timeout=5.0, http_client="pyreqwest",
                                                              event_loop=name))
        deliver.setup()
        try:
            assert isinstance(deliver.loop, uvloop.Loop) is (name == "uvloop")
        finally:
            deliver.teardown()
        records = [RawRecord.structured(json.dumps({"specversion": "1.0", "id": f"e{n}", "source": "/s",
                                                    "type": "t"}), f"test:{n}") for n in range(3)]
        summary = run_beam_direct(plan.brokers[0], records, DeliverySettings(event_loop=name))
        assert summary["triggers"]["ns/t"]["delivered"] == 3
        assert Counter(r.headers.get("ce-id") for r in consumer.requests) == Counter({"e0": 1, "e1": 1, "e2": 1})
    finally:
        consumer.stop()
