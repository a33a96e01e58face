#!/usr/bin/env bash
# http mode: `portmux serve -f` with an http-mode route against haproxy 2.6
# in mode http, go-minimal (hack/bench/minhttp: the least a Go reverse
# proxy on fasthttp, and on net/http's HTTP/2 server for h2, does),
# go-loop (hack/bench/minh2loop: the least an HTTP/2 proxy on epoll loops
# in Go does, TLS included; HTTP/2 only, so the h1 scenarios skip it) and
# nginx direct (no proxy), in one interleaved run (repeat
# 1 of every peer, then repeat 2, ...), so that they are compared under the
# same conditions. The backend is nginx returning a 17-byte body on
# 127.0.0.1:17180; both proxies terminate HTTP/1.1 and HTTP/2, plain
# (127.0.0.1:17443) and after TLS termination (127.0.0.1:17444, ALPN h2 and
# http/1.1), route and forward each request to it over kept-alive
# HTTP/1.1, adding X-Forwarded-For. nginx direct is the backend itself,
# which also listens for h2c (17181) and TLS (17182): the ceiling.
#
#   hack/bench-http.sh                          # 3 repeats, 5 s each
#   REPS=1 D=3s PEERS=portmux SCEN=h1 hack/bench-http.sh
#   PPROF=127.0.0.1:6060 PEERS=portmux hack/bench-http.sh
#   BASELINE=main hack/bench-http.sh           # before/after in one run
#   PORTMUX_ARGS=--relay-loops=1 PEERS=portmux hack/bench-http.sh
#
# BASELINE=REV also builds portmux from git revision REV and runs it as
# the peer "portmux-before", beside the working tree's "portmux".
#
# Scenarios:
#   h1      wrk, HTTP/1.1 keep-alive, C=64 connections, T=2 threads
#   h1-tls  the same over TLS (terminated by the proxy)
#   h2c     h2load, HTTP/2 with prior knowledge, H2C=8 connections of
#           H2M=8 concurrent streams each (64 requests in flight), T threads
#   h2-tls  the same over TLS, h2 by ALPN
#   h1-rate h2load --h1, HTTP/1.1 keep-alive at a steady RATE requests/s
#           in all (default 10000) over C connections, one request at a
#           time each: a proxy that is not saturated, as most are; what
#           it costs then (its CPU per request) and its latency
#   h2c-rate the same in h2c over H2C connections
#   h1-bulk wrk with 4 connections on one thread beside BULK=2
#           clients (curl) downloading a 64 MiB body over and over through
#           the same proxy: what a large response costs the requests beside
#           it, as requests/s and p99 of the small ones, and the downloads'
#           MB/s (bytes of downloads completed in the run; its CPU per
#           request counts the downloads' too)
# Each run is preceded by a 1 s warm-up on the same connections' settings.
# Reported per run: requests/s, p50 and p99 latency (wrk's --latency;
# h2load's per-request log), and the CPU the peer's processes spent per
# request (utime+stime from /proc/PID/stat of the process and its
# children, over the measured run only); for HTTP/2, from h2load's log,
# the stalls: gaps of a millisecond or more in which no response reached
# the client at all, per second; beside the peer's, the CPU per request
# of the backend (nginx) and of the clients, and the share of the box's
# CPU time that was busy. Client, proxy and backend share
# the machine's cores: rates are "what this box does with all three on
# it"; CPU per request is the less contended figure.
#
# PERF=HZ also samples each measured run with `perf record -g -F HZ` and
# splits the peer's CPU per request by where it went: in the kernel by
# the system call it entered (or interrupts, or other), in the process by
# kind (the Go runtime's allocation and GC, its scheduler, the rest of
# it, the peer's own code, its libraries; a C peer by library). The
# split is by symbol names, a guide rather than an account; it is how
# issue 19 found where HTTP/2's time goes. Without perf it is skipped.
#
#   PERF=4000 PEERS="portmux haproxy go-loop" SCEN=h2c hack/bench-http.sh
#
# SCHED=1 records the kernel's scheduler (`perf sched record -a`) over
# each measured run into bin/bench/logs/sched-PEER-SCEN-REP.data: which
# threads of a peer did its work, and how long each waited for a core
# once runnable (`perf sched latency -p -i FILE`). It showed portmux's
# two relay loops running on three threads and waiting twice as long as
# haproxy's two (h1: 0.10-0.14 against 0.06 ms on average).
#
# REQLOGS=1 keeps h2load's request logs (bin/bench/logs/reqlog-*.tsv:
# start µs since the epoch, status, µs to the response's end) for a
# closer look at a tail than p99.
#
# Output: bin/bench/http-results.jsonl, bin/bench/http-results.md (and
# with PERF, http-perf.jsonl and http-perf.md) and each peer's log in
# bin/bench/logs/. Needs wrk, h2load (nghttp2-client), haproxy, nginx,
# openssl, python3. Everything stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"

OUT=${OUT_DIR:-$ROOT/bin/bench}
REPS=${REPS:-3}
D=${D:-5s}
C=${C:-64}
T=${T:-2}
H2C=${H2C:-8}
H2M=${H2M:-8}
BULK=${BULK:-2}
RATE=${RATE:-10000} # h1-rate and h2c-rate: requests/s in all
BASELINE=${BASELINE:-}
if [ -n "$BASELINE" ]; then
  PEERS=${PEERS:-portmux-before portmux haproxy go-minimal go-loop nginx}
else
  PEERS=${PEERS:-portmux haproxy go-minimal go-loop nginx}
fi
SCEN=${SCEN:-h1 h1-tls h2c h2-tls h1-bulk h1-rate h2c-rate}
PPROF=${PPROF:-}  # e.g. 127.0.0.1:6060: portmux serves pprof there
PERF=${PERF:-}    # e.g. 4000: perf samples per second, see above
SCHED=${SCHED:-}  # 1: record the scheduler, see above
REQLOGS=${REQLOGS:-}
PORTMUX_ARGS=${PORTMUX_ARGS:-} # more flags for portmux serve, e.g. --relay-loops=1
# portmux's environment: the soft memory limit `portmux serve` sets itself
# in the chart's default 512Mi container (85 %); on this host it finds no
# cgroup limit. Under a limit the dataplane collects garbage less often
# (dataplane/budget.GCPercent). PORTMUX_ENV= runs it without.
PORTMUX_ENV=${PORTMUX_ENV-GOMEMLIMIT=435MiB}
NICE=${NICE:--10} # everything at this priority when root
PLAIN=17443
TLSP=17444
BACKEND=17180
DIRECT_H2C=17181
DIRECT_TLS=17182
W=$OUT/http

for tool in wrk h2load haproxy nginx openssl python3; do
  command -v "$tool" >/dev/null || die "needs $tool (apt-get install wrk nghttp2-client haproxy nginx openssl python3)"
done
for p in $PLAIN $TLSP $BACKEND $DIRECT_H2C $DIRECT_TLS; do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then die "127.0.0.1:$p is in use; stop what holds it"; fi
done
if [ "$(id -u)" = 0 ] && [ -n "$NICE" ]; then
  renice -n "$NICE" -p $$ >/dev/null # children inherit it
fi
secs=${D%s}
if [ -n "$SCHED" ] && ! command -v perf >/dev/null; then
  log "perf not found (apt-get install linux-perf): SCHED ignored"
  SCHED=
fi
if [ -n "$PERF" ] && ! command -v perf >/dev/null; then
  log "perf not found (apt-get install linux-perf): PERF ignored"
  PERF=
fi

mkdir -p "$OUT/logs" "$W/nginx/logs"
rm -f "$OUT/http-results.jsonl" "$OUT/http-perf.jsonl" "$OUT/http-perf.md"
log "building portmux"
CGO_ENABLED=0 go build -trimpath -o "$OUT/portmux" ./cmd/portmux
CGO_ENABLED=0 go build -trimpath -o "$OUT/minhttp" ./hack/bench/minhttp
CGO_ENABLED=0 go build -trimpath -o "$OUT/minh2loop" ./hack/bench/minh2loop
if [ -n "$BASELINE" ]; then
  log "building portmux at $BASELINE as portmux-before"
  rm -rf "$W/baseline" && mkdir -p "$W/baseline"
  git archive --format=tar "$BASELINE" | tar -x -C "$W/baseline"
  (cd "$W/baseline" && CGO_ENABLED=0 go build -trimpath -o "$OUT/portmux-before" ./cmd/portmux)
fi

# One ECDSA P-256 certificate for every peer.
bench_cert "$W/bench" -newkey ec -pkeyopt ec_paramgen_curve:P-256

{
  portmux_head
  cat <<EOF
  listeners:
  - {name: plain, port: $PLAIN, maxConnections: 20000, maxConnectionsPerClient: 20000, maxConnectionRatePerClient: 1000000}
  - {name: tls, port: $TLSP, maxConnections: 20000, maxConnectionsPerClient: 20000, maxConnectionRatePerClient: 1000000,
     tls: {certificateRefs: [{name: bench-tls}], alpn: [h2, http/1.1]}}
  routes:
  - {name: web, listeners: [plain, tls], match: {protocol: http}, backend: {address: "127.0.0.1:$BACKEND", mode: http}}
---
EOF
  tls_secret bench-tls "$W/bench.crt" "$W/bench.key"
} >"$W/portmux.yaml"

cat >"$W/haproxy.cfg" <<EOF
global
    # Two descriptors per proxied connection against the box's hard limit
    # of 20000 open files.
    maxconn 9900
    ssl-default-bind-options ssl-min-ver TLSv1.2
    # nbthread is left to its default, one thread per CPU, unless
    # HAPROXY_THREADS says (beside PORTMUX_ARGS=--relay-loops=N).
    ${HAPROXY_THREADS:+nbthread $HAPROXY_THREADS}
defaults
    mode http
    option forwardfor
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    timeout http-request 10s
frontend web
    # HTTP/1.1 and h2c (prior knowledge, detected by its preface) in clear,
    # h2 and HTTP/1.1 by ALPN after TLS.
    bind 127.0.0.1:$PLAIN
    bind 127.0.0.1:$TLSP ssl crt $W/bench.pem alpn h2,http/1.1
    http-request set-header X-Forwarded-Proto https if { ssl_fc }
    http-request set-header X-Forwarded-Proto http unless { ssl_fc }
    default_backend web
backend web
    server nginx 127.0.0.1:$BACKEND
EOF

cat >"$W/nginx.conf" <<EOF
# The backend of every peer, and the "nginx direct" peer.
worker_processes auto;
pid $W/nginx/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    # h1-bulk's downloads: without a chunk limit, a worker sending the
    # 64 MiB body to a proxy that drains it as fast as it comes (one
    # that splices) sends all of it before it serves its other
    # connections, and the small requests beside it wait 100-200 ms
    # for nginx, not for the proxy.
    sendfile on;
    sendfile_max_chunk 256k;
    server {
        listen 127.0.0.1:$BACKEND;
        listen 127.0.0.1:$DIRECT_H2C http2;
        listen 127.0.0.1:$DIRECT_TLS ssl http2;
        ssl_certificate $W/bench.crt;
        ssl_certificate_key $W/bench.key;
        location / { return 200 "hello from nginx\n"; }
        location = /big.bin { root $W; }
    }
}
EOF

truncate -s 64M "$W/big.bin" # h1-bulk's download (sparse: no disk)
nginx -e stderr -p "$W/nginx/" -c "$W/nginx.conf" -g 'daemon off;' 2>"$OUT/logs/http-nginx.log" &
NGINX_PID=$!
kill_at_exit "$NGINX_PID"
wait_port $BACKEND

# cpu_ticks PID prints the CPU clock ticks (utime+stime) of PID and its
# children.
cpu_ticks() {
  local t=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    # Fields 14 and 15 after the command, which may hold spaces.
    t=$((t + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat")))
  done
  echo "$t"
}
HZ=$(getconf CLK_TCK)

# client_ticks PID prints the CPU clock ticks of shell PID's children that
# have ended and been waited for: the load's clients (wrk, h2load, curl).
# (In a command substitution $BASHPID is the substitution's own shell.)
client_ticks() { awk '{ sub(/^.*\) /, ""); print $14 + $15 }' "/proc/$1/stat"; }

# box_ticks prints the clock ticks all CPUs spent busy and idle so far.
box_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat; }

start_peer() { # peer -> sets PEER_PID
  local log=$OUT/logs/http-$1.log
  case $1 in
    portmux | portmux-before)
      local extra=()
      [ -n "$PPROF" ] && extra=(--pprof-addr "$PPROF")
      env $PORTMUX_ENV "$OUT/$1" serve -f "$W/portmux.yaml" --bind-address 127.0.0.1 \
        --log-connections=false --watch=false "${extra[@]}" $PORTMUX_ARGS >>"$log" 2>&1 &
      PEER_PID=$!
      wait_port $PLAIN
      wait_port $TLSP
      ;;
    haproxy)
      haproxy -db -f "$W/haproxy.cfg" >>"$log" 2>&1 &
      PEER_PID=$!
      wait_port $PLAIN
      ;;
    go-minimal | go-loop)
      local bin=minhttp
      [ "$1" = go-loop ] && bin=minh2loop
      "$OUT/$bin" -listen 127.0.0.1:$PLAIN -target 127.0.0.1:$BACKEND -tls-listen 127.0.0.1:$TLSP \
        -tls-cert "$W/bench.crt" -tls-key "$W/bench.key" >>"$log" 2>&1 &
      PEER_PID=$!
      wait_port $PLAIN
      wait_port $TLSP
      ;;
    nginx) PEER_PID=$NGINX_PID ;;
    *) die "unknown peer $1 (portmux, portmux-before, haproxy, go-minimal, go-loop, nginx)" ;;
  esac
}

stop_peer() {
  [ "$1" = nginx ] && return 0
  kill "$PEER_PID" 2>/dev/null || true
  wait "$PEER_PID" 2>/dev/null || true
  wait_free $PLAIN
}

# url PEER SCEN prints the URL the client loads.
url() {
  local plain=$PLAIN tls=$TLSP h2c=$PLAIN
  if [ "$1" = nginx ]; then plain=$BACKEND tls=$DIRECT_TLS h2c=$DIRECT_H2C; fi
  case $2 in
    h1 | h1-bulk | h1-rate) echo "http://127.0.0.1:$plain/" ;;
    h2c | h2c-rate) echo "http://127.0.0.1:$h2c/" ;;
    h1-tls | h2-tls) echo "https://127.0.0.1:$tls/" ;;
  esac
}

# load SCEN URL DURATION LOGFILE runs the client; its output on stdout.
load() {
  case $1 in
    h1 | h1-tls) wrk -t"$T" -c"$C" -d"$3" --latency "$2" ;;
    h1-bulk)
      local pids=() i sizes=$W/bulk-sizes
      : >"$sizes"
      for i in $(seq "$BULK"); do
        (while curl -s -o /dev/null -w '%{size_download}\n' "${2}big.bin" >>"$sizes"; do :; done) &
        pids+=($!)
      done
      sleep 0.5 # the downloads under way
      wrk -t1 -c4 -d"$3" --latency "$2"
      kill "${pids[@]}" 2>/dev/null || true
      wait "${pids[@]}" 2>/dev/null || true
      # Only whole downloads count; the window is wrk's plus the lead-in.
      echo "bulk bytes: $(awk -v want=$((64 << 20)) '$1 == want { s += $1 } END { printf "%.0f", s }' "$sizes") in $(("${3%s}" * 1000 + 500)) ms"
      ;;
    h2c | h2-tls | h1-rate | h2c-rate)
      local logf=() args=(-c"$H2C" -m"$H2M")
      [ -n "$4" ] && logf=(--log-file "$4")
      case $1 in
        h1-rate) args=(--h1 -c"$C" -m1 --rps="$((RATE / C))") ;;
        h2c-rate) args+=(--rps="$((RATE / H2C))") ;;
      esac
      h2load -t"$T" "${args[@]}" -D "${3%s}" "${logf[@]}" "$2"
      ;;
  esac
}

# run_peer PEER REP runs every scenario against PEER, started afresh.
run_peer() {
  local peer=$1 rep=$2 scen u raw reqlog perfdata before after me
  local backend_before backend_after client_before client_after box_before box_after
  start_peer "$peer"
  for scen in $SCEN; do
    case $peer:$scen in go-loop:h1*) continue ;; esac # HTTP/2 only
    u=$(url "$peer" "$scen")
    load "$scen" "$u" 1s "" >/dev/null 2>&1 || true
    raw=$OUT/logs/http-$peer-$scen-$rep.txt
    reqlog=$W/reqlog-$peer-$scen-$rep.tsv
    perfdata=$OUT/logs/perf-$peer-$scen-$rep.data
    if [ -n "$PERF" ]; then
      perf record -g -F "$PERF" -o "$perfdata" -p "$PEER_PID" -- sleep "$secs" >/dev/null 2>&1 &
      PERF_PID=$!
    fi
    if [ -n "$SCHED" ]; then
      perf sched record -a -o "$OUT/logs/sched-$peer-$scen-$rep.data" -- sleep "$secs" >/dev/null 2>&1 &
      SCHED_PID=$!
    fi
    me=$BASHPID
    before=$(cpu_ticks "$PEER_PID")
    backend_before=$(cpu_ticks "$NGINX_PID") client_before=$(client_ticks "$me") box_before=$(box_ticks)
    load "$scen" "$u" "$D" "$reqlog" >"$raw" 2>&1 || failed=1
    after=$(cpu_ticks "$PEER_PID")
    backend_after=$(cpu_ticks "$NGINX_PID") client_after=$(client_ticks "$me") box_after=$(box_ticks)
    [ -n "$PERF" ] && { wait "$PERF_PID" || true; }
    [ -n "$SCHED" ] && { wait "$SCHED_PID" || true; }
    python3 - "$raw" "$reqlog" "$peer" "$scen" "$rep" $((after - before)) "$HZ" \
      $((backend_after - backend_before)) $((client_after - client_before)) \
      "$box_before" "$box_after" >>"$OUT/http-results.jsonl" <<'EOF' || failed=1
import json, re, sys
raw, reqlog, peer, scen, rep, ticks, hz, backend_ticks, client_ticks, box_before, box_after = sys.argv[1:]
text = open(raw).read()
r = {"peer": peer, "scenario": scen, "rep": int(rep)}
def dur_ms(v):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", v)
    return float(m[1]) * {"us": 1e-3, "ms": 1, "s": 1e3}[m[2]]
if scen in ("h1", "h1-tls", "h1-bulk"):  # wrk
    r["per_second"] = float(re.search(r"Requests/sec:\s+([\d.]+)", text)[1])
    r["requests"] = int(re.search(r"(\d+) requests in", text)[1])
    r["p50_ms"] = dur_ms(re.search(r"\s50%\s+(\S+)", text)[1])
    r["p99_ms"] = dur_ms(re.search(r"\s99%\s+(\S+)", text)[1])
    r["p90_ms"] = dur_ms(re.search(r"\s90%\s+(\S+)", text)[1])
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["failures"] = (int(bad[1]) if bad else 0) + (sum(map(int, errs.groups())) if errs else 0)
    bulk = re.search(r"bulk bytes: (\d+) in (\d+) ms", text)
    if bulk:
        r["bulk_mb_per_second"] = int(bulk[1]) / 1e6 / (int(bulk[2]) / 1e3)
else:  # h2load
    r["per_second"] = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", text)[1])
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text)
    r["requests"] = int(m[2])
    r["failures"] = int(m[4]) + int(m[5]) + int(m[6])
    rows = [l.split("\t") for l in open(reqlog) if l.strip()]
    lat = sorted(int(f[2]) for f in rows)
    def quantile_ms(num, den):
        return lat[min(len(lat) - 1, len(lat) * num // den)] / 1e3
    r["p50_ms"] = quantile_ms(1, 2)
    r["p99_ms"] = quantile_ms(99, 100)
    r["p90_ms"] = quantile_ms(90, 100)
    r["p999_ms"] = quantile_ms(999, 1000)
    # Stalls: a millisecond or more in which no response reached the
    # client at all. A peer's tail shows here first (issue 19 found
    # the relay loops' parking this way). At a steady rate the gaps
    # are the client's own: not counted.
    if not scen.endswith("-rate"):
        done = sorted(int(f[0]) + int(f[2]) for f in rows)
        span = (done[-1] - done[0]) / 1e6 if len(done) > 1 else 0
        stalls = sum(1 for a, b in zip(done, done[1:]) if b - a >= 1000)
        r["stalls_per_second"] = stalls / span if span else 0
r["cpu_us_per_request"] = int(ticks) / int(hz) * 1e6 / max(r["requests"], 1)
# What the rest of the box spent beside the peer: the backend (nginx; for
# the nginx peer, the same processes) and the load's clients, per request,
# and how much of all the CPUs' time was busy. A proxy that makes its
# neighbours work harder, or leaves a core idle, shows here.
r["backend_cpu_us_per_request"] = int(backend_ticks) / int(hz) * 1e6 / max(r["requests"], 1)
r["client_cpu_us_per_request"] = int(client_ticks) / int(hz) * 1e6 / max(r["requests"], 1)
(b0, i0), (b1, i1) = map(int, box_before.split()), map(int, box_after.split())
r["box_busy_share"] = (b1 - b0) / max((b1 - b0) + (i1 - i0), 1)
print(json.dumps(r))
EOF
    if [ -n "$REQLOGS" ] && [ -f "$reqlog" ]; then
      mv "$reqlog" "$OUT/logs/"
    fi
    rm -f "$reqlog"
    tail -n1 "$OUT/http-results.jsonl" >&2
    if [ -n "$PERF" ]; then
      perf script -i "$perfdata" -F ip,sym,dso 2>/dev/null |
        python3 "$ROOT/hack/bench/perfsplit.py" "$peer" "$scen" "$rep" "$PERF" \
          "$(tail -n1 "$OUT/http-results.jsonl")" >>"$OUT/http-perf.jsonl" || failed=1
      rm -f "$perfdata"
    fi
  done
  stop_peer "$peer"
}

failed=0
each_repeat run_peer

python3 - "$OUT/http-results.jsonl" >"$OUT/http-results.md" <<'EOF'
import collections, json, statistics, sys
groups = collections.defaultdict(list)  # (scenario, peer) -> runs
for line in open(sys.argv[1]):
    r = json.loads(line)
    groups[r["scenario"], r["peer"]].append(r)
med = statistics.median
order = {"h1": 0, "h1-tls": 1, "h2c": 2, "h2-tls": 3, "h1-bulk": 4, "h1-rate": 5, "h2c-rate": 6}
rows = sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1]))
print("| scenario | peer | req/s (median [min–max]) | p50 / p99 ms | CPU µs/request | failures |")
print("|---|---|---|---|---|---|")
for (scen, peer), rs in rows:
    v = [r["per_second"] for r in rs]
    rng = f" [{min(v):.0f}–{max(v):.0f}]" if len(v) > 1 else ""
    print(f"| {scen} | {peer} | {med(v):.0f}{rng} | {med([r['p50_ms'] for r in rs]):.2f} / {med([r['p99_ms'] for r in rs]):.2f}"
          f" | {med([r['cpu_us_per_request'] for r in rs]):.1f} | {sum(r['failures'] for r in rs)} |")

def extra(field, heading, digits):
    """Prints a table of field for the runs that report it."""
    got = [(k, rs) for k, rs in rows if field in rs[0]]
    if not got:
        return
    print()
    print(f"| scenario | peer | {heading} (median [min–max]) |")
    print("|---|---|---|")
    for (scen, peer), rs in got:
        v = [r[field] for r in rs]
        print(f"| {scen} | {peer} | {med(v):.{digits}f} [{min(v):.{digits}f}–{max(v):.{digits}f}] |")

# Where a tail starts: p99 alone cannot tell a wider spread (p90 up as
# well) from rare stalls (p99.9 up, p90 not). wrk reports no p99.9.
print()
print("| scenario | peer | p50 / p90 / p99 / p99.9 ms (medians) |")
print("|---|---|---|")
for (scen, peer), rs in rows:
    qs = ["p50_ms", "p90_ms", "p99_ms", "p999_ms"]
    cells = [f"{med([r[q] for r in rs]):.2f}" if q in rs[0] else "—" for q in qs]
    print(f"| {scen} | {peer} | {' / '.join(cells)} |")

# portmux against portmux-before, repeat by repeat: the two ran minutes
# apart in each repeat, so the ratio of a repeat cancels most of what
# the box's other load did to both, which the medians above keep.
byrep = collections.defaultdict(dict)  # (scenario, rep) -> peer -> run
for (scen, peer), rs in rows:
    for r in rs:
        byrep[scen, r["rep"]][peer] = r
pairs = collections.defaultdict(list)  # scenario -> [(after, before)]
for (scen, _), peers in sorted(byrep.items()):
    if "portmux" in peers and "portmux-before" in peers:
        pairs[scen].append((peers["portmux"], peers["portmux-before"]))
if pairs:
    print()
    print("portmux over portmux-before: the median of the repeats' ratios [min–max]")
    print()
    print("| scenario | req/s | CPU per request | p99 | repeats |")
    print("|---|---|---|---|---|")
    for scen in sorted(pairs, key=lambda s: order.get(s, 9)):
        cells = []
        for f in ("per_second", "cpu_us_per_request", "p99_ms"):
            v = [a[f] / b[f] for a, b in pairs[scen] if b[f]]
            cells.append(f"{med(v):.3f} [{min(v):.2f}–{max(v):.2f}]" if v else "—")
        print(f"| {scen} | {' | '.join(cells)} | {len(pairs[scen])} |")

extra("stalls_per_second", "stalls of 1 ms or more with no response, per second", 1)
extra("backend_cpu_us_per_request", "the backend's (nginx) CPU µs per request", 1)
extra("client_cpu_us_per_request", "the clients' CPU µs per request", 1)
extra("box_busy_share", "share of the box's CPU time busy", 3)
extra("bulk_mb_per_second", "downloads beside it, MB/s", 0)
EOF
cat "$OUT/http-results.md"
if [ -s "$OUT/http-perf.jsonl" ]; then
  python3 "$ROOT/hack/bench/perfsplit.py" -summary "$OUT/http-perf.jsonl" >"$OUT/http-perf.md"
  cat "$OUT/http-perf.md"
fi
if [ "$failed" != 0 ]; then
  log "some runs failed: see bin/bench/logs/http-*"
fi
exit "$failed"
