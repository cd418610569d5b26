"""The benchmarks' HTTP consumer: a minimal HTTP/1.1 keep-alive server (asyncio protocol on
uvloop) in its own process, so the measured side is the client.

``Consumer(latencies_ms, cpu)`` starts one server per latency (answering 200 with an
empty body after that many ms) and is the handle: ``ports`` (latency -> port), ``counts()``
(requests answered so far, per request path), ``arrivals()`` (when the first request for
each event whose ``ce-id`` starts with ``probe-`` arrived, in ``time.time()`` seconds) and
``stop()``.
"""
from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import time
from collections import Counter
from typing import Any

_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class _ConsumerProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive: read head + Content-Length body, answer 200 after ``delay``,
    count the request under its path."""

    def __init__(self, delay: float, counts: Counter, arrivals: dict[bytes, float]) -> None:
        self.delay = delay
        self.counts = counts
        self.arrivals = arrivals
        self.buf = bytearray()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def _write(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(_RESPONSE)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            length = 0
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17: stop if stop >= 0 else len(head)])
            total = end + 4 + length
            if len(buf) < total:
                return
            del buf[:total]
            self.counts[head.split(b" ", 2)[1]] += 1
            probe = head.find(b"\r\nce-id: probe-")
            if probe >= 0:
                stop = head.find(b"\r\n", probe + 2)
                self.arrivals.setdefault(head[probe + 9: stop if stop >= 0 else len(head)], time.time())
            if self.delay:
                asyncio.get_running_loop().call_later(self.delay, self._write)
            else:
                self.transport.write(_RESPONSE)


def _serve(latencies_ms: list[int], conn: Any, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    import uvloop

    counts: Counter = Counter()
    arrivals: dict[bytes, float] = {}

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        ports = {}
        for ms in latencies_ms:
            server = await loop.create_server(lambda ms=ms: _ConsumerProtocol(ms / 1000.0, counts, arrivals), "127.0.0.1", 0,
                                              backlog=1024)
            ports[ms] = server.sockets[0].getsockname()[1]
        conn.send(ports)
        while (ask := await loop.run_in_executor(None, conn.recv)) in ("counts", "arrivals"):  # else: stop
            if ask == "counts":
                conn.send({path.decode(): n for path, n in counts.items()})
            else:
                conn.send({event_id.decode(): at for event_id, at in arrivals.items()})

    uvloop.run(serve())


class Consumer:
    def __init__(self, latencies_ms: list[int], cpu: int | None = None) -> None:
        self._conn, child = mp.Pipe()
        self._process = mp.Process(target=_serve, args=(latencies_ms, child, cpu), daemon=True)
        self._process.start()
        if not self._conn.poll(30):
            self._process.terminate()
            raise SystemExit(f"the consumer process did not start (exit code {self._process.exitcode}); "
                             "run this with the project's environment (.venv/bin/python), which has uvloop")
        self.ports: dict[int, int] = self._conn.recv()

    def counts(self) -> dict[str, int]:
        self._conn.send("counts")
        return self._conn.recv()

    def arrivals(self) -> dict[str, float]:
        self._conn.send("arrivals")
        return self._conn.recv()

    def stop(self) -> None:
        self._conn.send("stop")
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.terminate()
