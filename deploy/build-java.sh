#!/usr/bin/env bash
# Compile knflow's own JVM classes (pipelines/java: the packed-record Kafka
# (de)serializers, the batcher and the unbatcher of the Flink job) against the Flink jars
# that PyFlink ships and the Kafka connector jar, into the git-ignored cache:
#   deploy/.cache/knflow-java/knflow-flink.jar
# Idempotent: rebuilds only when a source file changed (a stamp holds their hash).
# Needs a JDK 17+ (javac, jar) and deploy/fetch-jars.sh to have run.
set -euo pipefail
DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$DEPLOY_DIR")"
SRC="$ROOT/pipelines/java"
OUT="$DEPLOY_DIR/.cache/knflow-java"
JAR="$OUT/knflow-flink.jar"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

command -v javac >/dev/null || { echo "build-java: javac not found (install a JDK 17+)" >&2; exit 1; }
PYFLINK_LIB="$("$PYTHON" -c 'import os, pyflink; print(os.path.join(os.path.dirname(pyflink.__file__), "lib"))')"
CONNECTOR="$(ls "$DEPLOY_DIR"/.cache/flink/flink-sql-connector-kafka-*.jar 2>/dev/null | tail -n1 || true)"
[[ -n "$CONNECTOR" ]] || { echo "build-java: no Kafka connector jar: run deploy/fetch-jars.sh first" >&2; exit 1; }

hash="$(cd "$SRC" && find . -name '*.java' | sort | xargs sha256sum | sha256sum | cut -d' ' -f1)"
if [[ -s "$JAR" && -f "$OUT/.stamp" && "$(cat "$OUT/.stamp")" == "$hash" ]]; then
  echo "build-java: up to date ($JAR)"
  exit 0
fi
rm -rf "$OUT/classes" "$JAR"
mkdir -p "$OUT/classes"
javac -nowarn --release 17 -d "$OUT/classes" -cp "$PYFLINK_LIB/*:$CONNECTOR" $(find "$SRC" -name '*.java')
jar --create --file "$JAR" -C "$OUT/classes" .
echo "$hash" > "$OUT/.stamp"
echo "build-java: $JAR"
