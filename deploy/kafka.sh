#!/usr/bin/env bash
# A single-node Kafka 4.x (KRaft, broker+controller in one JVM) on 127.0.0.1 for development
# and tests. Jars come from deploy/.cache/kafka (deploy/fetch-jars.sh, run on demand).
#
#   deploy/kafka.sh start  [--port 9092] [--controller-port P] [--sasl-port P] [--ssl-port P]
#                          [--sasl-ssl-port P] [--dir D]
#   deploy/kafka.sh stop   [--dir D]
#   deploy/kafka.sh status [--dir D]          exit 0 iff the broker is running
#   deploy/kafka.sh logs   [--dir D]          tail of the broker log
#
# Environment (flags win over these):
#   KNFLOW_KAFKA_PORT             client listener port            (default 9092)
#   KNFLOW_KAFKA_CONTROLLER_PORT  KRaft controller listener port  (default port+1)
#   KNFLOW_KAFKA_SASL_PORT        a SASL_PLAINTEXT listener too    (default none): mechanisms
#                                 PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, user "knflow",
#                                 password $KNFLOW_KAFKA_SASL_PASSWORD (default "knflow-secret",
#                                 none of " \ , ]; SCRAM credentials are stored when
#                                 the storage is formatted, on the first start)
#   KNFLOW_KAFKA_SSL_PORT         an SSL (TLS) listener too        (default none), with
#   KNFLOW_KAFKA_SSL_KEYSTORE     a PEM file: the broker's unencrypted PKCS#8 private key and
#                                 its certificate chain
#   KNFLOW_KAFKA_SASL_SSL_PORT    a SASL_SSL listener too (SASL over TLS: the SASL users and
#                                 mechanisms above, the keystore above)
#   KNFLOW_KAFKA_DIR              state dir: config, data, log, pid (default <repo>/.run/kafka)
#   KNFLOW_KAFKA_HEAP             JVM heap flags                  (default "-Xms256m -Xmx512m")
#   KNFLOW_KAFKA_START_TIMEOUT    seconds to wait for readiness   (default 90)
#   KNFLOW_PYTHON                 python with kafka-python, for the readiness metadata probe
#                                 (default <repo>/.venv/bin/python, then python3)
# The storage is formatted on first start and kept across restarts (delete the dir to reset).
set -euo pipefail

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$DEPLOY_DIR/.." && pwd)"
JARS_DIR="$DEPLOY_DIR/.cache/kafka"

usage() { sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; }

cmd="${1:-}"; [[ $# -gt 0 ]] && shift
PORT="${KNFLOW_KAFKA_PORT:-9092}"
CPORT="${KNFLOW_KAFKA_CONTROLLER_PORT:-}"
SASL_PORT="${KNFLOW_KAFKA_SASL_PORT:-}"
SASL_PASSWORD="${KNFLOW_KAFKA_SASL_PASSWORD:-knflow-secret}"
SSL_PORT="${KNFLOW_KAFKA_SSL_PORT:-}"
SSL_KEYSTORE="${KNFLOW_KAFKA_SSL_KEYSTORE:-}"
SASL_SSL_PORT="${KNFLOW_KAFKA_SASL_SSL_PORT:-}"
STATE_DIR="${KNFLOW_KAFKA_DIR:-$REPO_ROOT/.run/kafka}"
HEAP="${KNFLOW_KAFKA_HEAP:--Xms256m -Xmx512m}"
TIMEOUT="${KNFLOW_KAFKA_START_TIMEOUT:-90}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) PORT="$2"; shift 2 ;;
    --port=*) PORT="${1#*=}"; shift ;;
    --controller-port) CPORT="$2"; shift 2 ;;
    --controller-port=*) CPORT="${1#*=}"; shift ;;
    --sasl-port) SASL_PORT="$2"; shift 2 ;;
    --sasl-port=*) SASL_PORT="${1#*=}"; shift ;;
    --ssl-port) SSL_PORT="$2"; shift 2 ;;
    --ssl-port=*) SSL_PORT="${1#*=}"; shift ;;
    --sasl-ssl-port) SASL_SSL_PORT="$2"; shift 2 ;;
    --sasl-ssl-port=*) SASL_SSL_PORT="${1#*=}"; shift ;;
    --dir) STATE_DIR="$2"; shift 2 ;;
    --dir=*) STATE_DIR="${1#*=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "kafka.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
CPORT="${CPORT:-$((PORT + 1))}"
STATE_DIR="$(realpath -m "$STATE_DIR")"   # absolute; created by start only
PID_FILE="$STATE_DIR/kafka.pid"
LOG_FILE="$STATE_DIR/kafka.log"
CONFIG="$STATE_DIR/server.properties"
DATA_DIR="$STATE_DIR/data"

log() { echo "kafka.sh: $*" >&2; }

# pid of our broker if it is alive, else nothing. The command line must name our config,
# so a recycled pid never gets mistaken for (or killed as) the broker.
running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid; pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Read whole, then match: `tr | grep -q` under pipefail fails when grep exits before tr
  # has written everything (SIGPIPE), which a JVM's long command line makes likely.
  local cmd; cmd="$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *"$CONFIG"* ]] || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

find_python() {
  local c
  for c in "${KNFLOW_PYTHON:-}" "$REPO_ROOT/.venv/bin/python" python3; do
    [[ -n "$c" ]] || continue
    command -v "$c" >/dev/null 2>&1 || continue
    "$c" -c 'import kafka' >/dev/null 2>&1 && { echo "$c"; return 0; }
  done
  return 1
}

# A real Metadata round trip (DescribeCluster + Metadata) through kafka-python.
metadata_ok() {
  local py="$1"
  "$py" - "127.0.0.1:$PORT" >/dev/null 2>&1 <<'EOF'
import sys
from kafka import KafkaAdminClient
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1], request_timeout_ms=5000,
                         client_id="knflow-kafka-sh-probe")
try:
    cluster = admin.describe_cluster()
    assert cluster.get("brokers"), cluster
    admin.list_topics()
finally:
    admin.close()
EOF
}

write_config() {
  local listeners="PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT"
  local advertised="PLAINTEXT://127.0.0.1:$PORT"
  if [[ -n "$SASL_PORT" ]]; then
    listeners+=",SASL_PLAINTEXT://127.0.0.1:$SASL_PORT"
    advertised+=",SASL_PLAINTEXT://127.0.0.1:$SASL_PORT"
  fi
  if [[ -n "$SSL_PORT" ]]; then
    listeners+=",SSL://127.0.0.1:$SSL_PORT"
    advertised+=",SSL://127.0.0.1:$SSL_PORT"
  fi
  if [[ -n "$SASL_SSL_PORT" ]]; then
    listeners+=",SASL_SSL://127.0.0.1:$SASL_SSL_PORT"
    advertised+=",SASL_SSL://127.0.0.1:$SASL_SSL_PORT"
  fi
  cat > "$CONFIG" <<EOF
# Generated by deploy/kafka.sh on every start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=$listeners
advertised.listeners=$advertised
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL
log.dirs=$DATA_DIR

auto.create.topics.enable=true
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Flink's exactly-once Kafka sink asks for transaction timeouts up to 1 h.
transaction.max.timeout.ms=3600000
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
log.retention.hours=24
EOF
  if [[ -n "$SASL_PORT$SASL_SSL_PORT" ]]; then
    echo "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512" >> "$CONFIG"
  fi
  local listener
  for listener in ${SASL_PORT:+sasl_plaintext} ${SASL_SSL_PORT:+sasl_ssl}; do
    cat >> "$CONFIG" <<EOF
listener.name.$listener.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_knflow="$SASL_PASSWORD";
listener.name.$listener.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.$listener.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
  done
  for listener in ${SSL_PORT:+ssl} ${SASL_SSL_PORT:+sasl_ssl}; do
    cat >> "$CONFIG" <<EOF
listener.name.$listener.ssl.keystore.type=PEM
listener.name.$listener.ssl.keystore.location=$SSL_KEYSTORE
EOF
  done
  cat > "$STATE_DIR/log4j2.properties" <<'EOF'
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.statechange.name = state.change.logger
logger.statechange.level = warn
logger.clients.name = org.apache.kafka.clients
logger.clients.level = warn
EOF
}

# The java command line as an array (the classpath wildcard must reach java unexpanded).
read -r -a HEAP_FLAGS <<< "$HEAP"
JAVA_CMD=(java "${HEAP_FLAGS[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$STATE_DIR/log4j2.properties" -cp "$JARS_DIR/*")

ensure_jars() {
  if ! compgen -G "$JARS_DIR/kafka_2.13-*.jar" >/dev/null; then
    log "no Kafka jars in $JARS_DIR; running deploy/fetch-jars.sh"
    "$DEPLOY_DIR/fetch-jars.sh" >&2
  fi
}

format_storage() {
  [[ -f "$DATA_DIR/meta.properties" ]] && return 0
  mkdir -p "$DATA_DIR"
  # A cluster id is 16 random bytes, base64url without padding (22 chars). One starting
  # with '-' would be read as an option by the storage tool: draw again (1 in 64).
  local cluster_id
  cluster_id="-"
  while [[ "$cluster_id" == -* ]]; do
    cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)"
  done
  log "formatting storage in $DATA_DIR (cluster id $cluster_id)"
  local scram=()
  if [[ -n "$SASL_PORT$SASL_SSL_PORT" ]]; then
    scram=(--add-scram "SCRAM-SHA-256=[name=knflow,password=$SASL_PASSWORD]"
           --add-scram "SCRAM-SHA-512=[name=knflow,password=$SASL_PASSWORD]")
  fi
  "${JAVA_CMD[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$CONFIG" "${scram[@]}" \
    >>"$LOG_FILE" 2>&1 || { log "storage format failed:"; tail -n 30 "$LOG_FILE" >&2; exit 1; }
}

do_start() {
  local pid
  if pid="$(running_pid)"; then
    log "already running (pid $pid, port $(cat "$STATE_DIR/port" 2>/dev/null || echo '?'))"
    return 0
  fi
  if [[ -n "$SSL_PORT$SASL_SSL_PORT" && ! -r "$SSL_KEYSTORE" ]]; then
    log "--ssl-port and --sasl-ssl-port need KNFLOW_KAFKA_SSL_KEYSTORE, a readable PEM file (key + certificate chain)"; exit 1
  fi
  for p in "$PORT" "$CPORT" $SASL_PORT $SSL_PORT $SASL_SSL_PORT; do
    if port_open "$p"; then log "port $p on 127.0.0.1 is already in use by another process"; exit 1; fi
  done
  command -v java >/dev/null || { log "java not found (Java 17+ needed)"; exit 1; }
  mkdir -p "$STATE_DIR"
  ensure_jars
  write_config
  : > "$LOG_FILE"
  format_storage
  echo "$PORT" > "$STATE_DIR/port"
  local started=$SECONDS
  # setsid: own session, so a Ctrl-C in the caller's terminal does not hit the broker;
  # the inner shell writes its own pid and then becomes java (exec), so the pid is java's.
  # shellcheck disable=SC2016
  setsid bash -c 'echo $$ > "$0"; exec "$@"' "$PID_FILE" \
    "${JAVA_CMD[@]}" kafka.Kafka "$CONFIG" >>"$LOG_FILE" 2>&1 < /dev/null &
  local launcher=$!
  local py; py="$(find_python || true)"
  [[ -n "$py" ]] || log "no python with kafka-python found: readiness = port open + 'Kafka Server started' in the log"
  while :; do
    sleep 0.5
    if ! kill -0 "$launcher" 2>/dev/null; then
      log "broker exited during startup; last log lines:"; tail -n 40 "$LOG_FILE" >&2
      rm -f "$PID_FILE"; exit 1
    fi
    if pid="$(running_pid)" && port_open "$PORT" && grep -q "Kafka Server started" "$LOG_FILE" \
       && { [[ -z "$py" ]] || metadata_ok "$py"; }; then
      break
    fi
    if (( SECONDS - started > TIMEOUT )); then
      log "broker not ready after ${TIMEOUT}s; last log lines:"; tail -n 40 "$LOG_FILE" >&2
      do_stop >&2 || true
      kill -KILL "$launcher" 2>/dev/null || true
      exit 1
    fi
  done
  echo "kafka running: pid $pid, bootstrap 127.0.0.1:$PORT, controller 127.0.0.1:$CPORT${SASL_PORT:+, SASL 127.0.0.1:$SASL_PORT}${SSL_PORT:+, SSL 127.0.0.1:$SSL_PORT}${SASL_SSL_PORT:+, SASL_SSL 127.0.0.1:$SASL_SSL_PORT}, dir $STATE_DIR (ready in $((SECONDS - started))s)"
}

do_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"
    echo "kafka not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 60; i++)); do            # a controlled shutdown takes a few seconds
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid still alive after 30s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 20; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  fi
  if kill -0 "$pid" 2>/dev/null; then log "could not stop pid $pid"; exit 1; fi
  rm -f "$PID_FILE"
  echo "kafka stopped (pid $pid)"
}

do_status() {
  local pid
  if pid="$(running_pid)"; then
    echo "kafka running: pid $pid, bootstrap 127.0.0.1:$(cat "$STATE_DIR/port" 2>/dev/null || echo '?'), dir $STATE_DIR"
    return 0
  fi
  echo "kafka not running (dir $STATE_DIR)"
  return 1
}

case "$cmd" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  logs) [[ -f "$LOG_FILE" ]] && tail -n 100 "$LOG_FILE" ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
