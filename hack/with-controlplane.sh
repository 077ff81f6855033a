#!/usr/bin/env bash
# Runs a command with KUBECONFIG pointing at a fresh test control plane, and stops the control
# plane afterwards whatever the command's outcome. With KUBECONFIG already set to a real cluster
# (kind, k3d) and OPSEC_USE_EXISTING_CLUSTER=1, runs the command there instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ "${OPSEC_USE_EXISTING_CLUSTER:-}" = 1 ] && [ -n "${KUBECONFIG:-}" ]; then
  exec "$@"
fi
export PATH="$root/tests/controlplane/bin:$PATH"
dir="$root/.run/cp-$$"
trap '"$root/hack/controlplane.sh" down "$dir"' EXIT
"$root/hack/controlplane.sh" up "$dir"
export KUBECONFIG="$dir/kubeconfig"
"$@"
