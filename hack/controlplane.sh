#!/usr/bin/env bash
# Starts or stops the test control plane (etcd embedded, kube-apiserver, kube-controller-manager)
# on free loopback ports with a fresh data directory.
#   hack/controlplane.sh up DIR     start it; DIR/kubeconfig is the admin kubeconfig
#   hack/controlplane.sh down DIR   stop it and remove DIR; no process is left behind
set -euo pipefail
cmd=${1:?usage: controlplane.sh up|down DIR}
dir=${2:?usage: controlplane.sh up|down DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/tests/controlplane/bin"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

case "$cmd" in
up)
  for b in controlplane kube-apiserver kube-controller-manager; do
    [ -x "$bin/$b" ] || { echo "missing $bin/$b: run 'make controlplane' first" >&2; exit 1; }
  done
  "$0" down "$dir" >/dev/null 2>&1 || true
  mkdir -p "$dir"
  api_port=$(free_port)
  etcd_port=$(free_port)
  while [ "$((etcd_port + 1))" = "$api_port" ]; do etcd_port=$(free_port); done
  # setsid: its own process group, so 'down' can end every component with one signal.
  setsid "$bin/controlplane" -dir "$dir" -bin "$bin" -apiserver-port "$api_port" -etcd-port "$etcd_port" \
    >"$dir/controlplane.log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  for _ in $(seq 1 180); do
    if [ -f "$dir/ready" ]; then
      echo "control plane ready: KUBECONFIG=$dir/kubeconfig ($(cat "$dir/ready"))"
      exit 0
    fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "control plane exited during start:" >&2
      tail -n 20 "$dir/controlplane.log" >&2
      for f in "$dir"/kube-*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 10 "$f" >&2; }; done
      exit 1
    fi
    sleep 0.5
  done
  echo "control plane not ready after 90s" >&2
  tail -n 20 "$dir/controlplane.log" >&2
  exit 1
  ;;
down)
  if [ -f "$dir/pid" ]; then
    pid=$(cat "$dir/pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
  fi
  rm -rf "$dir"
  ;;
*) echo "usage: controlplane.sh up|down DIR" >&2; exit 2 ;;
esac
