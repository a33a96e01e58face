#!/usr/bin/env bash
# TLS termination: `portmux serve` against haproxy 2.6 (OpenSSL) with the
# same certificates, in one interleaved run (repeat 1 of every peer and
# certificate, then repeat 2, ..., the peers' order reversed every other
# repeat as in every bench here: peers_in_turn). Both terminate TLS on 127.0.0.1:17443
# and forward the plain stream to one echo backend, so the difference is the
# TLS work and the proxying.
#
#   hack/bench/tls.sh                       # 3 repeats
#   REPS=1 D=3s BULK=128MiB hack/bench/tls.sh
#   PEERS=portmux CERTS=ecdsa hack/bench/tls.sh
#
# Scenarios, per certificate (ECDSA P-256, RSA 2048):
#   handshake  C=32 clients loop {connect, full TLS 1.3 handshake with X25519,
#              write a line, read its echo, close} for D after a 1 s warm-up:
#              handshakes/s, p50/p99, proxy CPU µs per handshake
#   tls12      the same with TLS 1.2 (ECDHE X25519)
#   resume     TLS 1.3, each client resuming with its last session ticket
#              (PSK with X25519: no certificate signature)
#   bulk       4 connections each write BULK and read it back: MB/s one way,
#              proxy CPU s/GB
#   idle       (opt-in: SCEN=idle) IDLE connections (default 9000) opened
#              64 at a time, each after its handshake and one echoed line,
#              held for 2 s: the proxy's PSS they add, per connection
# Client, proxy and backend share the machine's cores: rates are "what this
# box does with all three on it"; proxy CPU per handshake is the less
# contended figure.
#
# Output: bin/bench-tls/results.jsonl and bin/bench-tls/results.md.
# Needs: Go, openssl, haproxy, python3. Everything stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"
OUT=${OUT:-$ROOT/bin/bench-tls}
REPS=${REPS:-3}
D=${D:-5s}
C=${C:-32}
BULK=${BULK:-256MiB}
IDLE=${IDLE:-9000}
PEERS=${PEERS:-portmux haproxy}
CERTS=${CERTS:-ecdsa rsa}
SCEN=${SCEN:-handshake tls12 resume bulk}
PORT=17443
ECHO_PORT=17101
PPROF=${PPROF:-}   # e.g. 127.0.0.1:6060: portmux serves pprof there
NICE=${NICE:--10}  # everything (client, proxies, backend) at this priority when root

for tool in openssl haproxy python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 2; }
done
if (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then
  echo "127.0.0.1:$PORT is in use; stop what holds it" >&2; exit 2
fi

if [ "$(id -u)" = 0 ] && [ -n "$NICE" ]; then
  renice -n "$NICE" -p $$ >/dev/null  # children inherit it
fi
ulimit -n "$(ulimit -Hn)" # idle: each of 3 processes holds IDLE sockets or twice as many
mkdir -p "$OUT/logs"
rm -f "$OUT/results.jsonl"
echo "building portmux and tlsload" >&2
go build -o "$OUT/portmux" ./cmd/portmux
go build -o "$OUT/tlsload" ./hack/bench/tlsload

# Certificates: the same key pairs for both proxies.
for cert in ecdsa rsa; do
  case $cert in
    ecdsa) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
    rsa) newkey=(-newkey rsa:2048) ;;
  esac
  bench_cert "$OUT/$cert" "${newkey[@]}"
  {
    portmux_head
    cat <<EOF
  listeners:
  - {name: tls, port: $PORT, maxConnections: 20000, maxConnectionsPerClient: 20000, maxConnectionRatePerClient: 1000000, tls: {certificateRefs: [{name: bench-tls}]}}
  routes:
  - {name: echo, listeners: [tls], match: {protocol: any}, backend: {address: "127.0.0.1:$ECHO_PORT"}}
---
EOF
    tls_secret bench-tls "$OUT/$cert.crt" "$OUT/$cert.key"
  } >"$OUT/portmux-$cert.yaml"
  cat >"$OUT/haproxy-$cert.cfg" <<EOF
global
    maxconn $((IDLE > 8800 ? IDLE + 200 : 9000))
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend tls
    bind 127.0.0.1:$PORT ssl crt $OUT/$cert.pem
    default_backend echo
backend echo
    server echo 127.0.0.1:$ECHO_PORT
EOF
done

"$OUT/tlsload" echo -addr 127.0.0.1:$ECHO_PORT 2>"$OUT/logs/echo.log" &
kill_at_exit $!

start_peer() { # peer cert -> sets PEER_PID
  local peer=$1 cert=$2 log=$OUT/logs/$1-$2.log
  case $peer in
    portmux)
      local extra=()
      [ -n "$PPROF" ] && extra=(--pprof-addr "$PPROF")
      "$OUT/portmux" serve -f "$OUT/portmux-$cert.yaml" --bind-address 127.0.0.1 \
        --log-connections=false --watch=false "${extra[@]}" >>"$log" 2>&1 &
      ;;
    haproxy)
      haproxy -db -f "$OUT/haproxy-$cert.cfg" >>"$log" 2>&1 &
      ;;
  esac
  PEER_PID=$!
  wait_port $PORT
}

stop_peer() {
  kill "$PEER_PID" 2>/dev/null || true
  wait "$PEER_PID" 2>/dev/null || true
  wait_free $PORT
}

# run_peer PEER REP runs every scenario with every certificate against
# PEER, started afresh for each.
run_peer() {
  local peer=$1 rep=$2 cert scen common
  for cert in $CERTS; do
    for scen in $SCEN; do
      start_peer "$peer" "$cert"
      common=(-addr 127.0.0.1:$PORT -pid "$PEER_PID" -peer "$peer" -cert "$cert")
      case $scen in
        handshake) "$OUT/tlsload" handshake "${common[@]}" -c "$C" -d "$D" ;;
        tls12) "$OUT/tlsload" handshake "${common[@]}" -c "$C" -d "$D" -tls12 ;;
        resume) "$OUT/tlsload" handshake "${common[@]}" -c "$C" -d "$D" -resume ;;
        bulk) "$OUT/tlsload" bulk "${common[@]}" -bytes "$BULK" ;;
        idle) "$OUT/tlsload" idle "${common[@]}" -n "$IDLE" ;;
      esac | sed "s/}\$/,\"rep\":$rep}/" >>"$OUT/results.jsonl"
      stop_peer
    done
  done
}
each_repeat run_peer

python3 - "$OUT/results.jsonl" >"$OUT/results.md" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(xs):
    return statistics.median(xs) if xs else float("nan")
def rng(xs):
    return f"[{min(xs):.0f}–{max(xs):.0f}]" if len(xs) > 1 else ""
groups = {}
for r in rows:
    groups.setdefault((r["cert"], r["scenario"], r["peer"]), []).append(r)
print("| certificate | scenario | peer | rate (median [min–max]) | p50 / p99 ms | proxy CPU | failures |")
print("|---|---|---|---|---|---|---|")
for (cert, scen, peer), rs in sorted(groups.items()):
    if scen.startswith("idle"):
        v = [r["pss_kb_per_conn"] for r in rs]
        print(f"| {cert} | {scen} | {peer} | {med(v):.1f} KB/conn PSS [{min(v):.1f}–{max(v):.1f}] | — | — | — |")
    elif scen == "bulk":
        v = [r["mb_per_s"] for r in rs]
        print(f"| {cert} | bulk | {peer} | {med(v):.0f} MB/s {rng(v)} | — | {med([r['mux_cpu_s_per_gb'] for r in rs]):.2f} s/GB | — |")
    else:
        v = [r["per_second"] for r in rs]
        print(f"| {cert} | {scen} | {peer} | {med(v):.0f} /s {rng(v)} | {med([r['p50_ms'] for r in rs]):.2f} / {med([r['p99_ms'] for r in rs]):.2f}"
              f" | {med([r['mux_cpu_us_per_handshake'] for r in rs]):.0f} µs/handshake | {sum(r['failures'] for r in rs)} |")
EOF
cat "$OUT/results.md"
