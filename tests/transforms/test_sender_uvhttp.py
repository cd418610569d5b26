"""``UvhttpSender`` over real sockets: the delivery engine's scenarios run it through
``tests/transforms/test_delivery.py`` (parametrized over every sender); here are the HTTP
edge cases, against a tiny asyncio server whose every byte the test scripts, on both the
standard loop and uvloop.
"""
from __future__ import annotations

import asyncio
import re
import socket
from typing import Any, Awaitable, Callable

import pytest

from tests.consumers import ConsumerServer, accept, closed_port_url, reply_event
from transforms.sender import Response, SendError, make_sender, sender_names
from transforms.sender_uvhttp import UvhttpSender

HEADERS = {"ce-id": "e-1", "ce-type": "t", "content-type": "application/json"}


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Any], Any]:
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.run
    return asyncio.run


class Request:
    def __init__(self, line: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.line = line
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One request off the connection, or None at its end."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    line, *rest = head[:-4].decode().split("\r\n")
    headers = [tuple(part.strip() for part in h.split(":", 1)) for h in rest]
    req = Request(line, headers, b"")  # type: ignore[arg-type]
    req.body = await reader.readexactly(int(req.header("content-length") or 0))
    return req


Script = Callable[[int, asyncio.StreamReader, asyncio.StreamWriter, "RawServer"], Awaitable[None]]


class RawServer:
    """A server whose connections run ``script(number, reader, writer, server)``; it keeps
    the requests read (through ``server.read``) and counts connections."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[Request] = []
        self.closed = 0  # connections whose client end was seen closing
        self.port = 0
        self._server: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def read(self, reader: asyncio.StreamReader) -> Request | None:
        req = await read_request(reader)
        if req is not None:
            self.requests.append(req)
        return req

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await self.script(self.connections, reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def __aenter__(self) -> "RawServer":
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def serve(*responses: bytes, close_after: bool = False) -> Script:
    """Answer each request of a connection with the next of ``responses`` (the last repeats)."""

    async def script(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     server: RawServer) -> None:
        for i in range(1000):
            if await server.read(reader) is None:
                server.closed += 1
                return
            writer.write(responses[min(i, len(responses) - 1)])
            await writer.drain()
            if close_after:
                return

    return script


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def with_sender(body: Callable[[UvhttpSender], Awaitable[Any]], **options: Any) -> Any:
    sender = UvhttpSender(**options)
    await sender.open()
    try:
        return await body(sender)
    finally:
        await sender.close()


def test_is_registered_and_is_the_sender_protocol() -> None:
    assert "uvhttp" in sender_names()
    assert isinstance(make_sender("uvhttp"), UvhttpSender)


def test_request_on_the_wire_and_keep_alive(run: Any) -> None:
    async def main() -> None:
        async with RawServer(serve(OK)) as server:
            async def go(sender: UvhttpSender) -> None:
                url = f"http://127.0.0.1:{server.port}/a/b?x=1&y=%20z"
                for i in range(3):
                    resp = await sender.post(url, {**HEADERS, "ce-id": f"e-{i}"}, b'{"n":1}', 5.0)
                    assert resp == Response(200, {"content-length": "2"}, b"ok")
            await with_sender(go)
        assert server.connections == 1 and len(server.requests) == 3
        req = server.requests[0]
        assert req.line == "POST /a/b?x=1&y=%20z HTTP/1.1"
        assert req.headers == [("Host", f"127.0.0.1:{server.port}"), ("ce-id", "e-0"), ("ce-type", "t"),
                               ("content-type", "application/json"), ("Content-Length", "7")]
        assert req.body == b'{"n":1}'
        assert [r.header("ce-id") for r in server.requests] == ["e-0", "e-1", "e-2"]

    run(main())


def test_chunked_response_headers_lower_cased_and_repeated_ones_joined(run: Any) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Tag: a\r\nCE-Id: r-1\r\nx-tag: b\r\n\r\n"
               b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: t\r\n\r\n")

    async def main() -> None:
        async with RawServer(serve(chunked)) as server:
            async def go(sender: UvhttpSender) -> None:
                for _ in range(2):
                    resp = await sender.post(server.url, HEADERS, b"", 5.0)
                    assert resp.status == 200 and resp.body == b"hello world"
                    assert resp.headers == {"transfer-encoding": "chunked", "x-tag": "a, b", "ce-id": "r-1"}
            await with_sender(go)
        assert server.connections == 1  # kept alive after a chunked body

    run(main())


def test_response_split_across_many_writes(run: Any) -> None:
    body = bytes(range(256)) * 8
    response = b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\nX-A: 1\r\n\r\n" % len(body) + body

    async def script(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     server: RawServer) -> None:
        while await server.read(reader) is not None:
            pieces = [response[i:i + 1] for i in range(60)] + [response[i:i + 97] for i in range(60, len(response), 97)]
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.0005)

    async def main() -> None:
        async with RawServer(script) as server:
            async def go(sender: UvhttpSender) -> None:
                for _ in range(2):
                    resp = await sender.post(server.url, HEADERS, b"x", 10.0)
                    assert resp == Response(201, {"content-length": str(len(body)), "x-a": "1"}, body)
            await with_sender(go)
        assert server.connections == 1

    run(main())


def test_connection_close_and_http_1_0_close_after_the_body(run: Any) -> None:
    close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na"
    until_eof = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nread until the end"

    async def main() -> None:
        async with RawServer(serve(close)) as s1, RawServer(serve(until_eof, close_after=True)) as s2:
            async def go(sender: UvhttpSender) -> None:
                for _ in range(3):
                    assert (await sender.post(s1.url, HEADERS, b"", 5.0)).body == b"a"
                    resp = await sender.post(s2.url, HEADERS, b"", 5.0)
                    assert resp.status == 200 and resp.body == b"read until the end"
            await with_sender(go)
        assert s1.connections == 3 and len(s1.requests) == 3
        assert s2.connections == 3 and len(s2.requests) == 3

    run(main())


def test_no_body_statuses_keep_the_connection(run: Any) -> None:
    no_content = b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"
    not_modified = b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"
    early_hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK

    async def main() -> None:
        async with RawServer(serve(no_content, not_modified, early_hints)) as server:
            async def go(sender: UvhttpSender) -> list[Response]:
                return [await sender.post(server.url, HEADERS, b"", 5.0) for _ in range(3)]
            got = await with_sender(go)
        assert got == [Response(204, {"x-a": "1"}, b""), Response(304, {"etag": '"x"'}, b""),
                       Response(200, {"content-length": "2"}, b"ok")]
        assert server.connections == 1

    run(main())


def test_redirect_is_a_response_not_followed(run: Any) -> None:
    found = b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"

    async def main() -> None:
        async with RawServer(serve(found)) as server:
            resp = await with_sender(lambda s: s.post(server.url, HEADERS, b"", 5.0))
        assert resp == Response(302, {"location": "/elsewhere", "content-length": "0"}, b"")
        assert len(server.requests) == 1

    run(main())


def test_reply_cloudevent_with_headers_from_a_consumer(run: Any) -> None:
    async def main() -> None:
        reply = {"id": "r-1", "source": "/checker", "type": "order.checked"}
        async with ConsumerServer(reply_event(reply, b'{"valid":true}')) as consumer:
            resp = await with_sender(lambda s: s.post(consumer.url, HEADERS, b"{}", 5.0))
        assert resp.status == 200 and resp.body == b'{"valid":true}'
        assert resp.headers["ce-id"] == "r-1" and resp.headers["ce-type"] == "order.checked"
        assert all(name == name.lower() for name in resp.headers)
        assert consumer.requests[0].headers["ce-id"] == "e-1"

    run(main())


def test_server_closing_an_idle_pooled_connection(run: Any) -> None:
    async def main() -> None:
        async with RawServer(serve(OK, close_after=True)) as server:
            async def go(sender: UvhttpSender) -> None:
                for _ in range(3):
                    assert (await sender.post(server.url, HEADERS, b"", 5.0)).status == 200
                    await asyncio.sleep(0.05)  # the close is seen while the connection is idle
            await with_sender(go)
        assert server.connections == 3 and len(server.requests) == 3

    run(main())


def test_stale_connection_closed_without_a_byte_is_retried_once_on_a_new_one(run: Any) -> None:
    async def script(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     server: RawServer) -> None:
        await server.read(reader)
        writer.write(OK)
        await writer.drain()
        await server.read(reader)  # the next request on this connection: closed unanswered

    async def main() -> None:
        async with RawServer(script) as server:
            async def go(sender: UvhttpSender) -> None:
                assert (await sender.post(server.url, HEADERS, b"1", 5.0)).status == 200
                assert (await sender.post(server.url, HEADERS, b"2", 5.0)).status == 200
            await with_sender(go)
        # the second request reached the server twice: the price of retrying a POST (see the module doc)
        assert [r.body for r in server.requests] == [b"1", b"2", b"2"]
        assert server.connections == 2

    run(main())


def test_no_retry_on_a_fresh_connection_or_after_part_of_a_response(run: Any) -> None:
    async def unanswered(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         server: RawServer) -> None:
        await server.read(reader)

    async def cut_short(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        server: RawServer) -> None:
        await server.read(reader)
        writer.write(OK)
        await server.read(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()

    async def main() -> None:
        async with RawServer(unanswered) as s1, RawServer(cut_short) as s2:
            async def go(sender: UvhttpSender) -> None:
                with pytest.raises(SendError) as info:
                    await sender.post(s1.url, HEADERS, b"", 5.0)
                assert not info.value.timeout and info.value.url == s1.url
                assert "connection closed before the response" in info.value.message
                assert (await sender.post(s2.url, HEADERS, b"", 5.0)).status == 200
                with pytest.raises(SendError) as info:
                    await sender.post(s2.url, HEADERS, b"", 5.0)
                assert "before the response was complete" in info.value.message
            await with_sender(go)
        assert len(s1.requests) == 1 and s1.connections == 1
        assert len(s2.requests) == 2 and s2.connections == 1

    run(main())


def test_slow_response_times_out_and_the_connection_is_not_reused(run: Any) -> None:
    async def script(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     server: RawServer) -> None:
        while True:
            req = await server.read(reader)
            if req is None:
                server.closed += 1
                return
            if req.body == b"slow":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")  # the head, then nothing
                await writer.drain()
                await asyncio.sleep(5)
            writer.write(OK)
            await writer.drain()

    async def main() -> None:
        async with RawServer(script) as server:
            async def go(sender: UvhttpSender) -> None:
                loop = asyncio.get_running_loop()
                assert (await sender.post(server.url, HEADERS, b"fast", 5.0)).status == 200
                start = loop.time()
                with pytest.raises(SendError) as info:
                    await sender.post(server.url, HEADERS, b"slow", 0.2)
                assert 0.15 < loop.time() - start < 1.5
                assert info.value.timeout and info.value.message == "timed out after 0.2s"
                assert (await sender.post(server.url, HEADERS, b"fast", 5.0)).status == 200
            await with_sender(go)
            await asyncio.sleep(0.05)
        assert server.connections == 2 and server.closed >= 0
        assert [r.body for r in server.requests] == [b"fast", b"slow", b"fast"]

    run(main())


def test_malformed_response_is_a_send_error(run: Any) -> None:
    async def main() -> None:
        async with RawServer(serve(b"HTTP/1.1 2x0 what\r\n\r\n")) as server:
            with pytest.raises(SendError) as info:
                await with_sender(lambda s: s.post(server.url, HEADERS, b"", 5.0))
        assert info.value.message.startswith("malformed response")

    run(main())


def test_connection_refused_names_url_and_cause(run: Any) -> None:
    async def main() -> None:
        url = closed_port_url()
        with pytest.raises(SendError) as info:
            await with_sender(lambda s: s.post(url, HEADERS, b"", 5.0))
        assert info.value.url == url and not info.value.timeout
        assert info.value.message.startswith("connection error: ConnectionRefusedError")

    run(main())


@pytest.mark.parametrize("headers, named", [
    ({"ce-id": "e-1\r\nX-Injected: 1"}, "'ce-id'"),
    ({"ce-id": "1", "ce-source": "/a\nb"}, "'ce-source'"),
    ({"ce-type": "t\x00"}, "'ce-type'"),
    ({"bad name": "v"}, "'bad name'"),
    ({"x\r\ny": "v"}, "'x\\r\\ny'"),
    ({"Content-Length": "3"}, "'Content-Length'"),
    ({"host": "elsewhere"}, "'host'"),
    ({"ce-n": 1}, "'ce-n'"),
])
def test_bad_header_is_a_value_error_naming_it_and_nothing_is_sent(
        run: Any, headers: dict[str, Any], named: str) -> None:
    async def main() -> None:
        async with RawServer(serve(OK)) as server:
            async def go(sender: UvhttpSender) -> None:
                with pytest.raises(ValueError, match=re.escape(named)):
                    await sender.post(server.url, headers, b"", 5.0)
                assert (await sender.post(server.url, {"ce-ok": "1"}, b"", 5.0)).status == 200
            await with_sender(go)
        assert len(server.requests) == 1

    run(main())


def test_bad_urls_are_send_errors(run: Any) -> None:
    async def main() -> None:
        for url in ("ftp://x/", "http:///nohost", "http://[::1/"):
            with pytest.raises(SendError) as info:
                await with_sender(lambda s: s.post(url, HEADERS, b"", 5.0))
            assert info.value.url == url

    run(main())


def test_pool_limit_queues_callers_first_come_first_served(run: Any) -> None:
    async def script(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     server: RawServer) -> None:
        while await server.read(reader) is not None:
            server.in_flight = getattr(server, "in_flight", 0) + 1
            server.most = max(getattr(server, "most", 0), server.in_flight)
            await asyncio.sleep(0.02)
            server.in_flight -= 1
            writer.write(OK)
            await writer.drain()
        server.closed += 1

    async def main() -> None:
        async with RawServer(script) as one, RawServer(script) as two:
            async def go(sender: UvhttpSender) -> None:
                posts = [asyncio.ensure_future(sender.post(one.url, {"ce-id": str(i)}, b"", 5.0)) for i in range(6)]
                await asyncio.sleep(0)
                results = await asyncio.gather(*posts)
                assert [r.status for r in results] == [200] * 6
                # at the limit, a caller for another host takes the slot of an idle connection
                assert (await sender.post(two.url, HEADERS, b"", 5.0)).status == 200
            await with_sender(go, limit=1)
            await asyncio.sleep(0.05)
        assert one.connections == 1 and one.most == 1 and one.closed == 1
        assert [r.header("ce-id") for r in one.requests] == [str(i) for i in range(6)]
        assert two.connections == 1

    run(main())


def test_limit_bounds_connections_with_many_callers(run: Any) -> None:
    async def main() -> None:
        async with ConsumerServer(accept()) as consumer:
            async def go(sender: UvhttpSender) -> None:
                results = await asyncio.gather(*(sender.post(consumer.url, HEADERS, b"{}", 5.0) for _ in range(50)))
                assert {r.status for r in results} == {200}
                assert sender._count <= 3  # noqa: SLF001
            await with_sender(go, limit=3)
        assert len(consumer.requests) == 50 and consumer.max_in_flight <= 3

    run(main())


def test_cancelled_request_does_not_leave_its_connection_in_the_pool(run: Any) -> None:
    async def script(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     server: RawServer) -> None:
        while (req := await server.read(reader)) is not None:
            if req.body == b"hang":
                await asyncio.sleep(5)
            writer.write(OK)
            await writer.drain()

    async def main() -> None:
        async with RawServer(script) as server:
            async def go(sender: UvhttpSender) -> None:
                task = asyncio.ensure_future(sender.post(server.url, HEADERS, b"hang", 5.0))
                await asyncio.sleep(0.1)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert (await sender.post(server.url, HEADERS, b"ok", 5.0)).body == b"ok"
                assert sender._count == 1  # noqa: SLF001
            await with_sender(go, limit=1)
        assert server.connections == 2

    run(main())


def test_idle_connections_close_after_keepalive_timeout(run: Any) -> None:
    async def main() -> None:
        async with RawServer(serve(OK)) as server:
            async def go(sender: UvhttpSender) -> None:
                assert (await sender.post(server.url, HEADERS, b"", 5.0)).status == 200
                await asyncio.sleep(0.4)
                assert server.closed == 1
                assert (await sender.post(server.url, HEADERS, b"", 5.0)).status == 200
            await with_sender(go, keepalive_timeout=0.1)
        assert server.connections == 2

    run(main())


def test_https_is_delegated_to_pyreqwest(run: Any) -> None:
    pytest.importorskip("pyreqwest")

    async def main() -> None:
        url = closed_port_url().replace("http://", "https://")

        async def go(sender: UvhttpSender) -> None:
            with pytest.raises(SendError) as info:
                await sender.post(url, HEADERS, b"", 5.0)
            assert info.value.url == url and "ConnectError" in info.value.message
            assert sender._fallback is not None  # noqa: SLF001
        await with_sender(go)

    run(main())
