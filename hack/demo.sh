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
kubectl kustomize config/samples | kubectl apply -n tenant-a-prod -f -

step "Invalid input is refused by the API server, naming the field"
cat <<'YAML' | kubectl apply -n tenant-a-prod -f - 2>&1 | sed 's/^/  /' || true
apiVersion: opsec.x1642.dev/v1alpha1
kind: BackupPolicy
metadata: {name: broken}
spec:
  rpo: 7d
  storage: [{name: offsite, s3: {bucket: tenant-a, credentialsSecretRef: {name: s3}}}]
YAML

step "Start the operator as its own ServiceAccount with the shipped RBAC (leader election, admin port 127.0.0.1:$port)"
hack/operator-kubeconfig.sh "$root/.run/demo-operator.kubeconfig"
echo "what it may do in a tenant namespace (kubectl auth can-i --list, its own rules):"
kubectl auth can-i --list -n tenant-a-prod --as system:serviceaccount:opsec-system:opsec-operator \
  | grep -vE '^(selfsubject|clustertrustbundles)|^ +\[' | sed 's/^/  /'
rm -rf "$root/.run/demo-backups"
KUBECONFIG="$root/.run/demo-operator.kubeconfig" POD_NAMESPACE=opsec-system "$op" run --admin-addr "127.0.0.1:$port" \
  --local-store-root "$root/.run/demo-backups" >"$root/.run/demo-operator.log" 2>&1 &
opid=$!
for _ in $(seq 1 100); do
  curl -fsS "127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
echo "readyz: $(curl -sS "127.0.0.1:$port/readyz")"
echo "lease holder: $(kubectl get lease -n opsec-system opsec-operator -o jsonpath='{.spec.holderIdentity}')"
echo "/metrics without a token: $(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$port/metrics")"
kubectl create serviceaccount demo-scraper -n opsec-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl create clusterrolebinding demo-scraper --clusterrole=opsec-operator-metrics-reader \
  --serviceaccount=opsec-system:demo-scraper --dry-run=client -o yaml | kubectl apply -f - >/dev/null
scrape=(-H "Authorization: Bearer $(kubectl create token demo-scraper -n opsec-system)")
curl -sS "${scrape[@]}" "127.0.0.1:$port/metrics" | grep -E '^opsec_(leader|build_info)'

step "SecurityBaseline tenant-standard: every standard tenant namespace made compliant"
kubectl wait securitybaseline/tenant-standard --for=condition=Ready --timeout=60s
kubectl get securitybaselines
for ns in tenant-a-prod tenant-b-prod; do
  echo "-- $ns"
  kubectl get networkpolicy,resourcequota,limitrange,rolebinding,configmap -n "$ns" -l app.kubernetes.io/managed-by=opsec-operator
  kubectl get namespace "$ns" -o jsonpath='{.metadata.labels.pod-security\.kubernetes\.io/enforce}{"\n"}' | sed 's/^/   pod-security enforce: /'
done

step "Drift: someone edits the isolation policy and deletes the tenant ConfigMap"
kubectl -n tenant-a-prod patch networkpolicy opsec-isolation --type merge -p '{"spec":{"policyTypes":["Ingress"]}}' --field-manager=kubectl-edit
kubectl -n tenant-a-prod delete configmap tenant-info
sleep 3
echo "policyTypes now: $(kubectl -n tenant-a-prod get networkpolicy opsec-isolation -o jsonpath='{.spec.policyTypes}')"
echo "tenant-info back: $(kubectl -n tenant-a-prod get configmap tenant-info -o jsonpath='{.data.tenant}')"
kubectl get events -A --field-selector reason=DriftReverted -o custom-columns=REASON:.reason,MESSAGE:.message

step "Migration (8.5.5): a web workload moves from tenant-a-prod to tenant-b-prod and its PodDisruptionBudget follows"
deploy() {
  cat <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: shop, namespace: $1}
spec:
  replicas: 1
  selector: {matchLabels: {app.kubernetes.io/name: shop}}
  template:
    metadata: {labels: {app.kubernetes.io/name: shop, opsec.x1642.dev/profile: web}}
    spec:
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: shop
        image: registry.example/shop:1.0
        securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
YAML
}
deploy tenant-a-prod | kubectl apply -f -
sleep 3
kubectl get pdb -A -l app.kubernetes.io/managed-by=opsec-operator
kubectl -n tenant-a-prod delete deployment shop
deploy tenant-b-prod | kubectl apply -f -
sleep 3
kubectl get pdb -A -l app.kubernetes.io/managed-by=opsec-operator
kubectl get events -A --field-selector reason=ConfigurationMigrated -o custom-columns=REASON:.reason,MESSAGE:.message

step "Status and metrics"
kubectl get securitybaseline tenant-standard -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}){"\n"}{end}'
kubectl get securitybaseline tenant-standard -o jsonpath='{range .status.history[*]}{.revision} {.summary}{"\n"}{end}'
curl -sS "${scrape[@]}" "127.0.0.1:$port/metrics" | grep -E '^opsec_(leader|baseline_)'

step "Backups (8.10): a BackupPolicy in tenant-b-prod, encrypted with the tenant's key and signed with the operator's, run as the tenant's ServiceAccount opsec-tenant (stamped by the baseline)"
kubectl -n tenant-b-prod get serviceaccount opsec-tenant -o name
kubectl -n tenant-b-prod create secret generic backup-keys --dry-run=client -o yaml \
  --from-literal=aes256.key="$(python3 -c 'import os,base64; print(base64.b64encode(os.urandom(32)).decode())')" | kubectl apply -f -
kubectl -n tenant-b-prod create configmap shop-settings --from-literal=currency=EUR --dry-run=client -o yaml | kubectl apply -f -
cat <<YAML | kubectl apply -n tenant-b-prod -f -
apiVersion: opsec.x1642.dev/v1alpha1
kind: BackupPolicy
metadata: {name: demo}
spec:
  rpo: 1h
  rto: 5m
  storage: [{name: onsite, local: {path: onsite}}]
  encryption: {keySecretRef: {name: backup-keys, key: aes256.key}}
  resources: {excludeKinds: [BackupPolicy]}
  verification:
    schedule: "@daily"
    restoreTest: {schedule: "@weekly", timeout: 10m}
YAML
for _ in $(seq 1 150); do
  [ "$(kubectl -n tenant-b-prod get backups -l opsec.x1642.dev/backup-policy=demo -o jsonpath='{.items[*].status.phase}' 2>/dev/null)" = Completed ] && break
  sleep 0.2
done
kubectl -n tenant-b-prod get backups -o wide
kubectl -n tenant-b-prod get backuppolicy demo -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}){"\n"}{end}'

step "Verification: every stored copy re-read, digests and signature checked"
kubectl -n tenant-b-prod annotate backuppolicy demo opsec.x1642.dev/verify-now=1 --overwrite
kubectl -n tenant-b-prod wait backuppolicy/demo --for=condition=Verified --timeout=60s
kubectl -n tenant-b-prod get backups -o custom-columns=NAME:.metadata.name,PHASE:.status.phase,VERIFIED:.status.verification.result,KEY:.status.signatureKeyId

step "Restore test: the newest backup restored into a scratch namespace, compared, deleted; its time is the measured RTO"
kubectl -n tenant-b-prod annotate backuppolicy demo opsec.x1642.dev/restore-test-now=1 --overwrite
kubectl -n tenant-b-prod wait backuppolicy/demo --for=condition=RTOMet --timeout=120s
kubectl -n tenant-b-prod get backuppolicy demo -o jsonpath='result={.status.lastRestoreTest.result} measured RTO={.status.lastRestoreTest.duration} compared={.status.lastRestoreTest.objectsCompared} mismatches={.status.lastRestoreTest.mismatches}{"\n"}'
kubectl get backuppolicies -A -o wide

step "A restore is all or nothing: refused whole by a server-side dry run (a quota), then done once the quota allows it"
backup=$(kubectl -n tenant-b-prod get backups -l opsec.x1642.dev/backup-policy=demo -o jsonpath='{.items[0].metadata.name}')
kubectl -n tenant-b-prod delete configmap shop-settings
kubectl -n tenant-b-prod create quota no-more-configmaps --hard=count/configmaps=1
for _ in $(seq 1 150); do
  [ -n "$(kubectl -n tenant-b-prod get quota no-more-configmaps -o jsonpath='{.status.used}' 2>/dev/null)" ] && break
  sleep 0.2
done
restore() {
  cat <<YAML | kubectl apply -n tenant-b-prod -f -
apiVersion: opsec.x1642.dev/v1alpha1
kind: Restore
metadata: {name: $1}
spec: {backupRef: {name: $backup}, kinds: [ConfigMap]}
YAML
  for _ in $(seq 1 150); do
    case "$(kubectl -n tenant-b-prod get restore "$1" -o jsonpath='{.status.phase}')" in Completed | Failed) break ;; esac
    sleep 0.2
  done
  kubectl -n tenant-b-prod get restore "$1" -o jsonpath='{.status.phase} ({.status.conditions[?(@.type=="Ready")].reason}): {.status.conditions[?(@.type=="Ready")].message}{"\n"}'
}
restore refused-by-quota
kubectl -n tenant-b-prod get configmap shop-settings 2>&1 || true
kubectl -n tenant-b-prod delete quota no-more-configmaps
sleep 1 # the API server's quota admission sees the deletion
restore after-quota
kubectl -n tenant-b-prod get configmap shop-settings -o jsonpath='shop-settings: currency={.data.currency}{"\n"}'

step "A tenant names an S3 endpoint the provider did not allow (the cloud metadata address): refused, no request made"
cat <<YAML | kubectl apply -n tenant-b-prod -f -
apiVersion: opsec.x1642.dev/v1alpha1
kind: BackupPolicy
metadata: {name: ssrf}
spec:
  rpo: 1h
  suspend: true
  storage: [{name: metadata, s3: {bucket: latest, endpoint: "https://169.254.169.254", credentialsSecretRef: {name: backup-keys}}}]
  encryption: {keySecretRef: {name: backup-keys, key: aes256.key}}
YAML
kubectl -n tenant-b-prod wait backuppolicy/ssrf --for=condition=StorageReachable=False --timeout=60s
kubectl -n tenant-b-prod get backuppolicy ssrf -o jsonpath='{.status.conditions[?(@.type=="StorageReachable")].message}{"\n"}'

step "The API server refuses what the schema can judge, naming the field: a daily schedule cannot keep a 6h RPO"
if cat <<YAML | kubectl apply -n tenant-b-prod -f - 2>/tmp/opsec-demo-refused.txt
apiVersion: opsec.x1642.dev/v1alpha1
kind: BackupPolicy
metadata: {name: too-rare}
spec:
  rpo: 6h
  schedule: "0 2 * * *"
  storage: [{name: onsite, local: {path: too-rare}}]
YAML
then
  echo "a schedule that cannot keep its RPO was accepted" >&2
  exit 1
fi
cat /tmp/opsec-demo-refused.txt

step "Disaster recovery without a cluster: the store alone lists its backups (the operator's signature on each)"
"$op" backup list --store "$root/.run/demo-backups/tenant-b-prod/onsite" --namespace tenant-b-prod --policy demo

step "Everything the operator serves: kubectl get opsec -A"
kubectl get opsec -A

step "Stop the operator with SIGTERM: it releases its Lease"
kill -TERM "$opid"; wait "$opid" || true; opid=
echo "lease holder after stop: '$(kubectl get lease -n opsec-system opsec-operator -o jsonpath='{.spec.holderIdentity}')'"
