#!/usr/bin/env bash
# The operator's main job end to end on the local control plane that `make demo` starts
# (KUBECONFIG is set by hack/with-controlplane.sh). Each step says what it shows.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
op="$root/target/debug/opsec-operator"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
opid=
cleanup() { [ -n "$opid" ] && kill "$opid" 2>/dev/null && wait "$opid" 2>/dev/null; true; }
trap cleanup EXIT

step "Kubernetes $(kubectl version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])') on loopback"

step "Install the CRDs the way a platform team does: kubectl apply -f crds/"
kubectl apply --server-side -f crds/
kubectl wait --for=condition=Established --timeout=60s -f crds/

step "Two tenant namespaces"
for t in tenant-a tenant-b; do
  kubectl create namespace "$t-prod" --dry-run=client -o yaml | kubectl apply -f -
  kubectl label namespace "$t-prod" --overwrite opsec.x1642.dev/tenant="$t" opsec.x1642.dev/tenant-class=standard
done

step "One sample of every kind (config/samples), applied into tenant-a-prod"
kubectl apply -n tenant-a-prod -f config/samples/

step "Invalid input is refused by the API server, naming the field"
cat <<'YAML' | kubectl apply -n tenant-a-prod -f - 2>&1 | sed 's/^/  /' || true
apiVersion: opsec.x1642.dev/v1alpha1
kind: BackupPolicy
metadata: {name: broken}
spec:
  rpo: 7d
  storage: [{name: offsite, s3: {bucket: tenant-a, credentialsSecretRef: {name: s3}}}]
YAML

step "Start the operator (leader election, admin port 127.0.0.1:$port)"
"$op" run --admin-addr "127.0.0.1:$port" --lease-namespace default >"$root/.run/demo-operator.log" 2>&1 &
opid=$!
for _ in $(seq 1 100); do
  curl -fsS "127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
echo "readyz: $(curl -sS "127.0.0.1:$port/readyz")"
echo "lease holder: $(kubectl get lease -n default opsec-operator -o jsonpath='{.spec.holderIdentity}')"
curl -sS "127.0.0.1:$port/metrics" | grep -E '^opsec_(leader|build_info)'

step "Everything the operator serves: kubectl get opsec -A"
kubectl get opsec -A

step "Stop the operator with SIGTERM: it releases its Lease"
kill -TERM "$opid"; wait "$opid" || true; opid=
echo "lease holder after stop: '$(kubectl get lease -n default opsec-operator -o jsonpath='{.spec.holderIdentity}')'"
