#!/usr/bin/env bash
# The live-streaming demo on Beam's DirectRunner: sample consumers on 127.0.0.1, the
# example manifests, and the sample interaction stream; prints the per-trigger summary
# and what each consumer received, then stops everything it started.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PORT="${DEMO_PORT:-8181}"
PY=.venv/bin/python
RUN_DIR=.run/demo
mkdir -p "$RUN_DIR"

$PY examples/live-stream/consumers.py --port "$PORT" >"$RUN_DIR/consumers.log" 2>&1 &
CONSUMERS=$!
trap 'kill $CONSUMERS 2>/dev/null; wait $CONSUMERS 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done

URL="http://127.0.0.1:$PORT"
REFS=()
for svc in moderation leaderboard analytics presence vip notify dead-letters; do
  REFS+=(--ref-url "$svc=$URL/$svc")
done

echo "== knflow validate"
.venv/bin/knflow validate examples/live-stream
echo "== knflow run --runner beam-direct (events: examples/live-stream/events.jsonl)"
.venv/bin/knflow run examples/live-stream --runner beam-direct \
  --events-file examples/live-stream/events.jsonl "${REFS[@]}" \
  --dead-letter-file "$RUN_DIR/dead-letters.jsonl"
echo "== what the consumers received"
curl -fs "$URL/stats" | $PY -c 'import json,sys; s=json.load(sys.stdin); print(json.dumps({k: s[k] for k in ("received", "leaderboard", "viewers")}, indent=1)); print("dead letters at the deadLetterSink:", len(s["dead_letters"]))'
echo "== job dead-letter output: $RUN_DIR/dead-letters.jsonl ($(wc -l <"$RUN_DIR/dead-letters.jsonl") record(s): malformed input lines)"
