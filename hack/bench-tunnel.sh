#!/usr/bin/env bash
# Compares WebSocket tunnels on loopback, in one interleaved run (repeat 1 of
# every peer, then repeat 2, ...), with muxload (hack/bench/muxload):
#
#   direct          the client talks to the target itself (the baseline)
#   portmux-tunnel  portmux tunnel -L ... ws://  ->  portmux serve (tunnel route)
#   wstunnel        wstunnel 1.4.0 (npm, Node.js): client -t ... ws://  ->  server -s
#
# and over TLS, as users run tunnels through a firewall (wss://, one
# ECDSA P-256 certificate made here with openssl for all three):
#
#   portmux-wss     portmux tunnel ... wss://  ->  portmux serve terminating TLS
#                   on the listener, the same tunnel route inside
#   wstunnel-tls    wstunnel -c ... wss://  ->  nginx (TLS, proxy_pass with
#                   Upgrade)  ->  wstunnel -s: the setup wstunnel's README gives,
#                   since its server speaks no TLS itself
#   tls-chain       the ceiling: two minrelays in series speaking TLS between
#                   them (-tls-target, -tls-cert), crypto/tls as in portmux,
#                   no WebSocket framing: an stunnel or openssl s_client/
#                   s_server pair, what TLS alone costs
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
source hack/lib.sh
ROOT=$PWD

bench_knobs bench-tunnel
TPUT=${TPUT:-1GiB}
PEERS=${PEERS:-direct portmux-tunnel wstunnel relay-chain masked-chain copy-chain portmux-wss wstunnel-tls tls-chain}
WSTUNNEL_VERSION=${WSTUNNEL_VERSION:-1.4.0}
NICE=${NICE:--10}
# Ports from BASE, away from hack/bench.sh's 17001-17443 so both can run.
BASE=${BASE:-17200}
LOCAL=127.0.0.1:$((BASE + 43))   # where each tunnel client listens: muxload's "mux" address
SERVER=127.0.0.1:$((BASE + 80))  # where each tunnel server listens
TARGET=127.0.0.1:$((BASE + 1))   # muxload's SSH-like echo backend (-base-port $BASE)
BEHIND=127.0.0.1:$((BASE + 81))  # where wstunnel's server listens behind nginx (wstunnel-tls)

command -v node >/dev/null && command -v npm >/dev/null || { echo "Node.js and npm are needed for wstunnel" >&2; exit 2; }
case " $PEERS " in *" wstunnel-tls "*)
  command -v nginx >/dev/null || { echo "nginx is needed for wstunnel-tls (apt-get install nginx)" >&2; exit 2; } ;;
esac

rm -rf "$OUT_DIR"
bench_tools
(cd "$OUT_DIR" && mkdir -p wst && cd wst &&
  npm install --silent --no-audit --no-fund --no-save "wstunnel@$WSTUNNEL_VERSION" >/dev/null)
WST=$OUT_DIR/wst/node_modules/wstunnel/bin/wstunnel
[ -f "$WST" ] || WST=$(readlink -f "$OUT_DIR/wst/node_modules/.bin/wstunnel")

echo "bench-tunnel-token" > "$OUT_DIR/token"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$OUT_DIR/key.pem" -out "$OUT_DIR/cert.pem" 2>/dev/null
# tunnel_yaml FILE [tls] writes the `portmux serve -f` file of a tunnel
# route to TARGET on SERVER's port, the listener terminating TLS with the
# certificate above when tls is given (the portmux-wss peer).
tunnel_yaml() {
  local tls=
  {
    printf 'apiVersion: v1\nkind: Secret\nmetadata: {name: tunnel-token, namespace: default}\nstringData: {token: bench-tunnel-token}\n---\n'
    if [ -n "${2:-}" ]; then
      tls_secret tunnel-tls "$OUT_DIR/cert.pem" "$OUT_DIR/key.pem"
      echo ---
      tls=", tls: {certificateRefs: [{name: tunnel-tls}]}"
    fi
    portmux_head
    cat <<YAML
  listeners: [{name: public, port: ${SERVER##*:}, maxConnections: 20000, maxConnectionsPerClient: 20000, maxConnectionRatePerClient: 1000000$tls}]
  routes:
    - name: tunnel
      match: {protocol: websocket, pathPrefix: /tunnel}
      tunnel:
        auth: {tokenSecretRef: {name: tunnel-token, key: token}}
        allow: [{address: "$TARGET"}]
YAML
  } > "$1"
}
tunnel_yaml "$OUT_DIR/portmux-tunnel.yaml"
tunnel_yaml "$OUT_DIR/portmux-wss.yaml" tls

mkdir -p "$OUT_DIR/nginx"
cat > "$OUT_DIR/nginx/nginx.conf" <<CONF
daemon off;
# One worker per CPU, as haproxy's nbthread default and Go's GOMAXPROCS.
worker_processes auto;
worker_rlimit_nofile 20000;
pid nginx.pid;
error_log stderr warn;
events { worker_connections 20000; }
http {
    access_log off;
    client_body_temp_path tmp; proxy_temp_path tmp; fastcgi_temp_path tmp;
    uwsgi_temp_path tmp; scgi_temp_path tmp;
    server {
        listen $SERVER ssl;
        ssl_certificate $OUT_DIR/cert.pem;
        ssl_certificate_key $OUT_DIR/key.pem;
        location / {
            proxy_pass http://$BEHIND;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 1h;
            proxy_buffering off;
        }
    }
}
CONF
mkdir -p "$OUT_DIR/nginx/tmp"

# Each peer runs its server and its client in the foreground of one shell;
# muxload measures the whole process tree and stops its group.
portmux_cmd="$OUT_DIR/portmux serve -f $OUT_DIR/portmux-tunnel.yaml --bind-address 127.0.0.1 --log-connections=false --watch=false &
  $OUT_DIR/portmux tunnel --token-file $OUT_DIR/token -L $LOCAL:$TARGET ws://$SERVER/tunnel &
  wait"
wstunnel_cmd="node $WST -s $SERVER -t $TARGET &
  node $WST -t $LOCAL:$TARGET ws://$SERVER &
  wait"
portmux_wss_cmd="$OUT_DIR/portmux serve -f $OUT_DIR/portmux-wss.yaml --bind-address 127.0.0.1 --log-connections=false --watch=false &
  $OUT_DIR/portmux tunnel --token-file $OUT_DIR/token --ca-file $OUT_DIR/cert.pem -L $LOCAL:$TARGET wss://$SERVER/tunnel &
  wait"
wstunnel_tls_cmd="nginx -e stderr -p $OUT_DIR/nginx/ -c $OUT_DIR/nginx/nginx.conf &
  node $WST -s $BEHIND -t $TARGET &
  node $WST -c -t $LOCAL:$TARGET wss://$SERVER &
  wait"
tls_chain_cmd="$OUT_DIR/minrelay -tls-cert $OUT_DIR/cert.pem -tls-key $OUT_DIR/key.pem -listen $SERVER -target $TARGET &
  $OUT_DIR/minrelay -tls-target -listen $LOCAL -target $SERVER &
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
    portmux-wss)    "${ML[@]}" "${args[@]}" -cmd "$portmux_wss_cmd" || failed=1 ;;
    wstunnel-tls)   "${ML[@]}" "${args[@]}" -cmd "$wstunnel_tls_cmd" || failed=1 ;;
    tls-chain)      "${ML[@]}" "${args[@]}" -cmd "$tls_chain_cmd" || failed=1 ;;
    relay-chain|masked-chain|copy-chain)
                    case $peer in masked-chain) flags=-mask ;; copy-chain) flags="-mask -copy" ;; esac
                    "${ML[@]}" "${args[@]}" -cmd "$(chain_cmd $flags)" || failed=1 ;;
    *) echo "unknown peer $peer" >&2; exit 2 ;;
  esac
}
# run_peer PEER REP: one stream (tunnel set-up, idle tunnels), then 16.
run_peer() {
  local peer=$1 rep=$2 scen=tput,conn-ssh # run reads rep
  echo "--- $peer" >&2
  if [ -n "${IDLE:-}" ] && [ "$peer" != direct ] && [ "${peer%-chain}" = "$peer" ]; then scen=$scen,idle-$IDLE; fi
  run "$peer" 1 "$scen"
  run "$peer" 16 tput
}
each_repeat run_peer
for s in 1 16; do
  echo
  echo "## tput with $s stream(s) per run; conn-ssh (tunnel set-up) in the 1-stream table"
  "$OUT_DIR/muxload" table "results-$s.jsonl" | tee "results-$s-table.md"
done
exit "$failed"
