"""Generate the sample interaction stream of the live-streaming demo (deterministic).

    python examples/live-stream/make_events.py > examples/live-stream/events.jsonl

Bursty on purpose: a gift storm and a like storm in one room, the way a popular stream
behaves. The last two lines are malformed on purpose: knflow dead-letters them with a
reason instead of stopping.
"""
from __future__ import annotations

import json
import random
import sys
from datetime import datetime, timedelta, timezone

ROOMS = ["room-7", "room-42", "room-99"]
COMMENTS = ["hello!", "great stream", "free coins here: spam.example", "lol", "scam link inside", "gg", "love it"]
GIFTS = [("rose", 10), ("rocket", 500), ("heart", 50), ("castle", 1000), ("star", 120)]


def user(rng: random.Random) -> dict:
    level = rng.choice([1, 3, 8, 15, 31, 45])
    badges = ["vip"] if level >= 30 and rng.random() < 0.7 else rng.choice([[], ["fan"]])
    return {"id": f"u{rng.randrange(1000):03d}", "level": level, "badges": badges}


def events(count: int = 300, seed: int = 7):
    rng = random.Random(seed)
    start = datetime(2026, 11, 28, 20, 0, 0, tzinfo=timezone.utc)
    for n in range(count):
        room = "room-42" if 120 <= n < 180 else rng.choice(ROOMS)  # the burst
        kind = rng.choices(["comment", "gift", "like", "joined", "left"], weights=[4, 3 if 120 <= n < 180 else 1, 3, 2, 1])[0]
        data: dict = {"room": room, "user": user(rng)}
        if kind == "comment":
            data["text"] = rng.choice(COMMENTS)
            type_ = "com.live.comment.posted"
        elif kind == "gift":
            gift, coins = rng.choice(GIFTS)
            data.update(gift=gift, coins=coins)
            type_ = "com.live.gift.sent"
        elif kind == "like":
            data["count"] = rng.choice([1, 5, 20, 80])
            type_ = "com.live.like"
        else:
            type_ = f"com.live.viewer.{kind}"
        yield {
            "specversion": "1.0",
            "id": f"evt-{n:05d}",
            "source": f"/live/rooms/{room}",
            "type": type_,
            "time": (start + timedelta(milliseconds=37 * n)).isoformat().replace("+00:00", "Z"),
            "datacontenttype": "application/json",
            "partitionkey": room,
            "data": data,
        }


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    for event in events(count):
        print(json.dumps(event, separators=(",", ":")))
    print('{"specversion":"1.0","id":"broken-1","source":"/live","data":{}}')  # no type
    print("this line is not JSON")
