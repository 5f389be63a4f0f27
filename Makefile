# Image URL to use all building/pushing image targets
IMG ?= kubervisor/controller:latest

# Kubernetes version of the control plane the tests run against (built from source when it cannot be
# downloaded; see hack/envtest-assets.sh).
ENVTEST_K8S_VERSION ?= 1.37.1

# Get the currently used golang install path (in GOPATH/bin, unless GOBIN is set)
ifeq (,$(shell go env GOBIN))
GOBIN=$(shell go env GOPATH)/bin
else
GOBIN=$(shell go env GOBIN)
endif

# CONTAINER_TOOL defines the container tool to be used for building images.
CONTAINER_TOOL ?= docker

# Setting SHELL to bash allows bash commands to be executed by recipes.
SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Display this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate CRDs and RBAC (ClusterRole) from the markers.
	"$(CONTROLLER_GEN)" rbac:roleName=manager-role crd paths="./..." output:crd:artifacts:config=config/crd/bases
	@# The schema of the fields that take a number or a string, which controller-gen cannot write.
	go run ./hack/crddecimal

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods.
	"$(CONTROLLER_GEN)" object:headerFile="hack/boilerplate.go.txt" paths="./..."

.PHONY: fmt
fmt: ## Run go fmt against code.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet against code (e2e code included).
	go vet ./...
	go vet -tags e2e ./test/...

.PHONY: verify
verify: manifests generate fmt helm-chart ## Regenerate everything, then fail if anything differs from what is committed.
	@if [ -n "$$(git status --porcelain -- api config internal cmd test hack dist Makefile PROJECT)" ]; then \
		echo "Generated or formatted files are out of date:"; git status --porcelain -- api config internal cmd test hack dist Makefile PROJECT; \
		git --no-pager diff --stat; exit 1; fi

.PHONY: envtest-assets
envtest-assets: setup-envtest ## Obtain kube-apiserver, etcd, kubectl, kube-controller-manager into bin/k8s/<version>.
	K8S_VERSION=$(ENVTEST_K8S_VERSION) hack/envtest-assets.sh "$(LOCALBIN)" >/dev/null

KUBEBUILDER_ASSETS = $(LOCALBIN)/k8s/$(ENVTEST_K8S_VERSION)

# The real node (SPEC §13): the kubelet and kube-scheduler of the control plane's version, built from source
# and cached like it (~/.cache/kubervisor); containerd, runc and the CNI plugins from Debian.
NODE_PACKAGES ?= containerd runc containernetworking-plugins
.PHONY: node-assets
node-assets: envtest-assets ## Obtain the kubelet and kube-scheduler into bin/k8s/<version>, and containerd, runc and the CNI plugins from Debian.
	K8S_BINARIES="kubelet kube-scheduler" K8S_VERSION=$(ENVTEST_K8S_VERSION) hack/envtest-assets.sh "$(LOCALBIN)" >/dev/null
	@command -v containerd >/dev/null && command -v runc >/dev/null && test -x /usr/lib/cni/bridge || { \
		echo "node-assets: installing $(NODE_PACKAGES) from Debian"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(NODE_PACKAGES) >/dev/null; }

TEST_PKGS ?= ./...
GO_TEST_FLAGS ?=

.PHONY: test
test: manifests generate fmt vet envtest-assets kustomize helm test-rules ## Unit and envtest suites (fast; no Prometheus, no controller-manager).
	KUBEBUILDER_ASSETS="$(KUBEBUILDER_ASSETS)" go test $(GO_TEST_FLAGS) $$(go list $(TEST_PKGS) | grep -v /test/e2e) -coverprofile cover.out

# The packages with native fuzz targets (func FuzzXxx), and how long `make fuzz` runs each target.
FUZZ_PKGS ?= ./internal/detector ./hack/crddecimal
FUZZTIME ?= 10s

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME (default 10s), one at a time; an input that breaks one is written to testdata/fuzz.
	hack/fuzz.sh "$(FUZZTIME)" $(FUZZ_PKGS)

E2E_GINKGO_FLAGS ?= -ginkgo.v -ginkgo.timeout=50m
# The Ginkgo suites behind the e2e tag, run one at a time: each starts its own cluster (test/fleet's unit
# tests run in `make test`).
E2E_PKGS ?= ./test/cluster/... ./test/e2e/... ./test/packaging/... ./test/demo/... ./test/bench/...

.PHONY: prometheus
prometheus: ## Make sure a Prometheus binary is available (bin/prometheus, Debian's, or installed from Debian).
	@test/cluster/ensure-prometheus.sh >/dev/null

.PHONY: test-rules
test-rules: prometheus ## Alerting rules: promtool check rules, then their unit tests (config/prometheus/tests).
	@promtool="$$(dirname "$$(test/cluster/ensure-prometheus.sh)")/promtool"; [ -x "$$promtool" ] || promtool=promtool; \
	"$$promtool" check rules config/prometheus/kubervisor-rules.yaml && \
	cd config/prometheus/tests && "$$promtool" test rules *.yaml

.PHONY: test-e2e
test-e2e: build envtest-assets kustomize helm prometheus prom-label-proxy ## End-to-end suite: control plane, controller-manager, Prometheus, the manager binary.
	KUBEBUILDER_ASSETS="$(KUBEBUILDER_ASSETS)" go test -v -p 1 -tags e2e -timeout 60m -count=1 $(E2E_PKGS) $(E2E_GINKGO_FLAGS)

.PHONY: test-e2e-node
test-e2e-node: node-assets images helm prometheus ## End-to-end suite on a real node: the chart installed with helm from the project's image, real pods (root).
	KUBEBUILDER_ASSETS="$(KUBEBUILDER_ASSETS)" go test -v -tags e2e -timeout 30m -count=1 ./test/node/ $(E2E_GINKGO_FLAGS)

.PHONY: demo
demo: build envtest-assets kustomize prometheus ## Run Kubervisor live on a local control plane, a real Prometheus and a demo fleet (Ctrl-C stops).
	KUBEBUILDER_ASSETS="$(KUBEBUILDER_ASSETS)" go run ./test/demo $(DEMO_ARGS)

.PHONY: bench
bench: ## Benchmarks of the hot paths (detection, floor); numbers go in closing notes.
	go test -run '^$$' -bench . -benchmem ./internal/...

BENCH_SCALE_ARGS ?=
.PHONY: bench-scale
bench-scale: envtest-assets kustomize ## 10,000 pods under 1,000 KubervisorServices on the local cluster (test/bench/scale; flags in BENCH_SCALE_ARGS).
	go build -o bin/manager ./cmd/
	KUBEBUILDER_ASSETS="$(KUBEBUILDER_ASSETS)" go run ./test/bench/scale $(BENCH_SCALE_ARGS)

.PHONY: lint
lint: golangci-lint ## Run golangci-lint.
	"$(GOLANGCI_LINT)" run

.PHONY: lint-fix
lint-fix: golangci-lint ## Run golangci-lint and fix what it can.
	"$(GOLANGCI_LINT)" run --fix

##@ Build

.PHONY: build
build: manifests generate fmt vet ## Build the manager and the kubectl plugin into bin/.
	go build -o bin/manager cmd/main.go
	go build -o bin/kubectl-kubervisor ./cmd/kubectl-kubervisor

.PHONY: run
run: manifests generate fmt vet ## Run a controller from your host against the current kubeconfig.
	go run ./cmd/main.go

.PHONY: images
images: ## Build the images of the real-node tests without a container engine: bin/images/*.tar, for `ctr -n k8s.io images import`.
	go run ./test/image/cmd/build-images -out "$(LOCALBIN)/images"

.PHONY: docker-build
docker-build: ## Build docker image with the manager (needs a container engine).
	$(CONTAINER_TOOL) build -t ${IMG} .

.PHONY: docker-push
docker-push: ## Push docker image with the manager.
	$(CONTAINER_TOOL) push ${IMG}

.PHONY: build-installer
build-installer: manifests generate kustomize ## Generate dist/install.yaml: CRDs and deployment in one file.
	mkdir -p dist
	cd config/manager && "$(KUSTOMIZE)" edit set image controller=${IMG}
	"$(KUSTOMIZE)" build config/default > dist/install.yaml

##@ Deployment

ifndef ignore-not-found
  ignore-not-found = false
endif

.PHONY: install
install: manifests kustomize ## Install CRDs into the cluster of ~/.kube/config.
	@out="$$( "$(KUSTOMIZE)" build config/crd 2>/dev/null || true )"; \
	if [ -n "$$out" ]; then echo "$$out" | "$(KUBECTL)" apply -f -; else echo "No CRDs to install; skipping."; fi

.PHONY: uninstall
uninstall: manifests kustomize ## Uninstall CRDs from the cluster of ~/.kube/config.
	@out="$$( "$(KUSTOMIZE)" build config/crd 2>/dev/null || true )"; \
	if [ -n "$$out" ]; then echo "$$out" | "$(KUBECTL)" delete --ignore-not-found=$(ignore-not-found) -f -; else echo "No CRDs to delete; skipping."; fi

.PHONY: deploy
deploy: manifests kustomize ## Deploy the controller to the cluster of ~/.kube/config.
	cd config/manager && "$(KUSTOMIZE)" edit set image controller=${IMG}
	"$(KUSTOMIZE)" build config/default | "$(KUBECTL)" apply -f -

.PHONY: undeploy
undeploy: kustomize ## Undeploy the controller from the cluster of ~/.kube/config.
	"$(KUSTOMIZE)" build config/default | "$(KUBECTL)" delete --ignore-not-found=$(ignore-not-found) -f -

##@ Dependencies

## Location to install dependencies to
LOCALBIN ?= $(shell pwd)/bin
$(LOCALBIN):
	mkdir -p "$(LOCALBIN)"

## Tool Binaries
KUBECTL ?= $(KUBEBUILDER_ASSETS)/kubectl
KUSTOMIZE ?= $(LOCALBIN)/kustomize
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
ENVTEST ?= $(LOCALBIN)/setup-envtest
GOLANGCI_LINT = $(LOCALBIN)/golangci-lint-custom
KUBEBUILDER ?= $(LOCALBIN)/kubebuilder
HELM ?= $(LOCALBIN)/helm
PROM_LABEL_PROXY ?= $(LOCALBIN)/prom-label-proxy

## Tool Versions
KUSTOMIZE_VERSION ?= v5.8.1
CONTROLLER_TOOLS_VERSION ?= v0.23.0
ENVTEST_VERSION ?= v0.0.0-20260305142021-f9589b9f2b9d
KUBEBUILDER_VERSION ?= v4.16.0
HELM_VERSION ?= v3.22.0
PROM_LABEL_PROXY_VERSION ?= v0.11.1
# golangci-lint and its logcheck plugin: the versions are those of .custom-gcl.yml.
GOLANGCI_LINT_VERSION ?= $(shell sed -n 's/^version: *//p' .custom-gcl.yml)
LOGTOOLS_VERSION ?= $(shell sed -n 's/^ \{1,\}version: *//p' .custom-gcl.yml)

.PHONY: kustomize
kustomize: $(KUSTOMIZE) ## Download kustomize locally if necessary.
$(KUSTOMIZE): $(LOCALBIN)
	$(call go-install-tool,$(KUSTOMIZE),sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION))

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN) ## Download controller-gen locally if necessary.
$(CONTROLLER_GEN): $(LOCALBIN)
	$(call go-install-tool,$(CONTROLLER_GEN),sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION))

.PHONY: setup-envtest
setup-envtest: $(ENVTEST) ## Download setup-envtest locally if necessary.
$(ENVTEST): $(LOCALBIN)
	$(call go-install-tool,$(ENVTEST),sigs.k8s.io/controller-runtime/tools/setup-envtest,$(ENVTEST_VERSION))

.PHONY: kubebuilder
kubebuilder: $(KUBEBUILDER) ## Build the Kubebuilder CLI locally if necessary (it generates the Helm chart).
$(KUBEBUILDER): $(LOCALBIN)
	$(call go-install-tool,$(KUBEBUILDER),sigs.k8s.io/kubebuilder/v4,$(KUBEBUILDER_VERSION))

.PHONY: helm
helm: $(HELM) ## Build the helm CLI locally if necessary.
$(HELM): $(LOCALBIN)
	$(call go-install-tool,$(HELM),helm.sh/helm/v3/cmd/helm,$(HELM_VERSION))

.PHONY: prom-label-proxy
prom-label-proxy: $(PROM_LABEL_PROXY) ## Build prom-label-proxy locally if necessary (the e2e tenant-header spec runs it).
$(PROM_LABEL_PROXY): $(LOCALBIN)
	$(call go-install-tool,$(PROM_LABEL_PROXY),github.com/prometheus-community/prom-label-proxy,$(PROM_LABEL_PROXY_VERSION))

.PHONY: golangci-lint
golangci-lint: $(LOCALBIN) ## Build golangci-lint with the logcheck plugin (.custom-gcl.yml) locally if necessary.
	@bin="$(GOLANGCI_LINT)-$(GOLANGCI_LINT_VERSION)-logtools-$(LOGTOOLS_VERSION)"; \
	[ -x "$$bin" ] || { echo "Building golangci-lint $(GOLANGCI_LINT_VERSION) with logcheck $(LOGTOOLS_VERSION)"; \
		hack/golangci-lint-custom.sh "$$bin" "$(GOLANGCI_LINT_VERSION)" "$(LOGTOOLS_VERSION)"; }; \
	ln -sf "$$bin" "$(GOLANGCI_LINT)"

# go-install-tool will 'go install' any package with custom target and name of binary, if it doesn't exist
# $1 - target path with name of binary
# $2 - package url which can be installed
# $3 - specific version of package
define go-install-tool
@[ -f "$(1)-$(3)" ] && [ "$$(readlink -- "$(1)" 2>/dev/null)" = "$(1)-$(3)" ] || { \
set -e; \
package=$(2)@$(3) ;\
echo "Downloading $${package}" ;\
rm -f "$(1)" ;\
GOBIN="$(LOCALBIN)" go install $${package} ;\
mv "$(LOCALBIN)/$$(basename "$(1)")" "$(1)-$(3)" ;\
} ;\
ln -sf "$$(realpath "$(1)-$(3)")" "$(1)"
endef

##@ Helm Deployment

## The chart in dist/chart is generated by `kubebuilder edit --plugins=helm/v2-alpha` from config/default
## (make helm-chart; make verify regenerates it). Only values.yaml is hand-kept: the generator preserves it.
## Namespace to deploy the Helm release
HELM_NAMESPACE ?= kubervisor-system
## Name of the Helm release
HELM_RELEASE ?= kubervisor
## Path to the Helm chart directory
HELM_CHART_DIR ?= dist/chart
## Additional arguments to pass to helm commands
HELM_EXTRA_ARGS ?=

.PHONY: helm-chart
helm-chart: manifests kustomize kubebuilder ## Regenerate dist/chart from config/default.
	"$(KUBEBUILDER)" edit --plugins=helm/v2-alpha
	@# The generator also writes a GitHub workflow and dist/install.yaml; this project uses neither.
	rm -rf .github dist/install.yaml

.PHONY: helm-lint
helm-lint: helm ## Lint the chart.
	"$(HELM)" lint $(HELM_CHART_DIR)

.PHONY: helm-deploy
helm-deploy: helm ## Deploy manager to the K8s cluster via Helm. Specify an image with IMG.
	IMG="$(IMG)"; "$(HELM)" upgrade --install $(HELM_RELEASE) $(HELM_CHART_DIR) \
		--namespace $(HELM_NAMESPACE) \
		--create-namespace \
		--set manager.image.repository=$${IMG%:*} \
		--set manager.image.tag=$${IMG##*:} \
		--wait \
		--timeout 5m \
		$(HELM_EXTRA_ARGS)

.PHONY: helm-uninstall
helm-uninstall: helm ## Uninstall the Helm release from the K8s cluster.
	"$(HELM)" uninstall $(HELM_RELEASE) --namespace $(HELM_NAMESPACE)

.PHONY: helm-status
helm-status: helm ## Show Helm release status.
	"$(HELM)" status $(HELM_RELEASE) --namespace $(HELM_NAMESPACE)

.PHONY: helm-history
helm-history: helm ## Show Helm release history.
	"$(HELM)" history $(HELM_RELEASE) --namespace $(HELM_NAMESPACE)

.PHONY: helm-rollback
helm-rollback: helm ## Rollback to previous Helm release.
	"$(HELM)" rollback $(HELM_RELEASE) --namespace $(HELM_NAMESPACE)
