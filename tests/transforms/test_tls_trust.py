"""A destination's ``CACerts``: https sinks whose certificate a private CA signed.

Real https consumers (aiohttp with a certificate from ``trustme``'s throwaway CA), each
sender, the plan compiled from Knative YAML as users write it."""
from __future__ import annotations

import asyncio
import json
import ssl
import textwrap
from typing import Any

import pytest
import trustme

from eventing.errors import ManifestError
from pipelines.delivery_settings import DeliverySettings
from tests.consumers import ConsumerServer, accept
from tests.plans import broker_yaml, plan_from_yaml
from transforms.delivery import DeadLettered, Delivered, DeliveryEngine, destination_ca_certs
from transforms.sender import sender_names
from transforms.tls_trust import check_pem, origin, trust_by_origin

from .test_delivery import FakeClock, make_event


def _authority() -> tuple[str, ssl.SSLContext]:
    """(the CA's PEM, a server context with a certificate it signed for 127.0.0.1)."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    return ca.cert_pem.bytes().decode("ascii"), server


def _pem_yaml(pem: str, indent: int) -> str:
    return "|\n" + textwrap.indent(pem, " " * indent)


def _plan(url: str, ca_pem: str | None, dead_letter: tuple[str, str | None] | None = None) -> Any:
    subscriber = f"      uri: {url}\n"
    if ca_pem is not None:
        subscriber += f"      CACerts: {_pem_yaml(ca_pem, 8)}"
    delivery = ""
    if dead_letter is not None:
        delivery = f"    deadLetterSink:\n      uri: {dead_letter[0]}\n"
        if dead_letter[1] is not None:
            delivery += f"      CACerts: {_pem_yaml(dead_letter[1], 8)}"
        delivery = "  delivery:\n" + delivery
    return plan_from_yaml(_trigger_yaml("subscriber:\n" + subscriber + delivery))


def _trigger_yaml(rest: str) -> str:
    """Broker ns/b and Trigger ns/t whose spec goes on with ``rest`` (indented by two)."""
    return broker_yaml() + textwrap.dedent("""\
        ---
        apiVersion: eventing.knative.dev/v1
        kind: Trigger
        metadata: {name: t, namespace: ns}
        spec:
          broker: b
        """) + "  " + rest


async def _settle(plan: Any, http_client: str) -> list[Any]:
    triggers = {t.key: t for t in plan.triggers()}
    clock = FakeClock()
    engine: DeliveryEngine = DeliverySettings(http_client=http_client, timeout=10.0).engine(triggers)
    async with engine:
        return await engine.run_until_settled(engine.task("ns/t", make_event()), clock.sleep)


@pytest.fixture(params=sender_names())
def http_client(request: pytest.FixtureRequest) -> str:
    return request.param


def test_a_sink_signed_by_the_destinations_cacerts_gets_the_event(http_client):
    ca_pem, server = _authority()

    async def main() -> None:
        async with ConsumerServer(accept(200), ssl=server) as consumer:
            assert consumer.url.startswith("https://")
            outcomes = await _settle(_plan(consumer.url, ca_pem), http_client)
            assert [type(o) for o in outcomes] == [Delivered]
            assert [r.event.get_id() for r in consumer.requests] == ["e-1"]

    asyncio.run(main())


def test_without_cacerts_the_private_ca_is_not_trusted(http_client):
    _, server = _authority()

    async def main() -> None:
        async with ConsumerServer(accept(200), ssl=server) as consumer:
            outcomes = await _settle(_plan(consumer.url, None), http_client)
            assert [type(o) for o in outcomes] == [DeadLettered]
            assert "certificate" in outcomes[0].reason.lower(), outcomes[0].reason
            assert consumer.requests == []

    asyncio.run(main())


def test_trust_is_per_destination_origin_not_for_every_sink(http_client):
    """Subscriber and dead-letter sink are signed by the same private CA, on two origins
    (ports). The subscriber's CACerts do not make that CA trusted for the sink; the sink's
    own CACerts do."""
    ca = trustme.CA()
    servers = []
    for _ in range(2):
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(server)
        servers.append(server)
    pem = ca.cert_pem.bytes().decode("ascii")

    async def main() -> None:
        async with ConsumerServer(accept(400), ssl=servers[0]) as subscriber, \
                ConsumerServer(accept(202), ssl=servers[1]) as sink:
            untrusted = await _settle(_plan(subscriber.url, pem, (sink.url, None)), http_client)
            assert len(subscriber.requests) == 1 and sink.requests == []  # the subscriber's CA works for it only
            stuck = untrusted[-1]  # the dead letter is kept (never dropped), its sink refused
            assert type(stuck).__name__ == "Retrying" and stuck.stuck and "certificate" in stuck.error.lower()
            trusted = await _settle(_plan(subscriber.url, pem, (sink.url, pem)), http_client)
            assert [type(o).__name__ for o in trusted] == ["DeadLettered", "DeadLetterStored"]
            assert len(sink.requests) == 1 and sink.requests[0].event.get_id() == "e-1"

    asyncio.run(main())


def test_cacerts_of_one_origin_are_joined_and_http_destinations_need_none():
    a, _ = _authority()
    b, _ = _authority()
    trust = trust_by_origin([("https://Sink.example:443/a", a), ("https://sink.example/b", b),
                             ("https://sink.example/c", a), ("http://plain.example/", a)])
    assert list(trust) == ["https://sink.example:443"]
    assert trust["https://sink.example:443"].count("BEGIN CERTIFICATE") == 2
    assert origin("https://h:8443/x?y") == "https://h:8443" and origin("http://H/") == "http://h:80"


def test_the_plan_carries_cacerts_to_the_engine_and_knflow_plan_shows_them():
    pem, _ = _authority()
    plan = _plan("https://sink.example/orders", pem, ("https://dls.example/", pem))
    trigger = plan.triggers()[0]
    assert trigger.subscriber.ca_certs == pem
    assert trigger.to_dict()["subscriber"]["CACerts"] == "1 PEM certificate"
    assert set(destination_ca_certs({trigger.key: trigger})) == {"https://sink.example:443", "https://dls.example:443"}
    assert not [note for note in plan.unused if "CACerts" in note]  # used now, no longer listed


@pytest.mark.parametrize("value, message", [
    ("not a certificate", "holds no PEM certificate"),
    ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "is not a valid PEM certificate"),
    (42, "must be a string of PEM certificates"),
])
def test_a_bad_cacerts_is_an_error_naming_the_trigger_and_field(value, message):
    assert message in check_pem(value)
    text = _trigger_yaml(f'subscriber: {{uri: "https://sink.example/", CACerts: {json.dumps(value)}}}\n')
    with pytest.raises(ManifestError) as failure:
        plan_from_yaml(text, "m.yaml")
    assert "m.yaml" in str(failure.value) and "Trigger/" in str(failure.value)
    assert "spec.subscriber.CACerts" in str(failure.value) and message in str(failure.value)


def test_a_destination_uri_with_an_invalid_port_is_an_error_naming_it():
    with pytest.raises(ManifestError, match=r"Trigger/t: spec.subscriber.uri: has an invalid port"):
        plan_from_yaml(_trigger_yaml('subscriber: {uri: "https://sink.example:99999/"}\n'), "m.yaml")
