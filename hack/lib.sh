# shellcheck shell=bash
# Functions the scripts in hack/ share. Source it with
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# (from hack/; adjust the path below it).

# log writes its arguments to stderr, after the script's name.
log() { printf '%s: %s\n' "$(basename "$0" .sh)" "$*" >&2; }

# die logs an error and exits.
die() {
	log "error: $*"
	exit 1
}

# mod_version DIR MODULE prints the version MODULE is required at in
# DIR/go.mod (replace lines have "=>" as second field and never match).
mod_version() {
	awk -v mod="$2" '
		$1 == "require" { $1 = ""; $0 = $0 }
		$1 == mod && $2 ~ /^v[0-9]/ { print $2; exit }
	' "$1/go.mod"
}

# k8s_release DIR sets k8s_version, k8s_major and k8s_minor to the
# k8s.io/kubernetes release DIR/go.mod requires, or dies.
k8s_release() {
	k8s_version=$(mod_version "$1" k8s.io/kubernetes)
	[[ $k8s_version =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]] ||
		die "cannot read a k8s.io/kubernetes release version from $1/go.mod (got '${k8s_version}')"
	k8s_major=${BASH_REMATCH[1]}
	k8s_minor=${BASH_REMATCH[2]}
}

# wait_port PORT waits (10 s at most) until something listens on
# 127.0.0.1:PORT, or dies.
wait_port() {
	for _ in $(seq 200); do
		(exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
		sleep 0.05
	done
	die "nothing listens on 127.0.0.1:$1"
}

# wait_free PORT waits (10 s at most) until nothing listens on
# 127.0.0.1:PORT.
wait_free() {
	for _ in $(seq 200); do
		(exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null || return 0
		sleep 0.05
	done
}

# bench_knobs DIR sets the knobs every benchmark script has, where the
# environment leaves them unset: OUT_DIR (bin/DIR), REPS (3) and D (5s).
bench_knobs() {
	OUT_DIR=${OUT_DIR:-$PWD/bin/$1}
	REPS=${REPS:-3}
	D=${D:-5s}
}

# bench_tools builds what the muxload benchmarks run from this tree into
# $OUT_DIR: muxload, portmux and minrelay (both static, as released), and
# with BASELINE=REV portmux at git revision REV as portmux-before, for a
# before/after in one run.
bench_tools() {
	log "building muxload, portmux and minrelay"
	mkdir -p "$OUT_DIR/logs"
	go build -o "$OUT_DIR/muxload" ./hack/bench/muxload
	CGO_ENABLED=0 go build -trimpath -o "$OUT_DIR/portmux" ./cmd/portmux
	CGO_ENABLED=0 go build -trimpath -o "$OUT_DIR/minrelay" ./hack/bench/minrelay
	if [ -n "${BASELINE:-}" ]; then
		log "building portmux at $BASELINE as portmux-before"
		rm -rf "$OUT_DIR/baseline" && mkdir -p "$OUT_DIR/baseline"
		git archive --format=tar "$BASELINE" | tar -x -C "$OUT_DIR/baseline"
		(cd "$OUT_DIR/baseline" && CGO_ENABLED=0 go build -trimpath -o "$OUT_DIR/portmux-before" ./cmd/portmux)
	fi
}

# bench_apt PKG... installs the Debian packages PKG... when run as root,
# and stops the system services they start (a benchmark runs its own);
# otherwise it exits 2 saying what to install.
bench_apt() {
	[ "$(id -u)" = 0 ] || { log "missing $*: apt-get install $*"; exit 2; }
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
	local p
	for p in "$@"; do
		(systemctl stop "$p" || service "$p" stop) >/dev/null 2>&1 || true
	done
}

# tls_secret NAME CRT KEY prints a kubernetes.io/tls Secret named NAME in
# namespace default holding the PEM files CRT and KEY, for `portmux serve -f`.
tls_secret() {
	printf 'apiVersion: v1\nkind: Secret\nmetadata: {name: %s, namespace: default}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n' "$1"
	sed 's/^/    /' "$2"
	echo "  tls.key: |"
	sed 's/^/    /' "$3"
}

# bench_cert PREFIX KEYARGS... writes a self-signed certificate for
# bench.test with a new key made by `openssl req KEYARGS`: PREFIX.crt,
# PREFIX.key, and both in PREFIX.pem (haproxy's crt).
bench_cert() {
	local p=$1
	shift
	openssl req -x509 "$@" -nodes -days 2 -subj /CN=bench.test \
		-addext subjectAltName=DNS:bench.test -keyout "$p.key" -out "$p.crt" 2>/dev/null
	cat "$p.crt" "$p.key" >"$p.pem"
}

# portmux_head prints the head of the PortMux named bench that the
# benchmarks give `portmux serve -f`, up to its spec's first key.
portmux_head() {
	printf 'apiVersion: portmux.dev/v1alpha1\nkind: PortMux\nmetadata: {name: bench, namespace: default}\nspec:\n'
}

# kill_at_exit PID kills PID when the script exits, and waits for it.
kill_at_exit() {
	BG_PIDS+=("$1")
	trap 'for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
}
BG_PIDS=()

# mux_cmd NAME prints the command line that runs TCP mux NAME of the
# muxload contract in the foreground (portmux, haproxy, sslh-fork,
# go-minimal): binaries from $OUT_DIR, configs from $PEER_CONF, listening
# on $ADDR, go-minimal relaying to the ssh backend at $BASE+1.
mux_cmd() {
	case $1 in
	portmux | portmux-before) echo "$OUT_DIR/$1 serve -f $PEER_CONF/portmux.yaml --bind-address 127.0.0.1 --log-connections=false --watch=false ${PORTMUX_ARGS:-}" ;;
	haproxy) echo "haproxy -db -f $PEER_CONF/haproxy.cfg" ;;
	sslh-fork) echo "sslh -F$PEER_CONF/sslh.cfg" ;;
	go-minimal) echo "$OUT_DIR/minrelay -listen $ADDR -target 127.0.0.1:$((${BASE:-17000} + 1))" ;;
	*) die "unknown mux $1 (portmux, portmux-before, haproxy, sslh-fork, go-minimal)" ;;
	esac
}

# peers_in_turn REP prints PEERS in their order on odd repeats and the
# other way round on even ones. A peer run first in a repeat meets a box
# in another state than one run last (the backends just started, the
# previous repeat's load just gone): two identical builds, one after the
# other in every repeat, differed by 7 % in CPU per connection.
peers_in_turn() {
	local -a p
	read -r -a p <<<"$PEERS"
	if (($1 % 2 == 0)); then
		local i
		for ((i = ${#p[@]} - 1; i >= 0; i--)); do echo "${p[i]}"; done
	else
		printf '%s\n' "${p[@]}"
	fi
}

# each_repeat FN ARG... calls `FN PEER REP ARG...` for every peer of PEERS
# in each of REPS repeats, the peers in turn (peers_in_turn), saying on
# stderr which repeat starts. Every bench interleaves its peers so; FN
# records its own failures.
each_repeat() {
	local fn=$1 rep peer
	shift
	for rep in $(seq 1 "$REPS"); do
		echo "=== repeat $rep of $REPS" >&2
		for peer in $(peers_in_turn "$rep"); do
			"$fn" "$peer" "$rep" "$@"
		done
	done
}

# bench_repeats RESULTS FLAG... runs `$OUT_DIR/muxload run` REPS times
# against each of PEERS, from $OUT_DIR, at priority NICE when root: each peer
# with FLAG... and the flags the caller's `peer_args NAME` sets in args (no
# flags: the peer is skipped). Results go to RESULTS.jsonl, logs to logs/,
# the table to RESULTS-table.md. Returns 1 when a run failed or misrouted.
bench_repeats() {
	local results=$1
	shift
	bench_failed=0
	cd "$OUT_DIR"
	each_repeat bench_run "$results" "$@"
	"$OUT_DIR/muxload" table "$results.jsonl" | tee "$results-table.md"
	if [ "$bench_failed" != 0 ]; then
		echo "some runs failed or were misrouted: see $results.jsonl and logs/" >&2
	fi
	return "$bench_failed"
}

# bench_run PEER REP RESULTS FLAG... is one run of bench_repeats; a
# failed or misrouted one sets bench_failed.
bench_run() {
	local peer=$1 rep=$2 results=$3 run=("$OUT_DIR/muxload")
	shift 3
	if [ "$(id -u)" = 0 ] && [ -n "$NICE" ]; then run=(nice -n "$NICE" "${run[@]}"); fi
	peer_args "$peer"
	[ ${#args[@]} -gt 0 ] || return 0
	"${run[@]}" run -peer "$peer" -rep "$rep" "${args[@]}" "$@" \
		-quiet "${QUIET:-0.3}" -quiet-wait "${QUIET_WAIT:-30s}" -retries 1 \
		-out "$results.jsonl" -logdir logs || bench_failed=1
}
