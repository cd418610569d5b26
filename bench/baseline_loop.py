"""The loop a user would write instead of knflow, for ``bench/pipeline.py`` to compare with.

One kafka-python consumer (``check_crcs=False``), knflow's own codec and router, and
pyreqwest posts on uvloop gathered per poll batch: no engine, no retries, no ordering, no
outcome records, no checkpoints. It reads ``--topic`` from the earliest offset under its
own consumer group and posts every routed event to its subscriber, until SIGTERM.

Usage: ``python bench/baseline_loop.py --bootstrap HOST:PORT --topic T --manifests DIR
--ref-url NAME=URL ...``
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


async def run(args: argparse.Namespace) -> None:
    from kafka import KafkaConsumer

    from eventing.compiler import load_plan
    from pipelines.options import parse_ref_urls
    from transforms.codec import decode_kafka, encode_http
    from transforms.router import Router
    from transforms.sender import make_sender

    plan = load_plan(args.manifests)
    ref_urls = parse_ref_urls(args.ref_url)
    router = Router(plan.brokers[0])
    urls = {t.key: t.subscriber.url(ref_urls) for t in plan.brokers[0].triggers}
    sender = make_sender("pyreqwest", limit=256)
    await sender.open()
    consumer = KafkaConsumer(args.topic, bootstrap_servers=args.bootstrap, group_id=f"baseline-{uuid.uuid4().hex[:8]}",
                             auto_offset_reset="earliest", check_crcs=False, max_poll_records=1000,
                             enable_auto_commit=False)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        polled = await loop.run_in_executor(None, lambda: consumer.poll(timeout_ms=100))
        posts = []
        for records in polled.values():
            for record in records:
                try:
                    event = decode_kafka(record.headers, record.value)
                except Exception:
                    continue
                matches = router.route(event)
                if matches:
                    headers, body = encode_http(event)
                    posts += [sender.post(urls[t.key], headers, body, 30.0) for t in matches]
        if posts:
            await asyncio.gather(*posts, return_exceptions=True)
    consumer.close()
    await sender.close()


def main() -> None:
    import uvloop

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--manifests", action="append", required=True)
    parser.add_argument("--ref-url", action="append", default=[])
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
