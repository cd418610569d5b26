#!/usr/bin/env bash
# A standalone Flink 2.2 session cluster (one JobManager + one TaskManager) on 127.0.0.1,
# run from the pip-installed pyflink (its bin/, lib/, opt/), with a generated config.
#
#   deploy/flink-cluster.sh start            generate config, start JM + TM, wait for REST
#   deploy/flink-cluster.sh stop             stop both (and their Python workers)
#   deploy/flink-cluster.sh status           exit 0 iff JM and TM are running
#   deploy/flink-cluster.sh flink ARGS...    run pyflink's `flink` CLI against this cluster,
#                                            e.g. flink run -py job.py   (-m is added)
#   deploy/flink-cluster.sh logs             tails of the JM and TM logs
#   deploy/flink-cluster.sh taskmanager start  start one more TaskManager on the running
#                                            cluster's config (e.g. to replace a dead one)
#
# Environment:
#   KNFLOW_FLINK_REST_PORT    REST/web port                 (default 8081)
#   KNFLOW_FLINK_RPC_PORT     JobManager RPC port           (default 6123)
#   KNFLOW_FLINK_SLOTS        task slots of the TaskManager (default 2)
#   KNFLOW_FLINK_JM_MEMORY    jobmanager.memory.process.size  (default 1024m)
#   KNFLOW_FLINK_TM_MEMORY    taskmanager.memory.process.size (default 1728m)
#   KNFLOW_FLINK_DIR          state dir: conf, lib, log, pid, checkpoints (default <repo>/.run/flink)
#   KNFLOW_FLINK_START_TIMEOUT seconds to wait for a registered TaskManager (default 90)
#   KNFLOW_PYTHON             python with pyflink (default <repo>/.venv/bin/python, then python3);
#                             also the Python workers' python.executable
# The Kafka connector (deploy/.cache/flink/*.jar, fetched on demand) is put in the cluster's
# lib/ (a generated dir of symlinks), so jobs submitted here need not ship it themselves.
set -euo pipefail

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$DEPLOY_DIR/.." && pwd)"
CONNECTOR_DIR="$DEPLOY_DIR/.cache/flink"

REST_PORT="${KNFLOW_FLINK_REST_PORT:-8081}"
RPC_PORT="${KNFLOW_FLINK_RPC_PORT:-6123}"
SLOTS="${KNFLOW_FLINK_SLOTS:-2}"
JM_MEMORY="${KNFLOW_FLINK_JM_MEMORY:-1024m}"
TM_MEMORY="${KNFLOW_FLINK_TM_MEMORY:-1728m}"
STATE_DIR="${KNFLOW_FLINK_DIR:-$REPO_ROOT/.run/flink}"
TIMEOUT="${KNFLOW_FLINK_START_TIMEOUT:-90}"

log() { echo "flink-cluster.sh: $*" >&2; }
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; }

STATE_DIR="$(realpath -m "$STATE_DIR")"   # absolute; created by start only
CONF_DIR="$STATE_DIR/conf"
LIB_DIR="$STATE_DIR/lib"
LOG_DIR="$STATE_DIR/log"
PID_DIR="$STATE_DIR/pid"

find_python() {
  local c
  for c in "${KNFLOW_PYTHON:-}" "$REPO_ROOT/.venv/bin/python" python3; do
    [[ -n "$c" ]] || continue
    command -v "$c" >/dev/null 2>&1 || continue
    "$c" -c 'import pyflink' >/dev/null 2>&1 && { command -v "$c"; return 0; }
  done
  return 1
}
PYTHON="$(find_python)" || { log "no python with pyflink found (set KNFLOW_PYTHON)"; exit 1; }
# The venv's python must stay the venv's (no symlink resolution), or site-packages is lost.
[[ "$PYTHON" = /* ]] || PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"
PYFLINK_HOME="$("$PYTHON" -c 'import pyflink, os; print(os.path.dirname(os.path.abspath(pyflink.__file__)))')"

# Everything pyflink's bin/*.sh need to use our config, lib, logs and pid files.
export FLINK_HOME="$PYFLINK_HOME"
export FLINK_CONF_DIR="$CONF_DIR"
export FLINK_LIB_DIR="$LIB_DIR"
export FLINK_LOG_DIR="$LOG_DIR"
export FLINK_PID_DIR="$PID_DIR"
export FLINK_IDENT_STRING="knflow"

# /proc/PID/FILE (cmdline or environ) as one line per NUL-separated field. Read whole and
# matched with [[ ]], never piped into `grep -q`: under pipefail that pipe fails whenever grep
# exits before tr has written everything (SIGPIPE), so a match could read as "no match".
proc_fields() { tr '\0' '\n' < "/proc/$1/$2" 2>/dev/null; }

# All pids in our pid files that are alive.
daemon_pids() {
  local f p cmd
  for f in "$PID_DIR"/flink-knflow-"$1".pid; do
    [[ -f "$f" ]] || continue
    while read -r p; do
      [[ "$p" =~ ^[0-9]+$ ]] && kill -0 "$p" 2>/dev/null || continue
      cmd="$(proc_fields "$p" cmdline)" || continue
      [[ "$cmd" == *"$CONF_DIR"* ]] && echo "$p"
    done < "$f"
  done
  return 0
}

descendants() {
  local p c
  for p in "$@"; do
    for c in $(ps -o pid= --ppid "$p" 2>/dev/null); do echo "$c"; descendants "$c"; done
  done
}

# Python workers of this cluster's TaskManagers, also those whose TaskManager is gone (a
# kill -9 leaves them running, re-parented): the udf runner, its python and tee, recognised
# by their command line and by FLINK_CONF_DIR=<our conf dir> in their environment.
orphan_workers() {
  local d p cmd env
  for d in /proc/[0-9]*; do
    p="${d#/proc/}"
    [[ "$p" == "$$" ]] && continue
    cmd="$(proc_fields "$p" cmdline)" || continue
    [[ "$cmd" =~ pyflink-udf-runner|pyflink\.fn_execution|flink-python-udf-boot ]] || continue
    env="$(proc_fields "$p" environ)" || continue
    [[ $'\n'"$env"$'\n' == *$'\n'"FLINK_CONF_DIR=$CONF_DIR"$'\n'* ]] || continue
    echo "$p"
  done
  return 0
}

# SIGKILL this cluster's leftover Python workers and wait (up to 10 s) until they are gone.
kill_orphans() {
  local i kids
  for ((i = 0; i < 20; i++)); do
    kids="$(orphan_workers | tr '\n' ' ')"
    [[ -z "${kids// /}" ]] && return 0
    (( i == 0 )) && log "killing orphaned Python workers: $kids"
    kill -KILL $kids 2>/dev/null || true
    sleep 0.5
  done
  log "Python workers still alive after SIGKILL: $kids"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_config() {
  mkdir -p "$CONF_DIR" "$LIB_DIR" "$LOG_DIR" "$PID_DIR" "$STATE_DIR/checkpoints" "$STATE_DIR/savepoints" "$STATE_DIR/tmp"
  # The JVM flags Flink needs on Java 17 (--add-opens ...), taken from the shipped config.
  local java_opts
  java_opts="$(sed -n 's/^ *all: *//p' "$PYFLINK_HOME/conf/config.yaml" | head -n1)"
  local connector_jars=("$CONNECTOR_DIR"/*.jar)
  cat > "$CONF_DIR/config.yaml" <<EOF
# Generated by deploy/flink-cluster.sh on every start; edits are overwritten.
env.java.opts.all: $java_opts
env.log.dir: $LOG_DIR
env.pid.dir: $PID_DIR
io.tmp.dirs: $STATE_DIR/tmp

jobmanager.bind-host: 127.0.0.1
jobmanager.rpc.address: 127.0.0.1
jobmanager.rpc.port: $RPC_PORT
jobmanager.memory.process.size: $JM_MEMORY
jobmanager.execution.failover-strategy: region

taskmanager.bind-host: 127.0.0.1
taskmanager.host: 127.0.0.1
taskmanager.numberOfTaskSlots: $SLOTS
taskmanager.memory.process.size: $TM_MEMORY

rest.address: 127.0.0.1
rest.bind-address: 127.0.0.1
rest.port: $REST_PORT
blob.server.port: 0

parallelism.default: 1
execution.checkpointing.dir: file://$STATE_DIR/checkpoints
execution.checkpointing.savepoint-dir: file://$STATE_DIR/savepoints

python.executable: $PYTHON
python.client.executable: $PYTHON
EOF
  cp "$PYFLINK_HOME"/conf/log4j*.properties "$PYFLINK_HOME"/conf/logback*.xml "$CONF_DIR/"
  echo 127.0.0.1:"$REST_PORT" > "$CONF_DIR/masters"
  echo 127.0.0.1 > "$CONF_DIR/workers"
  # lib/ = pyflink's lib + flink-python (shipped in opt/; the JobManager needs its Python
  # operators to deserialize a -py job) + the Kafka connector, as symlinks (pyflink's own
  # dir stays untouched).
  rm -f "$LIB_DIR"/*.jar
  ln -s "$PYFLINK_HOME"/lib/*.jar "$PYFLINK_HOME"/opt/flink-python-*.jar "${connector_jars[@]}" "$LIB_DIR/"
  echo "$REST_PORT" > "$STATE_DIR/rest-port"
}

ensure_connector() {
  if ! compgen -G "$CONNECTOR_DIR/flink-sql-connector-kafka-*.jar" >/dev/null; then
    log "no connector jar in $CONNECTOR_DIR; running deploy/fetch-jars.sh"
    "$DEPLOY_DIR/fetch-jars.sh" >&2
  fi
}

overview() { curl -fsS --max-time 3 "http://127.0.0.1:$1/overview" 2>/dev/null; }

do_start() {
  local jm tm
  jm="$(daemon_pids standalonesession)"; tm="$(daemon_pids taskexecutor)"
  if [[ -n "$jm" && -n "$tm" ]]; then
    log "already running (jobmanager pid $jm, taskmanager pid $tm)"; return 0
  fi
  if [[ -n "$jm" || -n "$tm" ]]; then log "half running; restarting"; do_stop >/dev/null; fi
  for p in "$REST_PORT" "$RPC_PORT"; do
    if port_open "$p"; then log "port $p on 127.0.0.1 is already in use by another process"; exit 1; fi
  done
  ensure_connector
  rm -f "$PID_DIR"/*.pid
  write_config
  local started=$SECONDS
  # setsid: the daemons get their own session (a Ctrl-C in the caller does not reach them).
  setsid "$PYFLINK_HOME/bin/jobmanager.sh" start >"$LOG_DIR/start-jobmanager.out" 2>&1 < /dev/null
  setsid "$PYFLINK_HOME/bin/taskmanager.sh" start >"$LOG_DIR/start-taskmanager.out" 2>&1 < /dev/null
  local ov tms
  while :; do
    sleep 1
    jm="$(daemon_pids standalonesession)"; tm="$(daemon_pids taskexecutor)"
    if [[ -z "$jm" || -z "$tm" ]] && (( SECONDS - started > 5 )); then
      log "a daemon exited during startup (jobmanager: ${jm:-dead}, taskmanager: ${tm:-dead})"
      tail_logs >&2; do_stop >/dev/null; exit 1
    fi
    if ov="$(overview "$REST_PORT")"; then
      tms="$(sed -n 's/.*"taskmanagers":\([0-9]*\).*/\1/p' <<<"$ov")"
      [[ "${tms:-0}" -ge 1 ]] && break
    fi
    if (( SECONDS - started > TIMEOUT )); then
      log "no TaskManager registered after ${TIMEOUT}s"; tail_logs >&2; do_stop >/dev/null; exit 1
    fi
  done
  echo "flink running: rest http://127.0.0.1:$REST_PORT, jobmanager pid $jm, taskmanager pid $tm, $SLOTS slots, conf $CONF_DIR (ready in $((SECONDS - started))s)"
}

# One more TaskManager for the running JobManager, with the config `start` wrote (a crashed
# TaskManager's replacement: the JobManager reschedules the job on its slots).
do_taskmanager_start() {
  local jm before after p started=$SECONDS
  jm="$(daemon_pids standalonesession)"
  if [[ -z "$jm" || ! -f "$CONF_DIR/config.yaml" ]]; then log "no running JobManager in $STATE_DIR (run start first)"; exit 1; fi
  before=" $(daemon_pids taskexecutor | tr '\n' ' ') "
  setsid "$PYFLINK_HOME/bin/taskmanager.sh" start >>"$LOG_DIR/start-taskmanager.out" 2>&1 < /dev/null
  while :; do
    after=""
    for p in $(daemon_pids taskexecutor); do [[ "$before" == *" $p "* ]] || after="$p"; done
    [[ -n "$after" ]] && break
    if (( SECONDS - started > 10 )); then log "the new TaskManager did not start"; tail_logs >&2; exit 1; fi
    sleep 0.5
  done
  echo "taskmanager started: pid $after"
}

do_stop() {
  local pids kids
  pids="$(daemon_pids taskexecutor) $(daemon_pids standalonesession)"
  pids="$(echo $pids)"
  if [[ -z "$pids" ]]; then
    kill_orphans
    rm -f "$PID_DIR"/*.pid; echo "flink not running"; return 0
  fi
  # Python workers (beam harness) are TaskManager children: collect them before the parent goes
  # (kill_orphans below takes those of a TaskManager that died before: kill -9 leaves them).
  kids="$(descendants $pids | tr '\n' ' ')"
  kill -TERM $pids 2>/dev/null || true
  local i alive
  for ((i = 0; i < 60; i++)); do
    alive=""; for p in $pids; do kill -0 "$p" 2>/dev/null && alive+="$p "; done
    [[ -z "$alive" ]] && break
    sleep 0.5
  done
  if [[ -n "$alive" ]]; then log "still alive after 30s, SIGKILL: $alive"; kill -KILL $alive 2>/dev/null || true; sleep 0.5; fi
  for p in $kids; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true; done
  # Orphans of a TaskManager that died before, and workers one started while being stopped.
  kill_orphans
  for p in $pids; do
    if kill -0 "$p" 2>/dev/null; then log "could not stop pid $p"; exit 1; fi
  done
  rm -f "$PID_DIR"/*.pid
  echo "flink stopped (pids $pids)"
}

do_status() {
  local jm tm port
  jm="$(daemon_pids standalonesession)"; tm="$(daemon_pids taskexecutor)"
  port="$(cat "$STATE_DIR/rest-port" 2>/dev/null || echo "$REST_PORT")"
  if [[ -n "$jm" && -n "$tm" ]]; then
    echo "flink running: rest http://127.0.0.1:$port, jobmanager pid $jm, taskmanager pid $tm"
    overview "$port" && echo
    return 0
  fi
  echo "flink not running (jobmanager: ${jm:-stopped}, taskmanager: ${tm:-stopped})"
  return 1
}

tail_logs() {
  local f
  for f in "$LOG_DIR"/flink-knflow-standalonesession-*.log "$LOG_DIR"/flink-knflow-taskexecutor-*.log \
           "$LOG_DIR"/flink-knflow-*.out; do
    [[ -f "$f" ]] || continue
    echo "---- $f"; tail -n 25 "$f"
  done
}

cmd="${1:-}"; [[ $# -gt 0 ]] && shift
case "$cmd" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  logs) tail_logs ;;
  taskmanager)
    case "${1:-}" in
      start) do_taskmanager_start ;;
      *) usage >&2; exit 2 ;;
    esac ;;
  flink)
    port="$(cat "$STATE_DIR/rest-port" 2>/dev/null || echo "$REST_PORT")"
    sub="${1:-}"; [[ $# -gt 0 ]] && shift
    case "$sub" in
      run|list|cancel|stop|savepoint) exec "$PYFLINK_HOME/bin/flink" "$sub" -m "127.0.0.1:$port" "$@" ;;
      *) exec "$PYFLINK_HOME/bin/flink" "$sub" "$@" ;;
    esac ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
