#!/usr/bin/env bash
# Compares WebSocket tunnels on loopback, in one interleaved run (repeat 1 of
# every peer, then repeat 2, ...), with muxload (hack/bench/muxload):
#
#   direct          the client talks to the target itself (the baseline)
#   portmux-tunnel  portmux tunnel -L ... ws://  ->  portmux serve (tunnel route)
#   wstunnel        wstunnel 1.4.0 (npm, Node.js): client -t ... ws://  ->  server -s
#   relay-chain     a reference, not a tunnel: two hack/bench/minrelay in series
#                   (plain TCP, splice, no framing) where the tunnel's client and
#                   server sit; the most any two-process tunnel could carry here
#   masked-chain    the same with the upload read into user space and XORed at
#                   both hops (minrelay -mask): what RFC 6455 masking costs any
#                   WebSocket tunnel, with no framing at all and the download
#                   still spliced; the most a tunnel could carry here
#   copy-chain      also the download through user space (minrelay -mask -copy):
#                   the least work a tunnel over a WebSocket library that owns
#                   its frame buffers (coder/websocket, gorilla/websocket) does
#
# Scenarios (muxload, target: its "SSH" echo backend, 127.0.0.1:$BASE+1):
#   tput, 1 stream and 16 streams: bytes sent through the tunnel and echoed back
#   conn-ssh: tunnel set-up rate, 32 workers each opening a connection through
#             the tunnel, exchanging a line with the target and closing
#
#   hack/bench-tunnel.sh                 # 3 repeats
#   REPS=1 TPUT=256MiB hack/bench-tunnel.sh
#   PEERS="direct portmux-tunnel" hack/bench-tunnel.sh
#   IDLE=2000 hack/bench-tunnel.sh       # also memory per idle tunnel (both ends), in the 1-stream table
#
# Output: bin/bench-tunnel/results-{1,16}.jsonl and results-{1,16}-table.md.
# Needs: Go, Node.js and npm (wstunnel is installed into bin/bench-tunnel).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

OUT_DIR=${OUT_DIR:-$ROOT/bin/bench-tunnel}
REPS=${REPS:-3}
D=${D:-5s}
TPUT=${TPUT:-1GiB}
PEERS=${PEERS:-direct portmux-tunnel wstunnel relay-chain masked-chain copy-chain}
WSTUNNEL_VERSION=${WSTUNNEL_VERSION:-1.4.0}
NICE=${NICE:--10}
# Ports from BASE, away from hack/bench.sh's 17001-17443 so both can run.
BASE=${BASE:-17200}
LOCAL=127.0.0.1:$((BASE + 43))   # where each tunnel client listens: muxload's "mux" address
SERVER=127.0.0.1:$((BASE + 80))  # where each tunnel server listens
TARGET=127.0.0.1:$((BASE + 1))   # muxload's SSH-like echo backend (-base-port $BASE)

command -v node >/dev/null && command -v npm >/dev/null || { echo "Node.js and npm are needed for wstunnel" >&2; exit 2; }

rm -rf "$OUT_DIR" && mkdir -p "$OUT_DIR"
go build -o "$OUT_DIR/muxload" ./hack/bench/muxload
CGO_ENABLED=0 go build -trimpath -o "$OUT_DIR/portmux" ./cmd/portmux
CGO_ENABLED=0 go build -trimpath -o "$OUT_DIR/minrelay" ./hack/bench/minrelay
(cd "$OUT_DIR" && mkdir -p wst && cd wst &&
  npm install --silent --no-audit --no-fund --no-save "wstunnel@$WSTUNNEL_VERSION" >/dev/null)
WST=$OUT_DIR/wst/node_modules/wstunnel/bin/wstunnel
[ -f "$WST" ] || WST=$(readlink -f "$OUT_DIR/wst/node_modules/.bin/wstunnel")

echo "bench-tunnel-token" > "$OUT_DIR/token"
cat > "$OUT_DIR/portmux-tunnel.yaml" <<YAML
apiVersion: v1
kind: Secret
metadata: {name: tunnel-token}
stringData: {token: bench-tunnel-token}
---
apiVersion: portmux.dev/v1alpha1
kind: PortMux
metadata: {name: bench}
spec:
  listeners: [{name: public, port: ${SERVER##*:}, maxConnections: 20000, maxConnectionsPerClient: 20000, maxConnectionRatePerClient: 1000000}]
  routes:
    - name: tunnel
      listeners: [public]
      match: {protocol: websocket, pathPrefix: /tunnel}
      tunnel:
        auth: {tokenSecretRef: {name: tunnel-token, key: token}}
        allow: [{address: "$TARGET"}]
YAML

# Each peer runs its server and its client in the foreground of one shell;
# muxload measures the whole process tree and stops its group.
portmux_cmd="$OUT_DIR/portmux serve -f $OUT_DIR/portmux-tunnel.yaml --bind-address 127.0.0.1 --log-connections=false --watch=false &
  $OUT_DIR/portmux tunnel --token-file $OUT_DIR/token -L $LOCAL:$TARGET ws://$SERVER/tunnel &
  wait"
wstunnel_cmd="node $WST -s $SERVER -t $TARGET &
  node $WST -t $LOCAL:$TARGET ws://$SERVER &
  wait"
chain_cmd() { # minrelay flags
  echo "$OUT_DIR/minrelay $* -listen $SERVER -target $TARGET &
  $OUT_DIR/minrelay $* -listen $LOCAL -target $SERVER &
  wait"
}

cd "$OUT_DIR"
# Every peer carries the SSH route only: -routes ssh.
COMMON=(-base-port "$BASE" -routes ssh -d "$D" -warmup 1s -c 32 -tput-bytes "$TPUT"
        -quiet "${QUIET:-0.3}" -quiet-wait "${QUIET_WAIT:-30s}" -retries 1 -logdir logs)
ML=("$OUT_DIR/muxload")
if [ "$(id -u)" = 0 ] && [ -n "$NICE" ]; then ML=(nice -n "$NICE" "${ML[@]}"); fi
mkdir -p logs
failed=0
run() { # peer streams scenarios
  local peer=$1 streams=$2 scen=$3 out=results-$2.jsonl flags=
  local args=(run -peer "$peer" -rep "$rep" -addr "$LOCAL" -scenarios "$scen"
              -tput-streams "$streams" -out "$out" "${COMMON[@]}")
  case $peer in
    direct)         "${ML[@]}" "${args[@]}" -direct || failed=1 ;;
    portmux-tunnel) "${ML[@]}" "${args[@]}" -cmd "$portmux_cmd" || failed=1 ;;
    wstunnel)       "${ML[@]}" "${args[@]}" -cmd "$wstunnel_cmd" || failed=1 ;;
    relay-chain|masked-chain|copy-chain)
                    case $peer in masked-chain) flags=-mask ;; copy-chain) flags="-mask -copy" ;; esac
                    "${ML[@]}" "${args[@]}" -cmd "$(chain_cmd $flags)" || failed=1 ;;
    *) echo "unknown peer $peer" >&2; exit 2 ;;
  esac
}
for rep in $(seq 1 "$REPS"); do
  echo "=== repeat $rep of $REPS" >&2
  for peer in $PEERS; do
    echo "--- $peer" >&2
    scen=tput,conn-ssh
    if [ -n "${IDLE:-}" ] && [ "$peer" != direct ] && [ "${peer%-chain}" = "$peer" ]; then scen=$scen,idle-$IDLE; fi
    run "$peer" 1 "$scen"
    run "$peer" 16 tput
  done
done
for s in 1 16; do
  echo
  echo "## tput with $s stream(s) per run; conn-ssh (tunnel set-up) in the 1-stream table"
  "$OUT_DIR/muxload" table "results-$s.jsonl" | tee "results-$s-table.md"
done
exit "$failed"
