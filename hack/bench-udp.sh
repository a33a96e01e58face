#!/usr/bin/env bash
# Runs muxload's UDP scenarios (hack/bench/muxload) against PortMux's UDP
# dataplane, nginx's stream module proxying UDP, sslh's UDP mode where the
# installed sslh has one, and a direct path, in one run, interleaved
# (repeat 1 of every peer, then repeat 2, ...), so that they are compared
# under the same conditions. Everything stays on 127.0.0.1 and every run
# is bounded in time.
#
# Peers (configs in hack/bench/peers/):
#   direct   no mux: each session's client writes to the backend itself
#   portmux  portmux serve -f hack/bench/peers/portmux-udp.yaml: a UDP
#            listener routing a DNS query to udp-dns, any other first
#            datagram to udp-any.
#   portmux-before  the same, built at git revision BASELINE
#            (BASELINE=main PEERS="portmux-before portmux" compares a
#            change in one run)
#   nginx    nginx -p PREFIX -c hack/bench/peers/nginx-udp.conf (Debian's
#            nginx + libnginx-mod-stream): one upstream, udp-any, as the
#            stream module cannot look into datagrams.
#   sslh     sslh-select with a UDP listener, when the installed sslh has
#            UDP (2.0 and later); Debian 12's 1.20 has none and is skipped.
#   go-minimal  hack/bench/minrelay -udp: a reference, not a proxy. A
#            connected socket per client and a goroutine per session, one
#            datagram per system call through Go's net: the obvious Go
#            design. It routes nothing (udp-any only).
#
#   hack/bench-udp.sh                       # 3 repeats of every scenario
#   REPS=1 SCEN=udp-rate-1 hack/bench-udp.sh
#
# Scenarios: udp-rate-1, udp-rate-64 (1, 64 sessions of 1200-byte
# datagrams, WINDOW in flight each), udp-small-64 (64-byte datagrams),
# udp-setup (SETUP_N sessions opened by C workers), udp-idle-N.
# Knobs: REPS, D, SCEN, PEERS, C, WINDOW, SETUP_N, NICE, QUIET, QUIET_WAIT.
# Output: bin/bench/udp-results.jsonl, bin/bench/udp-results-table.md, and
# each peer's log in bin/bench/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh
ROOT=$PWD

bench_knobs bench
SCEN=${SCEN:-udp-rate-1,udp-rate-64,udp-small-64,udp-setup,udp-idle-5000}
PEERS=${PEERS:-direct portmux nginx sslh go-minimal}
C=${C:-32}
WINDOW=${WINDOW:-16}
SETUP_N=${SETUP_N:-5000}
NICE=${NICE:--10}
ADDR=127.0.0.1:17443
PEER_CONF=$ROOT/hack/bench/peers

case " $PEERS " in *" nginx "*)
  [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || bench_apt nginx libnginx-mod-stream ;;
esac

# sslh_udp says whether the installed sslh can listen on UDP (sslh 2.0
# added it, with "is_udp" in its configuration).
sslh_udp() {
  command -v sslh-select >/dev/null && grep -q is_udp "$(command -v sslh-select)"
}

bench_tools
mkdir -p "$OUT_DIR/nginx"
rm -f "$OUT_DIR/udp-results.jsonl"

# peer_args NAME sets args to muxload's flags for one peer; empty: skip.
peer_args() {
  case $1 in
    direct) args=(-direct) ;;
    portmux | portmux-before) args=(-cmd "exec $OUT_DIR/$1 serve -f $PEER_CONF/portmux-udp.yaml --bind-address 127.0.0.1 --log-connections=false --watch=false") ;;
    nginx) args=(-routes udp-any -cmd "exec nginx -e stderr -p $OUT_DIR/nginx/ -c $PEER_CONF/nginx-udp.conf") ;;
    sslh)
      if sslh_udp; then
        args=(-routes udp-any -cmd "exec sslh-select -F$PEER_CONF/sslh-udp.cfg")
      else
        args=()
      fi ;;
    go-minimal) args=(-routes udp-any -cmd "exec $OUT_DIR/minrelay -udp -listen $ADDR -target 127.0.0.1:17012") ;;
    *) echo "unknown peer $1 (direct, portmux, portmux-before, nginx, sslh, go-minimal)" >&2; exit 2 ;;
  esac
}
for peer in $PEERS; do peer_args "$peer"; done
case " $PEERS " in *" sslh "*)
  sslh_udp || echo "sslh skipped: $(sslh -V 2>&1 | head -1) has no UDP mode (sslh 2.0 added it)" >&2 ;;
esac

# Everything a run starts (muxload, its backends, the mux) runs at priority
# NICE, so that other jobs on a shared box take less from a run.
bench_repeats udp-results -addr "$ADDR" -scenarios "$SCEN" -d "$D" -warmup 1s -c "$C" \
  -udp-window "$WINDOW" -udp-setup-sessions "$SETUP_N"
