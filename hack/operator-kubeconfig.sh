#!/usr/bin/env bash
# Installs the operator's RBAC (kubectl apply -k config/rbac, into namespace opsec-system) and
# writes a kubeconfig for its ServiceAccount to OUT, so that an operator run outside the cluster
# (make demo) holds exactly the rights it ships with, not the caller's.
#   hack/operator-kubeconfig.sh OUT
set -euo pipefail
out=${1:?usage: operator-kubeconfig.sh OUT}
root=$(cd "$(dirname "$0")/.." && pwd)
kubectl create namespace opsec-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply --server-side --force-conflicts -k "$root/config/rbac" >/dev/null
token=$(kubectl create token opsec-operator -n opsec-system --duration 24h)
server=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
ca=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
umask 077
cat >"$out" <<YAML
apiVersion: v1
kind: Config
clusters: [{name: cluster, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: opsec-operator, user: {token: "$token"}}]
contexts: [{name: operator, context: {cluster: cluster, user: opsec-operator}}]
current-context: operator
YAML
