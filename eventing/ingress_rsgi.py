"""The ingress served by granian (RSGI): the same requests as :class:`eventing.ingress.Ingress`
answers on aiohttp, with HTTP parsing and socket writes done by granian's Rust threads
outside the GIL, so the event loop's thread runs only the ingress's own work (decode,
encode, produce). Measured side by side with the same client and the same request logic
(``bench/ingress.py``, README "Ingress"): 1.5-2.6x the requests/s of aiohttp's low-level
server, on the 2 cores it shares with Kafka and the load.

What granian does for the ingress: HTTP/1.1 keep-alive, chunked bodies, ``Expect:
100-continue`` (``100 Continue`` is sent when the body is first read, so a request refused
before that never sends its body), ``--workers`` processes on one listening socket. What
the ingress does here: routing, the 1 MiB limit (announced or counted while a chunked body
arrives), every status code and ``Retry-After``, ``/healthz`` and ``/readyz``.

What granian does not do: hand over a header whose value is not visible ASCII (raw UTF-8,
as sdk-go v2 sends a string attribute it does not percent-encode): ``keys()`` lists it,
``get`` and ``items`` leave it out. The ingress refuses such an event (400 naming the
header) rather than store it without that attribute; aiohttp's server reads the value as
UTF-8 instead.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable
from urllib.parse import unquote

from eventing.ingress import ACCEPTED, Answer, Ingress

__all__ = ["RsgiIngress"]

_TEXT = [("content-type", "text/plain; charset=utf-8")]


class RsgiIngress:
    """An RSGI application (``__rsgi__``) around an :class:`Ingress`; ``on_init`` runs once
    the worker's event loop exists (the garbage collector's tuning), ``__rsgi_del__``
    flushes and closes the writer when the worker stops."""

    def __init__(self, ingress: Ingress, on_init: Callable[[], Any] | None = None) -> None:
        self.ingress = ingress
        self.on_init = on_init

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.on_init is not None:
            self.on_init()

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.ingress.writer.close()

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":  # websockets are off
            return
        ingress = self.ingress
        path = scope.path
        topic = ingress.paths.get(path)
        method = scope.method
        if topic is None:
            topic = ingress.route(method, unquote(path) if "%" in path else path)
            if type(topic) is not str:
                return _answer(proto, topic)
        headers = scope.headers
        length = headers.get("content-length")
        if length is not None:
            try:
                length = int(length)
            except ValueError:
                return _answer(proto, ingress._error(400, f"invalid Content-Length: {length!r}"))
        expect = headers.get("expect") if scope.http_version != "1" and scope.http_version != "1.0" else None
        answer = ingress.before_body(method, length, expect)
        if answer is not None:
            return _answer(proto, answer)
        items = headers.items()
        if len(dict(items)) < len(headers.keys()):  # a header granian withheld
            withheld = _withheld(headers.keys(), items)
            if withheld is not None:
                return _answer(proto, ingress._error(
                    400, f"invalid CloudEvent: header {withheld!r}: value is not visible ASCII; percent-encode it "
                    "(CloudEvents HTTP binding, 3.1.3.2 HTTP Header Values)"))
        if length is not None:  # the usual case: granian reads exactly the announced bytes
            body = await proto()
        else:  # chunked: counted as it arrives, up to max_body
            chunks = []
            size = 0
            limit = ingress.max_body
            async for chunk in proto:
                size += len(chunk)
                if size > limit:
                    return _answer(proto, ingress.too_large())
                chunks.append(chunk)
            body = b"".join(chunks)
        answer = await ingress.store(topic, _Items(items), body)
        if answer is ACCEPTED:
            proto.response_empty(202, [])
        else:
            _answer(proto, answer)


class _Items:
    """The request's headers for ``decode_http`` (which reads only ``items()``), already listed."""

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items

    def items(self) -> list[tuple[str, str]]:
        return self._items


def _withheld(names: list[str], items: list[tuple[str, str]]) -> str | None:
    """The first header of the event (``ce-*``, ``content-type``) in ``names`` with no value in ``items``."""
    given = {name for name, _ in items}
    for name in names:
        if name not in given and (name.startswith("ce-") or name == "content-type"):
            return name
    return None


def _answer(proto: Any, answer: Answer) -> None:
    status, text, headers = answer
    extra = list(headers.items()) if headers else []
    if text is None:
        proto.response_empty(status, extra)
    else:
        proto.response_str(status, _TEXT + extra, text)
