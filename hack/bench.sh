#!/usr/bin/env bash
# Runs the shared muxbench harness against `portmux serve`, haproxy and sslh
# in one run, interleaved (repeat 1 of every peer, then repeat 2, ...), so the
# numbers can be compared side by side. Everything stays on 127.0.0.1 and
# every run is bounded in time.
#
# go-minimal is a reference, not a proxy: hack/bench/minrelay accepts,
# dials the SSH backend and copies both ways (splice), nothing else. Its
# connection rate is the floor Go's net package sets for any Go proxy, its
# throughput the ceiling of one zero-copy hop on this machine; it runs the
# SSH and throughput scenarios only (it routes nothing).
#
#   hack/bench.sh                         # 3 repeats of every scenario
#   REPS=1 SCEN=conn-ssh,tput hack/bench.sh
#   PEERS="portmux haproxy" hack/bench.sh
#
# Output: bin/bench/results.jsonl and bin/bench/results-table.md.
# Needs: Go, haproxy and sslh (installed from apt when missing and root).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BENCH_SRC=${BENCH_SRC:-$ROOT/../shared/bench}
OUT_DIR=${OUT_DIR:-$ROOT/bin/bench}
REPS=${REPS:-3}
D=${D:-5s}
TPUT=${TPUT:-1GiB}
SCEN=${SCEN:-conn-ssh,conn-tls,lat-ssh,lat-tls,tput,idle-400,idle-2000,idle-9000}
PEERS=${PEERS:-direct portmux haproxy sslh-fork go-minimal}
ADDR=127.0.0.1:17443
NICE=${NICE:--10}

[ -d "$BENCH_SRC/muxbench" ] || { echo "no muxbench harness at $BENCH_SRC (set BENCH_SRC)" >&2; exit 2; }
need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v sslh >/dev/null || need+=(sslh)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    systemctl stop haproxy sslh 2>/dev/null || true
  else
    echo "missing ${need[*]}: install them (apt-get install ${need[*]})" >&2; exit 2
  fi
fi
pkill -x haproxy 2>/dev/null || true
pkill -x sslh 2>/dev/null || true

# The harness's folder may be read-only: work on a copy.
rm -rf "$OUT_DIR" && mkdir -p "$OUT_DIR"
cp -r "$BENCH_SRC/." "$OUT_DIR/"
chmod -R u+w "$OUT_DIR"
(cd "$OUT_DIR/muxbench" && go build -o ../bin/muxbench .)
CGO_ENABLED=0 go build -trimpath -o "$OUT_DIR/portmux" ./cmd/portmux
CGO_ENABLED=0 go build -trimpath -o "$OUT_DIR/minrelay" ./hack/bench/minrelay

cat > "$OUT_DIR/portmux.yaml" <<'YAML'
# The harness's routing contract (see its README): SSH -> 17001, TLS SNI
# b.bench.test -> 17004, a.bench.test -> 17002, anything else -> 17003.
apiVersion: portmux.dev/v1alpha1
kind: PortMux
metadata: {name: bench}
spec:
  listeners: [{name: public, port: 17443, probeTimeout: 2s, maxConnections: 20000, maxConnectionsPerClient: 20000, maxConnectionRatePerClient: 1000000}]
  routes:
    - {name: ssh, listeners: [public], match: {protocol: ssh},                     backend: {address: "127.0.0.1:17001"}}
    - {name: b,   listeners: [public], match: {protocol: tls, sni: [b.bench.test]}, backend: {address: "127.0.0.1:17004"}}
    - {name: a,   listeners: [public], match: {protocol: tls, sni: [a.bench.test]}, backend: {address: "127.0.0.1:17002"}}
    - {name: any, listeners: [public], match: {protocol: any},                     backend: {address: "127.0.0.1:17003"}}
YAML

cd "$OUT_DIR"
OUT=results.jsonl
COMMON=(-d "$D" -warmup 1s -c 32 -tput-bytes "$TPUT" -tput-streams 4
        -quiet "${QUIET:-0.3}" -quiet-wait "${QUIET_WAIT:-30s}" -retries 1 -out "$OUT" -logdir logs)
MB=(nice -n "$NICE" bin/muxbench)
mkdir -p logs
conn_only=$(echo "$SCEN" | tr ',' '\n' | grep -v '^idle-' | paste -sd, -)
ssh_only=$(echo "$SCEN" | tr ',' '\n' | { grep -E '^(conn-ssh|lat-ssh|tput)$' || true; } | paste -sd, -)
for rep in $(seq 1 "$REPS"); do
  echo "=== repeat $rep of $REPS" >&2
  for peer in $PEERS; do
    case $peer in
      direct)    "${MB[@]}" suite -peer direct -direct -reps 1 -first-rep "$rep" -scenarios "$conn_only" "${COMMON[@]}" >/dev/null ;;
      portmux)   "${MB[@]}" suite -peer portmux -addr "$ADDR" -reps 1 -first-rep "$rep" -scenarios "$SCEN" "${COMMON[@]}" \
                   -cmd "exec $OUT_DIR/portmux serve -f $OUT_DIR/portmux.yaml --bind-address 127.0.0.1 --log-connections=false" >/dev/null ;;
      haproxy)   "${MB[@]}" suite -peer haproxy -addr "$ADDR" -reps 1 -first-rep "$rep" -scenarios "$SCEN" "${COMMON[@]}" \
                   -cmd "exec haproxy -f $OUT_DIR/configs/haproxy.cfg -db" >/dev/null ;;
      sslh-fork) "${MB[@]}" suite -peer sslh-fork -addr "$ADDR" -reps 1 -first-rep "$rep" -scenarios "$SCEN" "${COMMON[@]}" \
                   -cmd "exec sslh -F$OUT_DIR/configs/sslh.cfg" >/dev/null ;;
      go-minimal) [ -z "$ssh_only" ] || "${MB[@]}" suite -peer go-minimal -addr "$ADDR" -reps 1 -first-rep "$rep" -scenarios "$ssh_only" "${COMMON[@]}" \
                   -cmd "exec $OUT_DIR/minrelay -listen $ADDR -target 127.0.0.1:17001" >/dev/null ;;
      *) echo "unknown peer $peer" >&2; exit 2 ;;
    esac
  done
done
bin/muxbench summarize "$OUT" | tee results-table.md
