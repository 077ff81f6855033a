# opsec-operator: build, test and run. `make help` lists the targets.
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help

K8S_VERSION := v1.37.2
CP_DIR := tests/controlplane
CP_BIN := $(CP_DIR)/bin
CP_LDFLAGS := -s -w \
  -X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
  -X k8s.io/component-base/version.gitMajor=1 \
  -X k8s.io/component-base/version.gitMinor=37 \
  -X k8s.io/component-base/version.gitTreeState=clean
CP_SOURCES := $(CP_DIR)/go.mod $(CP_DIR)/go.sum $(CP_DIR)/main.go
OPERATOR := target/debug/opsec-operator
DEV_CP := .run/dev

.PHONY: help build test crds crds-check controlplane controlplane-up controlplane-down run demo lint fmt clean bench-backup bench-baseline bench

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

build: ## Build the operator
	cargo build

crds: ## Regenerate crds/ from the Rust types (and the copies kustomize reads in config/crd/bases)
	cargo run -q -- crd --dir crds
	cp crds/*.yaml config/crd/bases/

controlplane: $(CP_BIN)/.built ## Build etcd + kube-apiserver + kube-controller-manager from the Go module proxy (once; Go caches keep it warm)

$(CP_BIN)/.built: $(CP_SOURCES)
	cd $(CP_DIR) && go build -o bin/ -ldflags "$(CP_LDFLAGS)" . k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl
	touch $@

test: controlplane ## Run every test: unit tests, then integration tests against a fresh local control plane
	cargo build --tests --bins
	hack/with-controlplane.sh cargo test --no-fail-fast

controlplane-up: controlplane ## Start a long-lived local control plane in .run/dev (KUBECONFIG=.run/dev/kubeconfig)
	hack/controlplane.sh up $(DEV_CP)

controlplane-down: ## Stop the local control plane
	hack/controlplane.sh down $(DEV_CP)

run: build ## Run the operator against the local control plane started by controlplane-up
	KUBECONFIG=$(DEV_CP)/kubeconfig $(CP_BIN)/kubectl apply --server-side -f crds/
	KUBECONFIG=$(DEV_CP)/kubeconfig $(OPERATOR) run --admin-addr 127.0.0.1:8080

demo: controlplane build ## The operator's main job end to end on a fresh local control plane
	hack/with-controlplane.sh hack/demo.sh

lint: ## cargo fmt --check, clippy -D warnings, go vet
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cd $(CP_DIR) && go vet .

fmt: ## Format Rust and Go sources
	cargo fmt
	cd $(CP_DIR) && gofmt -w .

clean: ## Remove build outputs and local control planes
	-for d in .run/*; do [ -d "$$d" ] && hack/controlplane.sh down "$$d"; done
	cargo clean
	rm -rf $(CP_BIN)

bench-backup: controlplane ## Backup engine benchmark: 10,000 objects through kube-apiserver + S3 (table in target/bench-backup.md)
	cargo build --release
	cargo bench --bench backup --no-run
	hack/with-controlplane.sh cargo bench --bench backup

bench-baseline: controlplane ## SecurityBaseline benchmark at 100 and 1,000 namespaces (BENCH_SIZES=100 for one; table in target/bench-baseline.md)
	cargo build --release
	cargo bench --bench baseline --no-run
	hack/with-controlplane.sh cargo bench --bench baseline

bench: bench-backup bench-baseline ## Run every benchmark (bench-* targets)
