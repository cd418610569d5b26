#!/usr/bin/env bash
# Fetch knflow's JVM artifacts (pinned in deploy/pom.xml) from Maven Central into the
# git-ignored cache:
#   deploy/.cache/kafka/  Kafka broker + runtime classpath (for deploy/kafka.sh)
#   deploy/.cache/flink/  flink-sql-connector-kafka fat jar (for the PyFlink job)
#   deploy/.cache/rocketmq/ RocketMQ 5 name server, proxy, broker, tools + classpath
#                         (for deploy/rocketmq.sh; the pom's `rocketmq` profile)
# Idempotent: does nothing when every pinned jar is already there. --force re-copies.
# Prints the two directories (and the connector jar path) on success.
set -euo pipefail

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$DEPLOY_DIR/pom.xml"
CACHE="$DEPLOY_DIR/.cache"
KAFKA_DIR="$CACHE/kafka"
FLINK_DIR="$CACHE/flink"
ROCKETMQ_DIR="$CACHE/rocketmq"

force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "fetch-jars.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

# The pinned versions, read back from the pom so there is one place to change them.
pom_prop() { sed -n "s:.*<$1>\(.*\)</$1>.*:\1:p" "$POM" | head -n1; }
KAFKA_VERSION="$(pom_prop kafka.version)"
LOG4J_VERSION="$(pom_prop log4j.version)"
CONNECTOR_VERSION="$(pom_prop flink-connector-kafka.version)"
ROCKETMQ_VERSION="$(pom_prop rocketmq.version)"

expected=(
  "$KAFKA_DIR/kafka_2.13-$KAFKA_VERSION.jar"
  "$KAFKA_DIR/kafka-clients-$KAFKA_VERSION.jar"
  "$KAFKA_DIR/kafka-storage-$KAFKA_VERSION.jar"
  "$KAFKA_DIR/log4j-core-$LOG4J_VERSION.jar"
  "$KAFKA_DIR/log4j-slf4j-impl-$LOG4J_VERSION.jar"
  "$FLINK_DIR/flink-sql-connector-kafka-$CONNECTOR_VERSION.jar"
  "$ROCKETMQ_DIR/rocketmq-namesrv-$ROCKETMQ_VERSION.jar"
  "$ROCKETMQ_DIR/rocketmq-proxy-$ROCKETMQ_VERSION.jar"
  "$ROCKETMQ_DIR/rocketmq-broker-$ROCKETMQ_VERSION.jar"
  "$ROCKETMQ_DIR/rocketmq-tools-$ROCKETMQ_VERSION.jar"
)

all_present() {
  local f
  for f in "${expected[@]}"; do [[ -s "$f" ]] || return 1; done
  # a stamp written after a complete copy, naming the pom it came from
  [[ -f "$CACHE/.stamp" ]] && cmp -s "$CACHE/.stamp" <(sha256sum "$POM" | cut -d' ' -f1)
}

if (( force == 0 )) && all_present; then
  echo "fetch-jars: up to date"
else
  command -v mvn >/dev/null || { echo "fetch-jars: mvn not found (install Maven 3.6+)" >&2; exit 1; }
  echo "fetch-jars: resolving from Maven Central (kafka $KAFKA_VERSION, connector $CONNECTOR_VERSION, rocketmq $ROCKETMQ_VERSION)..."
  # Stale jars of other versions would end up on the classpath: start from empty dirs.
  rm -rf "$KAFKA_DIR" "$FLINK_DIR" "$ROCKETMQ_DIR" "$CACHE/.stamp"
  mkdir -p "$KAFKA_DIR" "$FLINK_DIR" "$ROCKETMQ_DIR"
  # Two runs: RocketMQ's dependencies live in a profile, off the Kafka broker's classpath.
  if ! { mvn -B -Dstyle.color=never -f "$POM" \
           dependency:copy-dependencies@kafka-jars \
           dependency:copy-dependencies@flink-jars \
         && mvn -B -Dstyle.color=never -f "$POM" -P rocketmq \
           dependency:copy-dependencies@rocketmq-jars; } > "$CACHE/mvn.log" 2>&1; then
    echo "fetch-jars: mvn failed; last lines of $CACHE/mvn.log:" >&2
    tail -n 40 "$CACHE/mvn.log" >&2
    exit 1
  fi
  for f in "${expected[@]}"; do
    [[ -s "$f" ]] || { echo "fetch-jars: expected $f after mvn, not found" >&2; exit 1; }
  done
  sha256sum "$POM" | cut -d' ' -f1 > "$CACHE/.stamp"
fi

echo "kafka jars: $KAFKA_DIR ($(ls "$KAFKA_DIR"/*.jar | wc -l) jars)"
echo "flink jars: $FLINK_DIR"
echo "connector:  $FLINK_DIR/flink-sql-connector-kafka-$CONNECTOR_VERSION.jar"
echo "rocketmq jars: $ROCKETMQ_DIR ($(ls "$ROCKETMQ_DIR"/*.jar | wc -l) jars)"
