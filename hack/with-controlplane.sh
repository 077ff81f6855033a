#!/usr/bin/env bash
# Runs a command with the real components the tests need, and stops them afterwards whatever
# the command's outcome:
#   - a fresh test control plane (KUBECONFIG), or, with OPSEC_USE_EXISTING_CLUSTER=1 and
#     KUBECONFIG already set, the cluster it names (kind, k3d);
#   - a SeaweedFS S3 server (OPSEC_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$root/tests/controlplane/bin:$PATH"
cp_dir="$root/.run/cp-$$"
s3_dir="$root/.run/s3-$$"
cleanup() {
  "$root/hack/s3.sh" down "$s3_dir" || true
  if [ "${OPSEC_USE_EXISTING_CLUSTER:-}" != 1 ]; then "$root/hack/controlplane.sh" down "$cp_dir" || true; fi
}
trap cleanup EXIT

"$root/hack/s3.sh" up "$s3_dir" >/dev/null
set -a
# shellcheck disable=SC1091
. "$s3_dir/env"
set +a
echo "S3 server ready: OPSEC_S3_ENDPOINT=$OPSEC_S3_ENDPOINT"

if [ "${OPSEC_USE_EXISTING_CLUSTER:-}" = 1 ] && [ -n "${KUBECONFIG:-}" ]; then
  echo "using the existing cluster of KUBECONFIG=$KUBECONFIG"
else
  "$root/hack/controlplane.sh" up "$cp_dir"
  export KUBECONFIG="$cp_dir/kubeconfig"
fi
"$@"
