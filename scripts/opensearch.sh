#!/usr/bin/env bash
# A throwaway single-node OpenSearch for tests and benchmarks: the integ-test zip from Maven Central
# (no security plugin → plain http), cached under .cache/opensearch/, run on the machine's JDK 17
# as a non-root user (OpenSearch refuses to run as root).
#
#   scripts/opensearch.sh install|start|stop|status|url
#
# Knobs (environment): OPENSEARCH_VERSION (2.19.6), OPENSEARCH_PORT (9200), OPENSEARCH_HEAP (512m),
# OPENSEARCH_HOME_DIR (.cache/opensearch), OPENSEARCH_RUN_USER (opensearch, used only when run as root),
# OPENSEARCH_START_TIMEOUT (180 s), OPENSEARCH_AUTO_CREATE_INDEX (true: OpenSearch's and Amazon OpenSearch
# Service's default, so tests see what users run; the sink must never depend on it being off. The tests also
# flip it at runtime through `_cluster/settings`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="${OPENSEARCH_VERSION:-2.19.6}"
PORT="${OPENSEARCH_PORT:-9200}"
HEAP="${OPENSEARCH_HEAP:-512m}"
BASE="${OPENSEARCH_HOME_DIR:-$ROOT/.cache/opensearch}"
RUN_USER="${OPENSEARCH_RUN_USER:-opensearch}"
TIMEOUT="${OPENSEARCH_START_TIMEOUT:-180}"
AUTO_CREATE="${OPENSEARCH_AUTO_CREATE_INDEX:-true}"
ZIP="$BASE/opensearch-$VERSION.zip"
HOME_DIR="$BASE/opensearch-$VERSION"
DATA="$BASE/run-$PORT"            # data, logs and pid file of the instance on this port
PIDFILE="$DATA/opensearch.pid"
URL="http://127.0.0.1:$PORT"
MAVEN="https://repo1.maven.org/maven2/org/opensearch/distribution/integ-test-zip/opensearch"

log() { echo "opensearch.sh: $*" >&2; }

find_java() {
    if [[ -n "${OPENSEARCH_JAVA_HOME:-}" ]]; then echo "$OPENSEARCH_JAVA_HOME"; return; fi
    local java
    java="$(readlink -f "$(command -v java)" 2>/dev/null || true)"
    [[ -n "$java" ]] || { log "no java on PATH: install a JDK 17 (apt-get install openjdk-17-jre-headless)"; exit 1; }
    dirname "$(dirname "$java")"
}

install() {
    mkdir -p "$BASE"
    if [[ ! -f "$ZIP" ]]; then
        log "downloading OpenSearch $VERSION integ-test zip from Maven Central"
        curl -fsSL --retry 3 -o "$ZIP.part" "$MAVEN/$VERSION/opensearch-$VERSION.zip"
        mv "$ZIP.part" "$ZIP"
    fi
    if [[ ! -x "$HOME_DIR/bin/opensearch" ]]; then
        rm -rf "$HOME_DIR.part"
        mkdir -p "$HOME_DIR.part"
        unzip -q "$ZIP" -d "$HOME_DIR.part"
        mv "$HOME_DIR.part/opensearch-$VERSION" "$HOME_DIR"
        rm -rf "$HOME_DIR.part"
    fi
    log "installed $HOME_DIR"
}

running_pid() {
    [[ -f "$PIDFILE" ]] || return 1
    local pid
    pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

healthy() {
    curl -fsS --max-time 2 "$URL/_cluster/health" 2>/dev/null | grep -Eq '"status":"(green|yellow)"'
}

start() {
    if running_pid >/dev/null && healthy; then
        log "already running (pid $(running_pid))"
        echo "$URL"
        return
    fi
    if ! running_pid >/dev/null && curl -fsS --max-time 2 "$URL" >/dev/null 2>&1; then
        log "port $PORT already serves something that is not ours; set OPENSEARCH_PORT"
        exit 1
    fi
    install
    local java_home t0
    java_home="$(find_java)"
    t0=$(date +%s)
    mkdir -p "$DATA/data" "$DATA/logs"
    local -a as_user=()
    if [[ "$(id -u)" == 0 ]]; then
        id "$RUN_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$RUN_USER"
        chown -R "$RUN_USER" "$HOME_DIR" "$DATA"
        # The user must be able to reach the install dir through every parent.
        local d="$BASE"
        while [[ "$d" != "/" ]]; do chmod o+x "$d" 2>/dev/null || true; d="$(dirname "$d")"; done
        as_user=(runuser -u "$RUN_USER" --)
    fi
    if ! running_pid >/dev/null; then
        rm -f "$PIDFILE"
        "${as_user[@]}" env OPENSEARCH_JAVA_HOME="$java_home" JAVA_HOME="$java_home" \
            OPENSEARCH_JAVA_OPTS="-Xms256m -Xmx$HEAP" \
            "$HOME_DIR/bin/opensearch" -d -p "$PIDFILE" \
            -Ediscovery.type=single-node -Enetwork.host=127.0.0.1 -Ehttp.port="$PORT" \
            -Etransport.port=$((PORT + 100)) -Epath.data="$DATA/data" -Epath.logs="$DATA/logs" \
            -Ecluster.name="reactor-test-$PORT" -Ecluster.routing.allocation.disk.threshold_enabled=false \
            -Eaction.auto_create_index="$AUTO_CREATE" >"$DATA/stdout.log" 2>&1 || {
                log "failed to start; see $DATA/stdout.log and $DATA/logs"; tail -20 "$DATA/stdout.log" >&2; exit 1; }
    fi
    local i
    for ((i = 0; i < TIMEOUT * 2; i++)); do
        if healthy; then
            log "up at $URL (pid $(running_pid || echo ?)) after $(($(date +%s) - t0)) s"
            echo "$URL"
            return
        fi
        if [[ -f "$PIDFILE" ]] && ! running_pid >/dev/null; then
            log "process exited; last log lines:"; tail -30 "$DATA/logs/reactor-test-$PORT.log" >&2 2>/dev/null || true
            exit 1
        fi
        sleep 0.5
    done
    log "not healthy after ${TIMEOUT}s; see $DATA/logs"
    exit 1
}

stop() {
    local pid
    if pid="$(running_pid)"; then
        kill "$pid"
        local i
        for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && { log "pid $pid did not stop in 30 s; killing"; kill -9 "$pid"; }
        log "stopped pid $pid"
    else
        log "not running"
    fi
    rm -f "$PIDFILE"
}

status() {
    if running_pid >/dev/null && healthy; then
        echo "running pid $(running_pid) at $URL"
    elif running_pid >/dev/null; then
        echo "starting or unhealthy: pid $(running_pid) at $URL"; return 1
    else
        echo "stopped"; return 3
    fi
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    url) echo "$URL" ;;
    *) echo "usage: $0 install|start|stop|status|url" >&2; exit 2 ;;
esac
