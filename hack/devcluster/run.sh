#!/usr/bin/env bash
# `make run`: PortMux's controller and dataplane against an offline API server.
#
# 1. builds the control plane (hack/envtest-assets.sh, cached) and starts it
#    with hack/devcluster, which installs the CRDs and writes an admin
#    kubeconfig to $DEV_DIR/kubeconfig;
# 2. waits for that kubeconfig;
# 3. runs `portmux manager` against it in the foreground, its dataplane and
#    endpoints on 127.0.0.1 only.
#
# Ctrl-C (or SIGTERM) stops the manager, then the API server and etcd.
# Expects bin/portmux to be built (make run does it).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
LOCALBIN=${LOCALBIN:-$root/bin}
DEV_DIR=${DEV_DIR:-$LOCALBIN/dev}
GO=${GO:-go}
METRICS_ADDR=${METRICS_ADDR:-127.0.0.1:8080}
PROBE_ADDR=${PROBE_ADDR:-127.0.0.1:8081}
kubeconfig=$DEV_DIR/kubeconfig

# shellcheck source=hack/lib.sh
source "$root/hack/lib.sh"

[[ -x $LOCALBIN/portmux ]] || { log "$LOCALBIN/portmux is missing: run make build"; exit 1; }
assets=$(hack/envtest-assets.sh)
kubectl=$assets/kubectl
"$GO" build -o "$LOCALBIN/devcluster" ./hack/devcluster

mkdir -p "$DEV_DIR"
rm -f "$kubeconfig"

dc= mgr=
cleanup() {
	trap - INT TERM
	if [[ -n $mgr ]] && kill -0 "$mgr" 2>/dev/null; then
		kill -TERM "$mgr" 2>/dev/null || true
		wait "$mgr" 2>/dev/null || true
	fi
	if [[ -n $dc ]] && kill -0 "$dc" 2>/dev/null; then
		kill -TERM "$dc" 2>/dev/null || true
		wait "$dc" 2>/dev/null || true
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

KUBEBUILDER_ASSETS=$assets "$LOCALBIN/devcluster" --kubeconfig "$kubeconfig" --crd-dir config/crd/bases &
dc=$!

# The kubeconfig is renamed into place once the API server serves the CRDs.
deadline=$((SECONDS + 120))
until [[ -f $kubeconfig ]]; do
	kill -0 "$dc" 2>/dev/null || { wait "$dc" || true; log "devcluster exited before it was ready"; exit 1; }
	((SECONDS < deadline)) || { log "devcluster not ready after 120s"; exit 1; }
	sleep 0.1
done

rel=${kubeconfig#"$root"/}
version=$("$kubectl" version --client 2>/dev/null | sed -n 's/^Client Version: //p')
cat >&2 <<EOF

PortMux manager: dataplane on 127.0.0.1, metrics http://$METRICS_ADDR/metrics, readiness http://$PROBE_ADDR/readyz.
In another shell in $root, use the kubectl built with the API server ($version):

  kubectl=$kubectl
  \$kubectl --kubeconfig $rel apply -f config/samples/portmux_v1alpha1_sslh.yaml
  \$kubectl --kubeconfig $rel get pmx          # READY is False until the Services it names exist
  \$kubectl --kubeconfig $rel get pmx -o wide  # adds the REASON

Ctrl-C stops the manager, then the API server; every run starts with an empty cluster.

EOF

"$LOCALBIN/portmux" manager --kubeconfig "$kubeconfig" \
	--dataplane-bind-address 127.0.0.1 --allow-address-backends \
	--metrics-bind-address "$METRICS_ADDR" --health-probe-bind-address "$PROBE_ADDR" &
mgr=$!
# wait returns early when a trapped signal arrives; cleanup then stops both.
status=0
wait "$mgr" || status=$?
mgr=
exit "$status"
