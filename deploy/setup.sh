#!/usr/bin/env bash
# Set up a fresh machine for knflow: a virtualenv in .venv with the pinned requirements
# and knflow itself installed (editable), then the JVM artifacts from Maven Central.
# Idempotent: re-running only redoes what changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
STAMP=.venv/.knflow-installed
if [ ! -f "$STAMP" ] || [ requirements.txt -nt "$STAMP" ] || [ setup.py -nt "$STAMP" ]; then
  echo "setup: installing Python requirements (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip wheel setuptools
  .venv/bin/python -m pip install -q -r requirements.txt
  .venv/bin/python -m pip install -q --no-deps -e .
  touch "$STAMP"
fi
if [ "${KNFLOW_SKIP_JARS:-0}" != "1" ] && [ -x deploy/fetch-jars.sh ]; then
  deploy/fetch-jars.sh
  deploy/build-java.sh  # knflow's own JVM classes of the Flink job (pipelines/java)
fi
echo "setup: ready (.venv/bin/knflow)"
