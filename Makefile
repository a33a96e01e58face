# PortMux — one port, many protocols, on Kubernetes.
#
# Tools are pinned and installed into ./bin from the Go module proxy; nothing
# here downloads a prebuilt binary.

# Versions. charts/portmux/Chart.yaml is the single source of the release
# version: its `version` (kept equal to `appVersion`, which test/chart checks)
# tags the image, and the chart's image tag defaults to appVersion. VERSION is
# what the binary reports (`portmux version`): the git description.
CHART_DIR := charts/portmux
CHART_VERSION := $(shell awk '$$1 == "version:" { print $$2; exit }' $(CHART_DIR)/Chart.yaml)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

# The image. Its base images are build arguments, so a mirror can stand in
# for a registry; without them `make docker-build` builds FROM scratch.
IMG ?= portmux.local/portmux:$(CHART_VERSION)
GO_IMAGE ?= golang:1.26
RUNTIME_IMAGE ?= gcr.io/distroless/static:nonroot
DOCKER ?= docker
# Set to 1 to skip the base images and build Dockerfile.offline at once.
DOCKER_OFFLINE ?=
# The host's CA bundle, copied into the offline image (Debian's path).
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
KIND_CLUSTER ?= portmux

# Pinned tool versions.
CONTROLLER_TOOLS_VERSION ?= v0.23.0
GOLANGCI_LINT_VERSION ?= v2.15.0
HELM_VERSION ?= v3.22.0
KIND_VERSION ?= v0.33.0
H2SPEC_VERSION ?= v2.2.1+incompatible

LOCALBIN ?= $(shell pwd)/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
HELM ?= $(LOCALBIN)/helm-$(HELM_VERSION)
KIND ?= $(LOCALBIN)/kind-$(KIND_VERSION)
H2SPEC ?= $(LOCALBIN)/h2spec-$(H2SPEC_VERSION)

GO ?= go
GOTEST_FLAGS ?= -race -count=1
FUZZTIME ?= 10s
E2E_TIMEOUT ?= 45m

# Every recipe runs in bash with errors fatal, so a failing pipeline fails.
SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Display this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate the CRD and RBAC from the markers (config/ and the chart).
	$(CONTROLLER_GEN) rbac:roleName=portmux-manager crd paths="./api/..." paths="./controllers/..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	@# The chart ships the same CRDs and renders its ClusterRole's rules from the same file.
	rm -f $(CHART_DIR)/crds/*.yaml
	cp config/crd/bases/*.yaml $(CHART_DIR)/crds/
	cp config/rbac/role.yaml $(CHART_DIR)/files/manager-role.yaml

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods from the markers.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## Run gofmt on the code.
	$(GO) fmt ./...

.PHONY: vet
vet: ## Run go vet.
	$(GO) vet ./...

.PHONY: lint
lint: golangci-lint ## Run golangci-lint (config in .golangci.yml).
	$(GOLANGCI_LINT) run ./...

.PHONY: verify
verify: generate manifests ## Fail when generated files differ from the markers, code is not gofmt'ed, does not build for macOS, or golangci-lint finds anything.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	@git diff --exit-code -- api config charts || { echo "generated files are stale: run 'make generate manifests' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- api config charts)" || { echo "untracked generated files:"; git status --porcelain -- api config charts; exit 1; }
	@# The dataplane falls back to goroutines where there is no epoll:
	@# it must build off Linux (the benchmark harnesses are Linux's).
	GOOS=darwin $(GO) build ./...
	$(MAKE) --no-print-directory lint

.PHONY: envtest
envtest: ## Build (or reuse) the offline test control plane; prints its directory.
	@hack/envtest-assets.sh

.PHONY: test
test: vet helm h2spec ## Run every test: unit, fuzz seeds, real peers, envtest on a real API server, the chart; then a short fuzz run.
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" HELM="$(HELM)" H2SPEC="$(H2SPEC)" $(GO) test $(GOTEST_FLAGS) ./...
	$(GO) test $(GOTEST_FLAGS) ./dataplane/ -args -relay-loops=-1
	H2SPEC="$(H2SPEC)" $(GO) test $(GOTEST_FLAGS) ./dataplane/h2/ -args -relay-loops
	$(MAKE) --no-print-directory fuzz FUZZTIME=$(FUZZTIME_TEST)

.PHONY: helm-lint
helm-lint: helm ## Lint the chart (test/chart also lints it, renders it and dry-runs it on the API server).
	$(HELM) lint --strict $(CHART_DIR)

# The kind e2e's node image: kind's own (E2E_NODE_IMAGE_OFFICIAL, the test's
# default) when it is present or can be pulled, else the one
# hack/kind-node-image.sh builds from Debian packages and the Go module proxy
# (cached; a cold build compiles for a long while), with the cluster config
# patches it needs and its Debian base for the peers image. Setting
# PORTMUX_E2E_NODE_IMAGE skips all this. Without a Docker engine the test
# skips (hack/kindnode/dockerd.sh starts one).
E2E_NODE_IMAGE_OFFICIAL ?= kindest/node:v1.37.0@sha256:a1ed56cfb0e7b93589bdf97c8cd566405a265939e3620fc4f5de89adff580ae5
E2E_PEERS_BASE_OFFICIAL ?= debian:bookworm-slim

.PHONY: test-e2e
test-e2e: helm kind ## Run the kind e2e suite (test/e2e, tag e2e): image, chart, cluster, traffic. Skips without Docker.
	@have() { $(DOCKER) image inspect "$$1" >/dev/null 2>&1 || $(DOCKER) pull -q "$$1" >/dev/null 2>&1; }; \
	if [ -z "$$PORTMUX_E2E_NODE_IMAGE" ] && $(DOCKER) info >/dev/null 2>&1 && ! have "$(E2E_NODE_IMAGE_OFFICIAL)"; then \
	  echo "test-e2e: $(E2E_NODE_IMAGE_OFFICIAL) unavailable: using hack/kind-node-image.sh's node image"; \
	  PORTMUX_E2E_NODE_IMAGE=$$(KIND_VERSION=$(KIND_VERSION) hack/kind-node-image.sh); \
	  export PORTMUX_E2E_NODE_IMAGE PORTMUX_E2E_KIND_CONFIG=$${PORTMUX_E2E_KIND_CONFIG:-$(CURDIR)/hack/kindnode/kind-config.yaml}; \
	  if [ -z "$$PORTMUX_E2E_PEERS_BASE" ] && ! have "$(E2E_PEERS_BASE_OFFICIAL)"; then export PORTMUX_E2E_PEERS_BASE=portmux.local/debian:bookworm; fi; \
	fi; \
	echo "test-e2e: node image $${PORTMUX_E2E_NODE_IMAGE:-the test default}"; \
	KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" HELM="$(HELM)" KIND="$(KIND)" \
		$(GO) test -tags e2e -count=1 -v -timeout $(E2E_TIMEOUT) ./test/e2e/ -run '^TestKind'

# A short run of each fuzz target in `make test`.
FUZZTIME_TEST ?= 3s

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 10s; hack/fuzz.sh).
	FUZZTIME=$(FUZZTIME) GO=$(GO) hack/fuzz.sh

SCALE ?= 100,1000,10000
SCALE_FLAGS ?=

.PHONY: bench
bench: bench-go bench-mux bench-udp bench-tls bench-http bench-tunnel ## Run the Go benchmarks, muxload against portmux, haproxy and sslh (TCP) and nginx (UDP), TLS termination against haproxy, http mode against haproxy and nginx, and tunnels (ws://, wss://) against wstunnel.

.PHONY: bench-go
bench-go: ## Run the Go benchmarks (sniffers, routing, forwarding, tunnels, whole connections).
	$(GO) test -run='^$$' -bench=. -benchmem ./...

.PHONY: bench-tunnel
bench-tunnel: ## Compare portmux tunnels (ws:// and wss://) with wstunnel 1.4.0 (npm; behind nginx for TLS), minimal relay chains (plain, masked, TLS: the ceilings) and a direct connection (hack/bench-tunnel.sh).
	hack/bench-tunnel.sh

.PHONY: bench-mux
bench-mux: ## Run hack/bench/muxload against portmux serve beside haproxy, sslh and a minimal Go relay (the floor of Go's net), interleaved; results in bin/bench (REPS, D, TPUT, SCEN, PEERS; RELOAD=N adds the reload cost with N held connections, portmux vs haproxy).
	hack/bench.sh

# The soak's knobs: how long the attack lasts and the memory limit of
# portmux's cgroup (the chart's default limit).
SOAK_DURATION ?= 60s
SOAK_LIMIT ?= 512Mi
SOAK_OUT ?= soak-results

.PHONY: soak
soak: build ## Attack portmux serve (slowloris, 1 MiB headers, hogs, dribbled regex probes, garbage, HTTP/2 rapid resets and stalled windows) while real SSH, TLS and HTTP clients use it; report their success and latency, peak memory against SOAK_LIMIT, leaks (hack/soak).
	$(GO) run ./hack/soak -portmux $(LOCALBIN)/portmux -duration $(SOAK_DURATION) -limit $(SOAK_LIMIT) -out $(SOAK_OUT)

.PHONY: bench-udp
bench-udp: ## Run muxload's UDP scenarios against portmux's UDP dataplane beside nginx's stream module, sslh where it has UDP and a direct path, interleaved; results in bin/bench (REPS, D, SCEN, PEERS, WINDOW).
	hack/bench-udp.sh

.PHONY: bench-http
bench-http: ## http mode: portmux serve beside haproxy (mode http), the Go floors (go-minimal, go-loop) and nginx direct, wrk (HTTP/1.1) and h2load (HTTP/2), plain and TLS, interleaved; results in bin/bench (REPS, D, PEERS, SCEN, C, T, PPROF).
	hack/bench-http.sh

.PHONY: bench-scale
bench-scale: build ## Manager at scale on the envtest API server: N PortMuxes with a Service and EndpointSlice each; time to all Ready, new PortMux and EndpointSlice change until the dataplane has them (p50/p99), manager CPU per EndpointSlice event, RSS/heap, snapshot size, bytes sent per change (SCALE=100,1000,10000, SCALE_FLAGS, PROFILE=1); results in bin/bench/scale.
	KUBEBUILDER_ASSETS=$$(hack/envtest-assets.sh) $(GO) run ./hack/bench/scale -portmux $(LOCALBIN)/portmux -scales $(SCALE) $(SCALE_FLAGS)

.PHONY: bench-syscalls
bench-syscalls: ## System calls per routed connection under strace -c -f: portmux serve beside haproxy and go-minimal (SCEN, PEERS, C, D, TOP); results in bin/bench-syscalls.
	hack/bench-syscalls.sh

.PHONY: bench-tls
bench-tls: ## TLS termination, portmux serve beside haproxy with the same ECDSA and RSA certificates: handshakes/s, resumption, bulk MB/s (REPS, D, CERTS, PEERS, SCEN).
	hack/bench/tls.sh

##@ Build

.PHONY: run
run: build ## Run portmux manager against an offline API server with the CRDs (kubeconfig in bin/dev); dataplane on 127.0.0.1. Ctrl-C stops both.
	LOCALBIN=$(LOCALBIN) GO=$(GO) hack/devcluster/run.sh

.PHONY: serve
serve: build ## Run the dataplane without a cluster on config/serve/demo.yaml (127.0.0.1:8443).
	$(LOCALBIN)/portmux serve -f config/serve/demo.yaml --bind-address 127.0.0.1 --metrics-addr 127.0.0.1:9090

.PHONY: build
build: ## Build bin/portmux.
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(LOCALBIN)/portmux ./cmd/portmux

# With GO_IMAGE and RUNTIME_IMAGE present (or pullable) this is the
# Dockerfile's multi-stage build. Without them (no registry) it builds
# Dockerfile.offline: FROM scratch with bin/portmux (host architecture), an
# /etc/passwd line for uid 65532 and the host's CA bundle ($(CA_BUNDLE)).
.PHONY: docker-build
.PHONY: conformance
conformance: helm kind ## Run the Gateway API conformance suite v1.6.3 (GATEWAY-TLS, -TCP, -UDP) on an offline kind cluster; writes conformance/report.yaml and run.log (hack/conformance.sh; KEEP=1 keeps the cluster).
	KIND="$(KIND)" KIND_VERSION=$(KIND_VERSION) HELM="$(HELM)" DOCKER="$(DOCKER)" KUBEBUILDER_ASSETS="$$(hack/envtest-assets.sh)" hack/conformance.sh

docker-build: build ## Build the image IMG (offline FROM scratch when the base images are unavailable).
	@$(DOCKER) info >/dev/null 2>&1 || { echo "docker-build: no Docker engine ('$(DOCKER) info' failed)" >&2; exit 1; }
	@have() { $(DOCKER) image inspect "$$1" >/dev/null 2>&1 || $(DOCKER) pull -q "$$1" >/dev/null 2>&1; }; \
	if [ -z "$(DOCKER_OFFLINE)" ] && have "$(GO_IMAGE)" && have "$(RUNTIME_IMAGE)"; then \
	  echo "docker-build: $(IMG) from Dockerfile ($(GO_IMAGE), $(RUNTIME_IMAGE))"; \
	  $(DOCKER) build --build-arg GO_IMAGE="$(GO_IMAGE)" --build-arg RUNTIME_IMAGE="$(RUNTIME_IMAGE)" \
	    --build-arg VERSION="$(VERSION)" -t "$(IMG)" .; \
	else \
	  echo "docker-build: $(IMG) FROM scratch from bin/portmux (Dockerfile.offline; $(GO_IMAGE) or $(RUNTIME_IMAGE) unavailable, or DOCKER_OFFLINE set)"; \
	  test -r "$(CA_BUNDLE)" || { echo "docker-build: no CA bundle at $(CA_BUNDLE) (set CA_BUNDLE)" >&2; exit 1; }; \
	  ctx="$(LOCALBIN)/image-offline"; rm -rf "$$ctx"; mkdir -p "$$ctx/etc/ssl/certs"; \
	  cp "$(LOCALBIN)/portmux" "$$ctx/portmux"; \
	  cp "$(CA_BUNDLE)" "$$ctx/etc/ssl/certs/ca-certificates.crt"; \
	  echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' > "$$ctx/etc/passwd"; \
	  echo 'nonroot:x:65532:' > "$$ctx/etc/group"; \
	  $(DOCKER) build -f Dockerfile.offline --build-arg VERSION="$(VERSION)" -t "$(IMG)" "$$ctx"; \
	fi

.PHONY: kind-node-image
kind-node-image: ## Build (or reuse) the offline kind node image and its control-plane images (hack/kind-node-image.sh); prints its name.
	@KIND_VERSION=$(KIND_VERSION) hack/kind-node-image.sh

.PHONY: kind-load
kind-load: kind ## Load the image IMG into the kind cluster KIND_CLUSTER.
	$(KIND) load docker-image "$(IMG)" --name "$(KIND_CLUSTER)"

.PHONY: helm-package
helm-package: helm ## Package the chart into bin/ (portmux-$(CHART_VERSION).tgz).
	$(HELM) package $(CHART_DIR) --destination $(LOCALBIN)

##@ Tools

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN) ## Install controller-gen into ./bin.
$(CONTROLLER_GEN):
	@mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(LOCALBIN)/controller-gen $@

.PHONY: golangci-lint
golangci-lint: $(GOLANGCI_LINT) ## Install golangci-lint into ./bin.
$(GOLANGCI_LINT):
	@mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(LOCALBIN)/golangci-lint $@

.PHONY: helm
helm: $(HELM) ## Install helm into ./bin (built from the Go module proxy; takes a few minutes cold).
# Stamped as helm's own Makefile does: without it `helm version` says
# "v3.22" and `helm template` assumes Kubernetes v1.20. HELM_KUBE_MINOR is the
# minor of the k8s.io/client-go that helm $(HELM_VERSION) requires (v0.37).
HELM_KUBE_MINOR ?= 37
HELM_LDFLAGS = -s -w -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
	-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$(HELM_KUBE_MINOR) \
	-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$(HELM_KUBE_MINOR)
$(HELM):
	@mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) $(GO) install -trimpath -ldflags '$(HELM_LDFLAGS)' helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	mv $(LOCALBIN)/helm $@

.PHONY: h2spec
h2spec: $(H2SPEC) ## Install h2spec (the HTTP/2 conformance client dataplane/h2's tests run) into ./bin.
$(H2SPEC):
	@mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) $(GO) install github.com/summerwind/h2spec/cmd/h2spec@$(H2SPEC_VERSION)
	mv $(LOCALBIN)/h2spec $@

.PHONY: kind
kind: $(KIND) ## Install kind into ./bin.
$(KIND):
	@mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) $(GO) install sigs.k8s.io/kind@$(KIND_VERSION)
	mv $(LOCALBIN)/kind $@
