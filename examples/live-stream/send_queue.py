"""Write raw interaction records to the platform's Kafka topic, as its streaming backend
would: plain JSON values keyed by room, with a ``kind`` header (``heart`` or ``poll``).
The demo's KafkaSource (``sources/platform-queue.yaml``) turns them into CloudEvents.

    python examples/live-stream/send_queue.py 127.0.0.1:19092 live-platform-interactions 40

Creates the topic (4 partitions) if it is missing; prints how many records of each kind
were written once Kafka acknowledged them all.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(bootstrap: str, topic: str, count: int) -> None:
    from kafka import KafkaProducer

    from eventing.kafka_topics import ensure_topics

    ensure_topics(bootstrap, [topic], 4)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    kinds: Counter = Counter()
    for n in range(count):
        kind = "heart" if n % 4 else "poll"
        room = f"room-{n % 3 + 1}"
        value = {"room": room, "user": f"u{n % 17}", "kind": kind, "n": n}
        producer.send(topic, key=room.encode(), value=json.dumps(value).encode(), headers=[("kind", kind.encode())])
        kinds[kind] += 1
    producer.flush()
    producer.close()
    print("queue records written: " + ", ".join(f"{n} x {kind}" for kind, n in sorted(kinds.items())))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 40)
