#!/usr/bin/env bash
# Runs muxload (hack/bench/muxload) against `portmux serve`, haproxy 2.6 in
# tcp mode and sslh (fork) in one run, interleaved (repeat 1 of every peer,
# then repeat 2, ...), so that they are compared under the same conditions.
# Everything stays on 127.0.0.1 and every run is bounded in time.
#
# Peers (configs in hack/bench/peers/):
#   direct      no mux: the client dials the backends (the baseline)
#   portmux     portmux serve -f hack/bench/peers/portmux.yaml
#   portmux-before  the same, built at git revision BASELINE (BASELINE=main
#               PEERS="portmux-before portmux" compares a change in one run;
#               the tables then end with portmux over portmux-before,
#               repeat by repeat: on a busy box, steadier than the medians)
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
#   RELOAD=9000 SCEN= PEERS="portmux haproxy" REPS=2 hack/bench.sh
#
# Knobs: REPS, D (measured window of each connection scenario), TPUT (bytes
# through the throughput streams), SCEN (empty: none, for RELOAD alone),
# PEERS, C (workers), STREAMS, NICE, QUIET (cores of other load that mark a
# run disturbed), QUIET_WAIT, BASE (ports: backends at BASE+1.., the mux at
# BASE+443; a value other than 17000 shifts the peers' configs, for a box
# where someone else's run holds 17443).
#
# Reload cost (opt-in): RELOAD=N (at most 9000 where the open-file hard
# limit is 20000: see reload_configs) adds muxload's reload-N to every
# repeat of the peers that can change their configuration while serving, portmux and
# haproxy: N held connections and RELOAD_RATE new ones a second (C
# workers), first for RELOAD_BASELINE with no change (the CPU the load
# costs), then for RELOAD_D with a changed configuration swapped in every
# RELOAD_EVERY, then RELOAD_QUIET more swaps with the load stopped (the
# CPU of a swap alone). The script writes two configurations per peer into
# bin/bench/reload/ that route alike but differ (the SSH route or backend
# renamed, a route for c.bench.test added) and the reload command renames
# the other one into place:
#   portmux  `portmux serve --watch`, which applies a file once it has been
#            still for a second (so RELOAD_EVERY is 2s: changes a second
#            apart would never settle); a swap is its log's "reloaded".
#   haproxy  master-worker mode (-W), SIGUSR2 to the master, which re-execs,
#            hands the listening sockets to the new worker (-x sockpair@,
#            automatic in this mode) and leaves the old worker the
#            connections it holds; a swap is its "Loading success.".
# Output: bin/bench/results.jsonl, bin/bench/results-table.md, and each
# peer's log in bin/bench/logs/.
# Needs: Go, haproxy and sslh (installed from apt when missing and root).
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh
ROOT=$PWD

bench_knobs bench
TPUT=${TPUT:-1GiB}
# lat-bulk is lat-ssh while STREAMS connections move bulk bytes through
# the mux: what a transfer costs the connections beside it.
SCEN=${SCEN-conn-ssh,conn-tls,lat-ssh,lat-tls,lat-bulk,tput,idle-400,idle-2000,idle-9000}
PEERS=${PEERS:-direct portmux haproxy sslh-fork go-minimal}
C=${C:-32}
STREAMS=${STREAMS:-4}
NICE=${NICE:--10}
BASE=${BASE:-17000}
ADDR=127.0.0.1:$((BASE + 443))
PEER_CONF=$ROOT/hack/bench/peers
RELOAD=${RELOAD:-}
RELOAD_EVERY=${RELOAD_EVERY:-2s}
RELOAD_D=${RELOAD_D:-20s}
RELOAD_RATE=${RELOAD_RATE:-1000}
RELOAD_BASELINE=${RELOAD_BASELINE:-10s}
RELOAD_QUIET=${RELOAD_QUIET:-5}
RELOAD_DIR=$OUT_DIR/reload

need=()
case " $PEERS " in *" haproxy "*) command -v haproxy >/dev/null || need+=(haproxy) ;; esac
case " $PEERS " in *" sslh-fork "*) command -v sslh >/dev/null || need+=(sslh) ;; esac
if [ ${#need[@]} -gt 0 ]; then bench_apt "${need[@]}"; fi

bench_tools
rm -f "$OUT_DIR/results.jsonl" "$OUT_DIR"/logs/*.log

if [ "$BASE" != 17000 ]; then
  mkdir -p "$OUT_DIR/peers"
  for f in "$PEER_CONF"/*; do
    BASE=$BASE perl -pe 's/\b17(0\d\d|443)\b/$ENV{BASE} + $1/ge' "$f" > "$OUT_DIR/peers/${f##*/}"
  done
  PEER_CONF=$OUT_DIR/peers
fi

# peer_args NAME sets args to muxload's flags for one peer.
peer_args() {
  case $1 in
    direct) args=(-direct) ;;
    portmux|portmux-before|haproxy|sslh-fork) args=(-cmd "exec $(mux_cmd "$1")") ;;
    # io.Copy's splice holds a pipe (two descriptors) per waiting
    # direction: six per idle connection, 3,333 at most under 20,000.
    go-minimal) args=(-routes ssh -peer-fds-per-conn 6 -cmd "exec $(mux_cmd "$1")") ;;
    *) echo "unknown peer $1 (direct, portmux, portmux-before, haproxy, sslh-fork, go-minimal)" >&2; exit 2 ;;
  esac
}
for peer in $PEERS; do peer_args "$peer"; done

# reload_configs writes the two configurations each reloading peer
# alternates between: 0 as in hack/bench/peers/, 1 routing alike but
# changed. haproxy's maxconn is set to hold RELOAD connections and the
# load. muxload raises the open-file limit to two per held connection
# (its client end and its backend's) plus headroom, the mux inherits it;
# where the hard limit cannot be raised (no CAP_SYS_RESOURCE) it bounds
# RELOAD: a hard limit of 20000 allows RELOAD=9000, not 10000.
reload_configs() {
  mkdir -p "$RELOAD_DIR"
  cp "$PEER_CONF/portmux.yaml" "$RELOAD_DIR/portmux-0.yaml"
  sed -e 's/{name: ssh,/{name: ssh-alt,/' \
    -e '/{name: plain,/i\    - {name: tls-c, listeners: [public], match: {protocol: tls, sni: [c.bench.test]}, backend: {address: "127.0.0.1:'$((BASE + 3))'"}}' \
    "$PEER_CONF/portmux.yaml" > "$RELOAD_DIR/portmux-1.yaml"
  sed "s/^\( *maxconn\) .*/\1 $((RELOAD + 500))/" "$PEER_CONF/haproxy.cfg" > "$RELOAD_DIR/haproxy-0.cfg"
  sed -e 's/be_ssh\b/be_ssh_alt/g' \
    -e '/use_backend be_tls_b/i\    use_backend be_tls_c if client_hello { req.ssl_sni -i c.bench.test }' \
    "$RELOAD_DIR/haproxy-0.cfg" > "$RELOAD_DIR/haproxy-1.cfg"
  printf 'backend be_tls_c\n    server tls_c 127.0.0.1:%d\n' $((BASE + 3)) >> "$RELOAD_DIR/haproxy-1.cfg"
  for p in portmux-0.yaml:portmux-1.yaml haproxy-0.cfg:haproxy-1.cfg; do
    if cmp -s "$RELOAD_DIR/${p%:*}" "$RELOAD_DIR/${p#*:}"; then
      echo "reload: $p do not differ" >&2; exit 2
    fi
  done
  if command -v haproxy >/dev/null; then haproxy -c -q -f "$RELOAD_DIR/haproxy-1.cfg"; fi
}

# reload_args NAME sets args to muxload's flags for a reload-N run of one
# peer, or returns 1 when the peer has no reload. Each run starts from
# configuration 0; change k installs configuration k mod 2 by rename.
reload_args() {
  local live swap
  case $1 in
    portmux)
      live=$RELOAD_DIR/portmux.yaml
      swap="cp $RELOAD_DIR/portmux-\$((MUXLOAD_RELOAD % 2)).yaml $live.next && mv -f $live.next $live"
      args=(-cmd "cp $RELOAD_DIR/portmux-0.yaml $live && exec $OUT_DIR/portmux serve -f $live --bind-address 127.0.0.1 --log-connections=false --watch=true"
        -reload-cmd "$swap" -reload-log '"msg":"reloaded"') ;;
    haproxy)
      live=$RELOAD_DIR/haproxy.cfg
      swap="cp $RELOAD_DIR/haproxy-\$((MUXLOAD_RELOAD % 2)).cfg $live.next && mv -f $live.next $live && kill -USR2 \$MUXLOAD_PID"
      args=(-cmd "cp $RELOAD_DIR/haproxy-0.cfg $live && exec haproxy -W -db -f $live"
        -reload-cmd "$swap" -reload-log 'Loading success') ;;
    *) return 1 ;;
  esac
}

# Priority for everything a run starts (muxload, its backends, the mux),
# so that other jobs on a shared box take less from a run.
run=("$OUT_DIR/muxload")
if [ "$(id -u)" = 0 ] && [ -n "$NICE" ]; then run=(nice -n "$NICE" "${run[@]}"); fi

if [ -n "$RELOAD" ]; then reload_configs; fi

# run_peer PEER REP runs PEER's scenarios, then its reload cost.
run_peer() {
  local peer=$1 rep=$2
  if [ -n "$SCEN" ]; then
    peer_args "$peer"
    "${run[@]}" run -peer "$peer" -rep "$rep" -addr "$ADDR" -base-port "$BASE" "${args[@]}" -scenarios "$SCEN" \
      -d "$D" -warmup 1s -c "$C" -tput-bytes "$TPUT" -tput-streams "$STREAMS" \
      -quiet "${QUIET:-0.3}" -quiet-wait "${QUIET_WAIT:-30s}" -retries 1 \
      -out results.jsonl -logdir logs || failed=1
  fi
  if [ -n "$RELOAD" ]; then
    if ! reload_args "$peer"; then
      [ "$rep" != 1 ] || echo "$peer reload-$RELOAD: skipped, no configuration reload" >&2
      return 0
    fi
    "${run[@]}" run -peer "$peer" -rep "$rep" -addr "$ADDR" -base-port "$BASE" "${args[@]}" -scenarios "reload-$RELOAD" \
      -d "$RELOAD_D" -warmup 1s -c "$C" -reload-every "$RELOAD_EVERY" -reload-rate "$RELOAD_RATE" -reload-baseline "$RELOAD_BASELINE" \
      -reload-quiet "$RELOAD_QUIET" \
      -quiet "${QUIET:-0.3}" -quiet-wait "${QUIET_WAIT:-30s}" \
      -out results.jsonl -logdir logs || failed=1
  fi
}

failed=0
cd "$OUT_DIR"
each_repeat run_peer
"$OUT_DIR/muxload" table results.jsonl | tee results-table.md
if [ "$failed" != 0 ]; then
  echo "some runs failed or were misrouted: see results.jsonl and logs/" >&2
fi
exit "$failed"
