"""POST the sample interaction stream to the broker ingress, as producers would.

    python examples/live-stream/send_events.py http://127.0.0.1:8180/streaming/live events.jsonl

Each line is one structured-mode CloudEvent; lines the ingress refuses (the two broken
ones at the end) are reported with the ingress's reason.
"""
from __future__ import annotations

import asyncio
import sys
from collections import Counter

import aiohttp


async def send(url: str, path: str, concurrency: int = 32) -> Counter:
    lines = [line for line in open(path, "rb").read().splitlines() if line.strip()]
    statuses: Counter = Counter()
    queue: asyncio.Queue = asyncio.Queue()
    for number, line in enumerate(lines, 1):
        queue.put_nowait((number, line))

    async with aiohttp.ClientSession() as session:
        async def worker() -> None:
            while not queue.empty():
                number, line = queue.get_nowait()
                async with session.post(url, data=line, headers={"content-type": "application/cloudevents+json"}) as r:
                    statuses[r.status] += 1
                    if r.status != 202:
                        print(f"  line {number}: {r.status} {(await r.text()).strip()}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


if __name__ == "__main__":
    result = asyncio.run(send(sys.argv[1], sys.argv[2]))
    print("ingress answers: " + ", ".join(f"{count} x {status}" for status, count in sorted(result.items())))
