#!/usr/bin/env bash
# Counts the system calls each mux makes per routed connection, under
# `strace -c -f`, for portmux serve, haproxy 2.6 and go-minimal
# (hack/bench/minrelay) side by side: where a connection's time goes
# before any optimisation of the probe-and-dial path (issue 19).
#
# Each peer runs muxload's conn-ssh (or SCEN) scenario under strace;
# strace slows every peer, so rates and CPU from this run mean nothing,
# only the counts do. Connections are counted as the mux's successful
# accept4 calls, so the readiness and route checks are included on both
# sides of the division.
#
#   hack/bench-syscalls.sh
#   SCEN=conn-tls PEERS="portmux haproxy" hack/bench-syscalls.sh
#
# Output: bin/bench-syscalls/strace-PEER-SCEN.txt (strace's summary) and a
# table of calls per connection, the busiest TOP calls of each peer.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh
ROOT=$PWD

OUT_DIR=${OUT_DIR:-$ROOT/bin/bench-syscalls}
SCEN=${SCEN:-conn-ssh}
PEERS=${PEERS:-portmux haproxy go-minimal}
D=${D:-3s}
C=${C:-8}
TOP=${TOP:-12}
ADDR=127.0.0.1:17443
BASE=17000
PEER_CONF=$ROOT/hack/bench/peers

command -v strace >/dev/null || die "strace is needed (apt-get install strace)"
bench_tools

cd "$OUT_DIR"
for scen in ${SCEN//,/ }; do
  for peer in $PEERS; do
    routes=()
    [ "$peer" = go-minimal ] && routes=(-routes ssh)
    trace=$OUT_DIR/strace-$peer-$scen.txt
    "$OUT_DIR/muxload" run -peer "$peer" -addr "$ADDR" -scenarios "$scen" -d "$D" -warmup 1s -c "$C" \
      "${routes[@]}" -quiet 0 -cgroup=false -logdir logs -out /dev/null \
      -cmd "exec strace -c -f -o $trace $(mux_cmd "$peer")" >/dev/null
  done
  echo
  echo "## system calls per connection, $scen ($C workers, under strace -c -f)"
  for peer in $PEERS; do
    f=$OUT_DIR/strace-$peer-$scen.txt
    # strace -c: % time, seconds, usecs/call, calls, [errors], syscall.
    conns=$(awk '$NF == "accept4" || $NF == "accept" { n += $4 - (NF == 6 ? $5 : 0) } END { print n + 0 }' "$f")
    total=$(awk '$NF == "total" { print $4 }' "$f")
    if [ "$conns" = 0 ]; then echo "$peer: no connection accepted"; continue; fi
    awk -v c="$conns" -v t="$total" -v p="$peer" 'BEGIN { printf "%s: %.1f calls per connection (%d connections)\n", p, t / c, c }'
    awk -v c="$conns" 'NF >= 5 && $1 ~ /^[0-9.]+$/ && $NF != "total" { printf "  %-16s %7.2f\n", $NF, $4 / c }' "$f" |
      sort -k2 -nr | head -n "$TOP"
  done
done
