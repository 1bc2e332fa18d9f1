# weft — run `make help` for the targets.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
.DEFAULT_GOAL := help

VERSION      ?= 0.1.0
KUBE_VERSION ?= v1.37.2
WEFT_CACHE   ?= $(HOME)/.cache/weft
export WEFT_CACHE KUBE_VERSION

GO        ?= go
BIN       := $(CURDIR)/bin
CONTROLLER_GEN = $(shell hack/tool.sh controller-gen)
TEST_FLAGS ?=
TEST_TIMEOUT ?= 40m

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-20s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Generate

.PHONY: generate
generate: generate-deepcopy manifests ## Regenerate everything derived from the Go sources.

.PHONY: generate-deepcopy
generate-deepcopy: ## Generate DeepCopy methods for the API types.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: manifests
manifests: ## Generate CRDs, RBAC and webhook configuration under config/ from markers.
	$(CONTROLLER_GEN) rbac:roleName=operator crd webhook \
		paths=./api/... paths=./controllers/... paths=./internal/... \
		output:crd:artifacts:config=config/crd/bases \
		output:rbac:artifacts:config=config/rbac \
		output:webhook:artifacts:config=config/webhook

.PHONY: verify-generated
verify-generated: ## Fail if regenerating code or manifests would change any file.
	hack/verify-generated.sh

##@ Build

.PHONY: build
build: ## Build every binary into bin/ (weft-operator, weftctl, labtool).
	$(GO) build -o $(BIN)/weft-operator ./cmd/operator
	$(GO) build -o $(BIN)/weftctl ./cmd/weftctl
	$(GO) build -o $(BIN)/labtool ./cmd/labtool

.PHONY: run
run: manifests ## Run the operator from source against the current kubeconfig (applies config/dev first).
	$$(hack/envtest-assets.sh | tail -1)/kubectl apply --server-side -k config/dev
	$(GO) run ./cmd/operator --webhook-host=127.0.0.1 --metrics-bind-address=0 --health-probe-bind-address=0

##@ Test

.PHONY: test
test: test-deps verify-generated vet ## Run every test: unit, envtest (real API server). Installs what it needs.
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh | tail -1)" \
		$(GO) test -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) ./...

.PHONY: test-deps
test-deps: ## Install what the tests need (apt packages, Kubernetes, CoreDNS and CNI binaries built from source).
	hack/envtest-assets.sh >/dev/null
	hack/lab-deps.sh >/dev/null

.PHONY: vet
vet: ## go vet and gofmt check.
	$(GO) vet ./...
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
		if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

.PHONY: lint
lint: ## Run golangci-lint with the repository's configuration.
	$$(hack/tool.sh golangci-lint) run ./...

##@ Demo

.PHONY: demo
demo: build ## Bring up the two-cluster lab, install weft, deploy a sample app and print a tour.
	hack/demo.sh

.PHONY: lab-down
lab-down: build ## Take the demo lab down.
	$(BIN)/weftctl lab down

.PHONY: clean
clean: ## Remove build output (the cache in $(WEFT_CACHE) stays).
	rm -rf $(BIN)
