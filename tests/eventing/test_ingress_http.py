"""The ingress's HTTP surface on both servers it runs on, over a REAL Kafka: granian as
``knflow ingress`` serves it (RSGI, ``eventing.ingress_rsgi``; the CLI in a subprocess) and
aiohttp's low-level server (``Ingress.server``): chunked bodies, ``Expect: 100-continue``,
the 1 MiB limit (announced or chunked), every status code and the paths that are not a
broker's."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
import requests
from aiohttp import web

from eventing.ingress import DEFAULT_MAX_BODY, Ingress, KafkaWriter
from eventing.kafka_topics import ensure_topics
from tests.conftest import REPO, free_port_pair
from tests.eventing.test_ingress import BINARY, AppThread, consume
from tests.plans import broker_yaml, plan_from_yaml
from tests.processes import stop

pytestmark = pytest.mark.kafka


class ServerThread(AppThread):
    """``Ingress.server()`` on 127.0.0.1 (ephemeral port), from a background thread."""

    def __init__(self, ingress: Ingress) -> None:
        super().__init__(make_runner=lambda loop: web.ServerRunner(ingress.server(loop=loop, access_log=None)))
        self.ingress = ingress

    def __enter__(self) -> "ServerThread":
        super().__enter__()
        assert self.ready.is_set()
        return self


class CliProcess:
    """``knflow ingress`` (granian) in a subprocess, on a free port."""

    def __init__(self, manifest, bootstrap: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "ingress", str(manifest), "--port", str(self.port),
             "--bootstrap-servers", bootstrap], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def __enter__(self) -> "CliProcess":
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.process.poll() is not None:
                pytest.fail(self.process.stdout.read())
            try:
                requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5)
                return self
            except requests.RequestException:
                time.sleep(0.2)
        pytest.fail("knflow ingress did not answer /healthz within 90 s")

    def __exit__(self, *exc) -> None:
        assert stop(self.process), "knflow ingress did not stop within 60 s of SIGTERM"


def serving(kind: str, plan, writer_bootstrap: str, tmp_path):
    if kind == "aiohttp":
        return ServerThread(Ingress(plan, KafkaWriter(writer_bootstrap, timeout_s=1.0)))
    manifest = tmp_path / "broker.yaml"
    broker = plan.brokers[0]
    manifest.write_text(broker_yaml(broker.name, broker.namespace))
    return CliProcess(manifest, writer_bootstrap)


@pytest.fixture(scope="module", params=["granian", "aiohttp"])
def served(request, kafka, tmp_path_factory):
    namespace = kafka.unique_topic("ns")
    plan = plan_from_yaml(broker_yaml("live", namespace))
    ensure_topics(kafka.bootstrap, [plan.brokers[0].topic], partitions=2)
    with serving(request.param, plan, kafka.bootstrap, tmp_path_factory.mktemp("ingress")) as server:
        yield server, namespace, plan.brokers[0].topic
    if request.param == "aiohttp":
        server.ingress.writer.close()


def raw_exchange(port: int, head: bytes, body: bytes = b"", *, wait_continue: bool = False) -> tuple[bytes, bytes]:
    """Sends ``head`` (then ``body``, after the interim answer when ``wait_continue``); returns
    (interim answer or b"", final answer's status line and headers)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        interim = b""
        buffer = b""
        if wait_continue:
            while b"\r\n\r\n" not in buffer:
                chunk = sock.recv(65536)
                assert chunk, buffer
                buffer += chunk
            end = buffer.index(b"\r\n\r\n") + 4
            first, buffer = buffer[:end], buffer[end:]
            if first.startswith(b"HTTP/1.1 100"):
                interim = first
                sock.sendall(body)
            else:  # a final answer instead of 100 Continue: the body is not sent
                return b"", first
        else:
            sock.sendall(body)
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, buffer
            buffer += chunk
        return interim, buffer[:buffer.index(b"\r\n\r\n")]


def binary_head(namespace: str, event_id: str, extra: str) -> bytes:
    headers = dict(BINARY, **{"ce-id": event_id})
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"POST /{namespace}/live HTTP/1.1\r\nHost: x\r\n{lines}{extra}\r\n".encode()


def test_binary_structured_and_batched_events_are_stored(served, kafka):
    server, namespace, topic = served
    url = f"http://127.0.0.1:{server.port}/{namespace}/live"
    assert requests.post(url, headers=dict(BINARY, **{"ce-id": "h-1"}), data=b'{"a": 1}', timeout=10).status_code == 202
    doc = {"specversion": "1.0", "id": "h-2", "source": "/x", "type": "t", "data": {"a": 1}}
    r = requests.post(url, data=json.dumps(doc), headers={"content-type": "application/cloudevents+json"}, timeout=10)
    assert r.status_code == 202, r.text
    batch = [dict(doc, id="h-3"), dict(doc, id="h-4")]
    r = requests.post(url + "?from=test", data=json.dumps(batch),  # a query string is no other path
                      headers={"content-type": "application/cloudevents-batch+json"}, timeout=10)
    assert r.status_code == 202, r.text
    ids = [b"h-1", b"h-2", b"h-3", b"h-4"]
    assert set(ids) <= {dict(m.headers).get("ce_id") for m in consume(kafka.bootstrap, topic, 4, ids=ids)}


def test_chunked_body_is_read_whole(served, kafka):
    server, namespace, topic = served
    payload = b'{"text": "' + b"x" * 20_000 + b'"}'
    chunks = iter([payload[:7], payload[7:15_000], payload[15_000:]])
    r = requests.post(f"http://127.0.0.1:{server.port}/{namespace}/live",
                      headers=dict(BINARY, **{"ce-id": "chunked-1"}), data=chunks, timeout=10)
    assert r.status_code == 202, r.text
    [record] = [m for m in consume(kafka.bootstrap, topic, 1, ids=[b"chunked-1"]) if dict(m.headers).get("ce_id") == b"chunked-1"]
    assert record.value == payload


def test_body_over_the_limit_is_413_announced_or_chunked(served):
    server, namespace, _ = served
    url = f"http://127.0.0.1:{server.port}/{namespace}/live"
    big = b"x" * (DEFAULT_MAX_BODY + 1)
    r = requests.post(url, headers=BINARY, data=big, timeout=30)
    assert r.status_code == 413 and "exceeds the limit" in r.text
    r = requests.post(url, headers=BINARY, data=iter([big[:600_000], big[600_000:]]), timeout=30)
    assert r.status_code == 413 and "exceeds the limit" in r.text
    at_limit = b'"' + b"x" * (DEFAULT_MAX_BODY - 2) + b'"'
    assert requests.post(url, headers=dict(BINARY, **{"ce-id": "limit-1"}), data=at_limit, timeout=30).status_code == 202


def test_expect_100_continue(served, kafka):
    server, namespace, topic = served
    body = b'{"n": 1}'
    interim, final = raw_exchange(server.port, binary_head(namespace, "expect-1", f"expect: 100-continue\r\ncontent-length: {len(body)}\r\n"),
                                  body, wait_continue=True)
    assert interim.startswith(b"HTTP/1.1 100") and final.startswith(b"HTTP/1.1 202"), (interim, final)
    assert consume(kafka.bootstrap, topic, 1, ids=[b"expect-1"])
    # over the limit: the final answer at once, the body is never asked for
    interim, final = raw_exchange(server.port, binary_head(namespace, "expect-2", f"expect: 100-continue\r\ncontent-length: {DEFAULT_MAX_BODY + 1}\r\n"),
                                  wait_continue=True)
    assert interim == b"" and final.startswith(b"HTTP/1.1 413"), final
    interim, final = raw_exchange(server.port, binary_head(namespace, "expect-3", "expect: something-else\r\ncontent-length: 2\r\n"),
                                  b"{}", wait_continue=True)
    assert final.startswith(b"HTTP/1.1 417"), final


def test_statuses_of_other_paths_and_methods(served):
    server, namespace, _ = served
    base = f"http://127.0.0.1:{server.port}"
    assert requests.post(f"{base}/nope/live", headers=BINARY, data=b"{}", timeout=10).status_code == 404
    assert requests.post(f"{base}/{namespace}/live/more", headers=BINARY, data=b"{}", timeout=10).status_code == 404
    assert requests.post(f"{base}/", headers=BINARY, data=b"{}", timeout=10).status_code == 404
    got = requests.get(f"{base}/{namespace}/live", timeout=10)
    assert got.status_code == 405 and "POST" in got.headers["Allow"]
    options = requests.options(f"{base}/{namespace}/live", timeout=10)
    assert options.status_code == 200 and "POST" in options.headers["Allow"]
    assert requests.get(f"{base}/healthz", timeout=10).text == "ok\n"
    assert requests.get(f"{base}/readyz", timeout=10).text == "ready\n"
    assert requests.head(f"{base}/readyz", timeout=10).status_code == 200
    assert requests.post(f"{base}/healthz", timeout=10).status_code == 405
    r = requests.post(f"{base}/{namespace}/live", headers={"content-type": "application/json"}, data=b"{}", timeout=10)
    assert r.status_code == 400 and "not a CloudEvent" in r.text


@pytest.mark.parametrize("kind", ["granian", "aiohttp"])
def test_kafka_down_is_503_with_retry_after(kafka, kind, tmp_path):
    plan = plan_from_yaml(broker_yaml("live", "down"))
    with serving(kind, plan, f"127.0.0.1:{free_port_pair()}", tmp_path) as server:
        for _ in range(2):
            started = time.time()
            r = requests.post(f"http://127.0.0.1:{server.port}/down/live", headers=BINARY, data=b"{}", timeout=30)
            assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text
        assert time.time() - started < 5  # at once, not after a producer's timeout
        ready = requests.get(f"http://127.0.0.1:{server.port}/readyz", timeout=30)
        assert ready.status_code == 503 and "Retry-After" in ready.headers
    if kind == "aiohttp":
        server.ingress.writer.close()


def test_attribute_texts_and_payload_are_stored_as_sent(served, kafka):
    """What the fidelity tests check on the aiohttp app, on each server: header texts
    (nanoseconds and an offset, percent-encoding, quoting, extension types) and the payload."""
    server, namespace, topic = served
    nano = "2026-11-29T10:00:20.123456789+05:45"
    payload = b'{ "price": 1.10, "big": 123456789012345678901234567890, "e": "\\u00e9" }'
    headers = {"ce-specversion": "1.0", "ce-id": "fid-h-1", "ce-source": "/rooms/7", "ce-type": "com.live.like",
               "ce-time": nano, "ce-subject": "caf%c3%a9", "ce-boolext": "true", "ce-intext": "-5",
               "ce-uriext": "https://example.com/a?b=c", "ce-quoted": '"a, b"', "content-type": "application/json"}
    r = requests.post(f"http://127.0.0.1:{server.port}/{namespace}/live", headers=headers, data=payload, timeout=10)
    assert r.status_code == 202, r.text
    doc = {"specversion": "1.0", "id": "fid-h-2", "source": "/x", "type": "t", "time": nano, "data": {"a": 1}}
    r = requests.post(f"http://127.0.0.1:{server.port}/{namespace}/live", data=json.dumps(doc),
                      headers={"content-type": "application/cloudevents+json; charset=utf-8"}, timeout=10)
    assert r.status_code == 202, r.text
    records = {dict(m.headers).get("ce_id"): m for m in consume(kafka.bootstrap, topic, 2, ids=[b"fid-h-1", b"fid-h-2"])}
    got = dict(records[b"fid-h-1"].headers)
    assert (got["ce_time"], got["ce_subject"], got["ce_boolext"], got["ce_intext"], got["ce_uriext"], got["ce_quoted"]) == (
        nano.encode(), "café".encode(), b"true", b"-5", b"https://example.com/a?b=c", b"a, b")
    assert records[b"fid-h-1"].value == payload
    assert dict(records[b"fid-h-2"].headers)["ce_time"] == nano.encode()


def test_raw_non_ascii_header_value_is_never_dropped(served, kafka):
    """The HTTP binding wants header values percent-encoded, but the Go SDK (sdk-go v2,
    cloudevents/sdk-go#1331) sends a string attribute's UTF-8 as raw bytes. granian withholds
    a header whose value is not visible ASCII (neither ``get`` nor ``items`` give it): the
    event must then be refused (400 naming the header), never stored without that
    attribute and acknowledged. aiohttp reads the bytes as UTF-8 and stores the text. A
    non-ASCII header that is not the event's (``x-note``) is no reason to refuse it."""
    server, namespace, topic = served
    url = f"http://127.0.0.1:{server.port}/{namespace}/live"
    for event_id, header in (("raw-utf8-1", "ce-subject"), ("raw-utf8-2", "ce-strext"), ("raw-utf8-3", "content-type")):
        value = "text/plain; name=na\u00efve" if header == "content-type" else "na\u00efve"
        headers = dict(BINARY, **{"ce-id": event_id, header: value.encode()})
        r = requests.post(url, headers=headers, data=b'"x"', timeout=10)
        if r.status_code == 202:
            [record] = [m for m in consume(kafka.bootstrap, topic, 1, ids=[event_id.encode()])
                        if dict(m.headers).get("ce_id") == event_id.encode()]
            stored = dict(record.headers).get(header if header == "content-type" else "ce_" + header[3:])
            assert stored == value.encode(), (header, stored)
        else:
            assert r.status_code == 400 and header in r.text, (r.status_code, r.text)
    headers = dict(BINARY, **{"ce-id": "raw-utf8-4", "x-note": "na\u00efve".encode()})
    assert requests.post(url, headers=headers, data=b'"x"', timeout=10).status_code == 202
