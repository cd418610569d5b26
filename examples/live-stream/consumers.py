"""Sample serverless consumers of the live-streaming demo, on one local HTTP server.

Each path plays one service the triggers point at:
  /moderation   hides spammy comments; replies with a com.live.comment.flagged CloudEvent
  /leaderboard  gift totals per room; answers 503 to the first try of every 7th gift (retried)
  /analytics    counts everything
  /presence     viewers per room
  /vip          VIP alerts; rejects room-99 with 400 (not retried: dead-lettered)
  /notify       moderators' channel (receives the replies of /moderation)
  /dead-letters the deadLetterSink: keeps each event with its knativeerror* extensions
GET /stats returns what each service received, as JSON.

    python examples/live-stream/consumers.py --port 8181
"""
from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections import Counter, defaultdict

from aiohttp import web

from transforms.codec import decode_http, encode_http
from cloudevents.core.v1.event import CloudEvent

SPAM = ("spam", "scam", "free coins")


class Services:
    def __init__(self) -> None:
        self.received: dict[str, list[str]] = defaultdict(list)
        self.attempts: Counter[str] = Counter()
        self.leaderboard: Counter[str] = Counter()
        self.viewers: Counter[str] = Counter()
        self.dead_letters: list[dict] = []

    async def handle(self, request: web.Request) -> web.Response:
        service = request.match_info["service"]
        body = await request.read()
        try:
            event = decode_http(dict(request.headers), body)[0]
        except Exception as exc:  # a consumer must say why it refuses
            return web.Response(status=400, text=f"not a CloudEvent: {exc}")
        self.attempts[f"{service}:{event.get_id()}"] += 1
        data = event.get_data() if isinstance(event.get_data(), dict) else {}
        if service == "leaderboard":
            if int(event.get_id().rsplit("-", 1)[-1]) % 7 == 0 and self.attempts[f"{service}:{event.get_id()}"] == 1:
                return web.Response(status=503, text="leaderboard warming up")
            self.leaderboard[data.get("room", "?")] += int(data.get("coins", 0))
        elif service == "vip" and data.get("room") == "room-99":
            return web.Response(status=400, text="vip alerts are not enabled for room-99")
        elif service == "presence":
            self.viewers[data.get("room", "?")] += 1 if event.get_type().endswith("joined") else -1
        elif service == "dead-letters":
            attrs = event.get_attributes()
            self.dead_letters.append({k: str(v) for k, v in attrs.items() if k.startswith("knativeerror") or k in ("id", "type")})
        self.received[service].append(event.get_id())
        if service == "moderation" and any(word in str(data.get("text", "")).lower() for word in SPAM):
            reply = CloudEvent({
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, event.get_id())), "source": "/services/moderation",
                "type": "com.live.comment.flagged", "datacontenttype": "application/json",
            }, {"comment": event.get_id(), "room": data.get("room"), "reason": "spam"})
            headers, payload = encode_http(reply, "binary")
            return web.Response(status=200, headers=headers, body=payload)
        return web.Response(status=202)

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({
            "received": {k: len(v) for k, v in sorted(self.received.items())},
            "unique": {k: len(set(v)) for k, v in sorted(self.received.items())},
            "leaderboard": dict(self.leaderboard.most_common(5)),
            "viewers": dict(self.viewers),
            "dead_letters": self.dead_letters,
        })


def make_app() -> web.Application:
    services = Services()
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/{service}", services.handle)
    app.router.add_get("/stats", services.stats)
    app.router.add_get("/healthz", lambda request: web.Response(text="ok"))
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8181)
    args = parser.parse_args()
    web.run_app(make_app(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
