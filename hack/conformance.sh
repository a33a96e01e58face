#!/usr/bin/env bash
# Run the upstream Gateway API conformance suite (v1.6.3; profiles
# GATEWAY-TLS, GATEWAY-TCP and GATEWAY-UDP) against PortMux on an offline
# kind cluster, and write the upstream ConformanceReport to
# conformance/report.yaml, the tests it skipped with their reasons to
# conformance/skipped.txt and its output to conformance/run.log (not
# committed: 2 MB).
#
#   make conformance          (KEEP=1 keeps the cluster)
#
# Offline: nothing is pulled (the Go modules come from the module cache or
# proxy). The images are built here: PortMux (make
# docker-build), the suite's backend echo-basic from the conformance Go
# module (tagged with every name the suite's manifests use), the suite
# itself as a test binary; CoreDNS for the UDP tests is the node image's
# control-plane CoreDNS, tagged with the name the suite asks for. kind has
# no load balancer, so the suite runs as a Job inside the cluster, where
# the Gateways' Services (ClusterIP, one per Gateway) are reachable.
#
# Environment: KIND, HELM, KUBECTL, DOCKER (tools), CONFORMANCE_CLUSTER
# (kind cluster name), CONFORMANCE_NODE_IMAGE, CONFORMANCE_KIND_CONFIG,
# CONFORMANCE_TIMEOUT (the Job's, default 60m), CONFORMANCE_RUN (one test,
# -run-test), KEEP=1.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
docker=${DOCKER:-docker}
kind=${KIND:?KIND: the kind binary (make conformance sets it)}
helm=${HELM:?HELM: the helm binary (make conformance sets it)}
kubectl=${KUBECTL:-}
if [[ -z $kubectl ]]; then
	if [[ -x ${KUBEBUILDER_ASSETS:-/nonexistent}/kubectl ]]; then
		kubectl=$KUBEBUILDER_ASSETS/kubectl
	else
		kubectl=$(command -v kubectl) || die "no kubectl (KUBECTL, KUBEBUILDER_ASSETS or PATH)"
	fi
fi
cluster=${CONFORMANCE_CLUSTER:-portmux-conformance}
node_image=${CONFORMANCE_NODE_IMAGE:-portmux.local/kind-node:v1.37.2}
kind_config=${CONFORMANCE_KIND_CONFIG:-$root/hack/kindnode/kind-config.yaml}
timeout=${CONFORMANCE_TIMEOUT:-60m}
img=portmux.local/portmux:conformance
runner=portmux.local/gateway-conformance:v1.6.3
echo_tags=(v1.5.1 v1.6.0-dev.2 v1.6.0-dev.3)
coredns_want=registry.k8s.io/coredns/coredns:v1.12.2
ns=portmux-system
out=$root/conformance

"$docker" info >/dev/null 2>&1 || die "no Docker engine answers (sudo hack/kindnode/dockerd.sh starts one)"
if [[ -z ${CONFORMANCE_NODE_IMAGE:-} ]] && ! "$docker" image inspect "$node_image" >/dev/null 2>&1; then
	log "no $node_image: building the offline node image (hack/kind-node-image.sh, cached)"
	node_image=$(hack/kind-node-image.sh)
fi
"$docker" image inspect "$node_image" >/dev/null 2>&1 || die "node image $node_image missing (make kind-node-image)"

work=$(mktemp -d)
kubeconfig=$work/kubeconfig
k() { "$kubectl" --kubeconfig "$kubeconfig" "$@"; }
cleanup() {
	rc=$?
	if ((rc != 0)) && [[ -s $kubeconfig ]]; then
		log "failed; state of the cluster:"
		k get gatewayclass,gateway,tlsroute,tcproute,udproute -A -o wide >&2 || true
		k -n "$ns" get svc,pods -o wide >&2 || true
		k -n "$ns" logs deployment/portmux-controller-manager -c manager --tail=100 >&2 || true
	fi
	if [[ ${KEEP:-} == 1 ]]; then
		cp "$kubeconfig" "${TMPDIR:-/tmp}/portmux-conformance-kubeconfig" 2>/dev/null || true
		log "keeping cluster $cluster (kubeconfig ${TMPDIR:-/tmp}/portmux-conformance-kubeconfig)"
	else
		"$kind" delete cluster --name "$cluster" >/dev/null 2>&1 || true
	fi
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT

start=$SECONDS
log "building $img"
make --no-print-directory docker-build IMG="$img" DOCKER="$docker" >&2

log "building echo-basic and the suite (sigs.k8s.io/gateway-api/conformance v1.6.3)"
mkdir -p "$work/echo" "$work/runner"
(cd conformance && CGO_ENABLED=0 go build -trimpath -o "$work/echo/echo-basic" sigs.k8s.io/gateway-api/conformance/echo-basic)
(cd conformance && CGO_ENABLED=0 go test -c -trimpath -o "$work/runner/conformance.test" .)
# Both FROM scratch: static binaries; the suite reaches the API server
# through its service account and the cluster's CA.
printf 'FROM scratch\nCOPY echo-basic /echo-basic\nUSER 65532:65532\nENTRYPOINT ["/echo-basic"]\n' >"$work/echo/Dockerfile"
printf 'FROM scratch\nCOPY conformance.test /conformance.test\nENTRYPOINT ["/conformance.test"]\n' >"$work/runner/Dockerfile"
echo_images=()
for tag in "${echo_tags[@]}"; do echo_images+=("registry.k8s.io/gateway-api/echo-basic:$tag"); done
"$docker" build -q -t "${echo_images[0]}" "$work/echo" >/dev/null
for i in "${echo_images[@]:1}"; do "$docker" tag "${echo_images[0]}" "$i"; done
"$docker" build -q -t "$runner" "$work/runner" >/dev/null
if ! "$docker" image inspect "$coredns_want" >/dev/null 2>&1; then
	have=$("$docker" images --format '{{.Repository}}:{{.Tag}}' registry.k8s.io/coredns/coredns | head -n1)
	[[ -n $have ]] || die "no registry.k8s.io/coredns/coredns image to stand for $coredns_want"
	log "tagging $have as $coredns_want"
	"$docker" tag "$have" "$coredns_want"
fi
log "images built in $((SECONDS - start))s"

log "creating kind cluster $cluster ($node_image)"
"$kind" delete cluster --name "$cluster" >/dev/null 2>&1 || true
"$kind" create cluster --name "$cluster" --image "$node_image" --config "$kind_config" \
	--kubeconfig "$kubeconfig" --wait 5m >&2
"$kind" load docker-image --name "$cluster" "$img" "$runner" "${echo_images[@]}" "$coredns_want" >&2

# The whole standard channel of v1.6.3, as a cluster has it: the suite's
# manifests hold HTTPRoutes even in tests of the Gateway feature
# (config/gateway-api holds only the resources PortMux implements).
crds=$(cd conformance && go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api)/config/crd/standard
log "installing the Gateway API CRDs ($crds) and PortMux"
k apply --server-side -f "$crds" >&2
# The suite's pod is one client opening hundreds of connections (weighted
# routing): the per-client caps of Gateway listeners are off for it, as the
# benchmarks raise them; they are tested in controllers/ (TestGatewayClientLimits).
"$helm" --kubeconfig "$kubeconfig" install portmux charts/portmux --namespace "$ns" --create-namespace \
	--set image.repository="${img%:*}" --set image.tag="${img##*:}" --set image.pullPolicy=Never \
	--set service.type=ClusterIP --set gatewayAPI=on \
	--set gatewayClientLimits.maxConnectionsPerClient=0 --set gatewayClientLimits.maxConnectionRatePerClient=0 \
	--set gatewayClass.create=true --set gatewayClass.name=portmux \
	--set-json 'portPolicy=[{"ports":"*","namespaces":["*"]}]' \
	--wait --timeout 5m >&2
k wait --for=condition=Accepted gatewayclass/portmux --timeout=2m >&2
log "cluster ready in $((SECONDS - start))s"

version=$(git describe --always --dirty 2>/dev/null || echo dev)
args=(-test.v -test.timeout="$timeout" -test.run=TestConformance
	-gateway-class=portmux -conformance-profiles=GATEWAY-TLS,GATEWAY-TCP,GATEWAY-UDP
	-report-output=/tmp/report.yaml -organization=portmux -project=portmux
	-url=https://github.com/portmux/portmux -version="$version" -contact=https://github.com/portmux/portmux/issues)
[[ -n ${CONFORMANCE_RUN:-} ]] && args+=(-run-test="$CONFORMANCE_RUN")
json_args=$(printf '"%s",' "${args[@]}")
k apply -f - >&2 <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: gateway-conformance, namespace: default}
---
# The suite creates namespaces, CRD-backed objects and Deployments, and
# reads everything: a throwaway cluster, a throwaway admin.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: gateway-conformance}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: ServiceAccount, name: gateway-conformance, namespace: default}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: gateway-conformance, namespace: default}
spec:
  backoffLimit: 0
  template:
    spec:
      serviceAccountName: gateway-conformance
      restartPolicy: Never
      containers:
      - name: suite
        image: $runner
        imagePullPolicy: Never
        args: [${json_args%,}]
        volumeMounts: [{name: tmp, mountPath: /tmp}]
      volumes: [{name: tmp, emptyDir: {}}]
EOF
log "running the suite (Job default/gateway-conformance, timeout $timeout)"
k -n default wait --for=condition=Ready pod -l job-name=gateway-conformance --timeout=5m >&2 || true
k -n default logs -f job/gateway-conformance >"$work/run.log" 2>&1 || true
# The log may end before the Job's status does.
for _ in $(seq 60); do
	st=$(k -n default get job gateway-conformance -o jsonpath='{.status.succeeded}/{.status.failed}')
	[[ $st != / ]] && break
	sleep 2
done
mkdir -p "$out"
sed '/^----- BEGIN CONFORMANCE REPORT -----$/,/^----- END CONFORMANCE REPORT -----$/d' "$work/run.log" >"$out/run.log"
sed -n '/^----- BEGIN CONFORMANCE REPORT -----$/,/^----- END CONFORMANCE REPORT -----$/p' "$work/run.log" |
	sed '1d;$d' >"$out/report.yaml"
# Every test the suite skipped, with its reason, by reason.
grep -E 'Skipping [A-Za-z0-9]+: ' "$out/run.log" | sed -E 's/.*Skipping ([A-Za-z0-9]+): (.*)$/\2: \1/' | sort >"$out/skipped.txt" || true
log "suite done in $((SECONDS - start))s: Job succeeded/failed=$st; report conformance/report.yaml, output conformance/run.log"
grep -E '^(--- FAIL|--- PASS|--- SKIP|FAIL|ok|PASS)' "$out/run.log" | grep -v '^    ' | tail -n 40 >&2 || true
[[ -s $out/report.yaml ]] || die "no report in the suite's output"
[[ $st == 1/ ]] || die "the suite failed (conformance/run.log)"
