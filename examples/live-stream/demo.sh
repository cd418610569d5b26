#!/usr/bin/env bash
# The live-streaming demo on the real path: a local Kafka (KRaft), the broker ingress,
# the sample consumers, and the knflow job on Flink's embedded mini-cluster. The sample
# interaction stream is POSTed to the ingress, and raw records of the platform's own
# queue (a Kafka topic) enter the same broker through a KafkaSource (sources/); the job
# routes and delivers both; the per-trigger summary and what each consumer received are
# printed; everything started here is stopped at the end (also on failure or Ctrl-C).
#
#   examples/live-stream/demo.sh            (make demo runs setup first)
#   DEMO_RUNNER=beam-direct examples/live-stream/demo.sh   the DirectRunner variant, no Kafka
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY=.venv/bin/python
KNFLOW=.venv/bin/knflow
RUN_DIR=.run/demo
CONSUMER_PORT="${DEMO_CONSUMER_PORT:-8181}"
INGRESS_PORT="${DEMO_INGRESS_PORT:-8180}"
export KNFLOW_KAFKA_PORT="${DEMO_KAFKA_PORT:-19092}"
export KNFLOW_KAFKA_DIR="$ROOT/$RUN_DIR/kafka"
BOOTSTRAP="127.0.0.1:$KNFLOW_KAFKA_PORT"
EXAMPLE=examples/live-stream
mkdir -p "$RUN_DIR"

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${DEMO_RUNNER:-flink}" = flink ]; then deploy/kafka.sh stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

wait_http() {  # url, seconds
  for _ in $(seq $(( $2 * 5 ))); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "demo: $1 did not come up" >&2; return 1
}

$PY $EXAMPLE/consumers.py --port "$CONSUMER_PORT" >"$RUN_DIR/consumers.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$CONSUMER_PORT/healthz" 10
URL="http://127.0.0.1:$CONSUMER_PORT"
REFS=()
for svc in moderation leaderboard analytics presence vip notify dead-letters; do REFS+=(--ref-url "$svc=$URL/$svc"); done

echo "== knflow validate $EXAMPLE"
$KNFLOW validate $EXAMPLE

if [ "${DEMO_RUNNER:-flink}" = beam-direct ]; then
  echo "== knflow run --runner beam-direct --events-file $EXAMPLE/events.jsonl"
  $KNFLOW run $EXAMPLE --runner beam-direct --events-file $EXAMPLE/events.jsonl "${REFS[@]}" \
    --dead-letter-file "$RUN_DIR/dead-letters.jsonl"
else
  echo "== starting Kafka (KRaft) on $BOOTSTRAP"
  rm -rf "$KNFLOW_KAFKA_DIR"
  deploy/kafka.sh start
  echo "== starting the broker ingress on 127.0.0.1:$INGRESS_PORT"
  $KNFLOW ingress $EXAMPLE --port "$INGRESS_PORT" --bootstrap-servers "$BOOTSTRAP" >"$RUN_DIR/ingress.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$INGRESS_PORT/readyz" 60
  # The KafkaSource's manifest names the demo's Kafka: render it with this run's port.
  mkdir -p "$RUN_DIR/sources"
  sed "s/127.0.0.1:19092/$BOOTSTRAP/" $EXAMPLE/sources/platform-queue.yaml >"$RUN_DIR/sources/platform-queue.yaml"
  echo "== the platform's queue: writing raw records to Kafka topic live-platform-interactions"
  $PY $EXAMPLE/send_queue.py "$BOOTSTRAP" live-platform-interactions 40
  echo "== starting the knflow job on Flink's embedded mini-cluster"
  $KNFLOW run $EXAMPLE "$RUN_DIR/sources" "${REFS[@]}" --bootstrap-servers "$BOOTSTRAP" --job-name demo \
    --checkpoint-interval 5 >"$RUN_DIR/job.log" 2>&1 &
  JOB=$!
  PIDS+=($JOB)
  for _ in $(seq 300); do grep -q "running on the embedded" "$RUN_DIR/job.log" && break; sleep 0.5; done
  grep "running on the embedded" "$RUN_DIR/job.log" || { tail -30 "$RUN_DIR/job.log"; exit 1; }
  echo "== POSTing $EXAMPLE/events.jsonl to http://127.0.0.1:$INGRESS_PORT/streaming/live"
  $PY $EXAMPLE/send_events.py "http://127.0.0.1:$INGRESS_PORT/streaming/live" $EXAMPLE/events.jsonl
  echo "== waiting for deliveries to settle"
  last=""; stable=0
  for _ in $(seq 240); do
    now="$(curl -fs "$URL/stats" | $PY -c 'import json,sys; print(json.load(sys.stdin)["received"])')"
    if [ "$now" = "$last" ] && [ "$now" != "{}" ]; then stable=$((stable + 1)); else stable=0; fi
    [ $stable -ge 6 ] && break
    last="$now"; sleep 0.5
  done
  echo "== stopping the job (summary from its outcome records)"
  kill -INT $JOB
  wait $JOB || true
  sed -n '/^Broker /,$p' "$RUN_DIR/job.log"
fi

echo "== what the consumers received"
curl -fs "$URL/stats" | $PY -c 'import json,sys; s=json.load(sys.stdin); print(json.dumps({k: s[k] for k in ("received", "leaderboard", "viewers")}, indent=1)); print("dead letters at the deadLetterSink:", len(s["dead_letters"]))'
