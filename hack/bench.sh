#!/usr/bin/env bash
# Runs muxload (hack/bench/muxload) against `portmux serve`, haproxy 2.6 in
# tcp mode and sslh (fork) in one run, interleaved (repeat 1 of every peer,
# then repeat 2, ...), so that they are compared under the same conditions.
# Everything stays on 127.0.0.1 and every run is bounded in time.
#
# Peers (configs in hack/bench/peers/):
#   direct      no mux: the client dials the backends (the baseline)
#   portmux     portmux serve -f hack/bench/peers/portmux.yaml
#   haproxy     haproxy -db -f hack/bench/peers/haproxy.cfg
#   sslh-fork   sslh -F hack/bench/peers/sslh.cfg
#   go-minimal  hack/bench/minrelay: a reference, not a proxy. It accepts,
#               dials the SSH backend and copies both ways (splice), nothing
#               else: the floor Go's net package sets on connection rate and
#               the ceiling of one zero-copy hop on throughput. It routes
#               nothing, so it runs the SSH-routed scenarios only.
#
#   hack/bench.sh                         # 3 repeats of every scenario
#   REPS=1 SCEN=conn-ssh,tput hack/bench.sh
#   PEERS="portmux haproxy" D=3s hack/bench.sh
#
# Knobs: REPS, D (measured window of each connection scenario), TPUT (bytes
# through the throughput streams), SCEN, PEERS, C (workers), STREAMS, NICE,
# QUIET (cores of other load that mark a run disturbed), QUIET_WAIT.
# Output: bin/bench/results.jsonl, bin/bench/results-table.md, and each
# peer's log in bin/bench/logs/.
# Needs: Go, haproxy and sslh (installed from apt when missing and root).
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh
ROOT=$PWD

OUT_DIR=${OUT_DIR:-$ROOT/bin/bench}
REPS=${REPS:-3}
D=${D:-5s}
TPUT=${TPUT:-1GiB}
SCEN=${SCEN:-conn-ssh,conn-tls,lat-ssh,lat-tls,tput,idle-400,idle-2000,idle-9000}
PEERS=${PEERS:-direct portmux haproxy sslh-fork go-minimal}
C=${C:-32}
STREAMS=${STREAMS:-4}
NICE=${NICE:--10}
ADDR=127.0.0.1:17443
PEER_CONF=$ROOT/hack/bench/peers

need=()
case " $PEERS " in *" haproxy "*) command -v haproxy >/dev/null || need+=(haproxy) ;; esac
case " $PEERS " in *" sslh-fork "*) command -v sslh >/dev/null || need+=(sslh) ;; esac
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    # The packages start their system services; the benchmark runs its own.
    systemctl stop haproxy sslh 2>/dev/null || true
  else
    echo "missing ${need[*]}: install them (apt-get install ${need[*]})" >&2; exit 2
  fi
fi

mkdir -p "$OUT_DIR/logs"
rm -f "$OUT_DIR/results.jsonl" "$OUT_DIR"/logs/*.log
echo "building muxload, portmux and minrelay" >&2
go build -o "$OUT_DIR/muxload" ./hack/bench/muxload
CGO_ENABLED=0 go build -trimpath -o "$OUT_DIR/portmux" ./cmd/portmux
CGO_ENABLED=0 go build -trimpath -o "$OUT_DIR/minrelay" ./hack/bench/minrelay

# peer_args NAME sets args to muxload's flags for one peer.
peer_args() {
  case $1 in
    direct) args=(-direct) ;;
    portmux) args=(-cmd "exec $OUT_DIR/portmux serve -f $PEER_CONF/portmux.yaml --bind-address 127.0.0.1 --log-connections=false --watch=false") ;;
    haproxy) args=(-cmd "exec haproxy -db -f $PEER_CONF/haproxy.cfg") ;;
    sslh-fork) args=(-cmd "exec sslh -F$PEER_CONF/sslh.cfg") ;;
    go-minimal) args=(-routes ssh -cmd "exec $OUT_DIR/minrelay -listen $ADDR -target 127.0.0.1:17001") ;;
    *) echo "unknown peer $1 (direct, portmux, haproxy, sslh-fork, go-minimal)" >&2; exit 2 ;;
  esac
}
for peer in $PEERS; do peer_args "$peer"; done

# Everything a run starts (muxload, its backends, the mux) runs at priority
# NICE, so that other jobs on a shared box take less from a run.
bench_repeats results -addr "$ADDR" -scenarios "$SCEN" -d "$D" -warmup 1s -c "$C" \
  -tput-bytes "$TPUT" -tput-streams "$STREAMS"
