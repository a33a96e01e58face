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

# bench_repeats RESULTS FLAG... runs `$OUT_DIR/muxload run` REPS times
# against each of PEERS, from $OUT_DIR, at priority NICE when root: each peer
# with FLAG... and the flags the caller's `peer_args NAME` sets in args (no
# flags: the peer is skipped). Results go to RESULTS.jsonl, logs to logs/,
# the table to RESULTS-table.md. Returns 1 when a run failed or misrouted.
bench_repeats() {
	local results=$1 run=("$OUT_DIR/muxload") failed=0 rep peer
	shift
	if [ "$(id -u)" = 0 ] && [ -n "$NICE" ]; then run=(nice -n "$NICE" "${run[@]}"); fi
	cd "$OUT_DIR"
	for rep in $(seq 1 "$REPS"); do
		echo "=== repeat $rep of $REPS" >&2
		for peer in $PEERS; do
			peer_args "$peer"
			[ ${#args[@]} -gt 0 ] || continue
			"${run[@]}" run -peer "$peer" -rep "$rep" "${args[@]}" "$@" \
				-quiet "${QUIET:-0.3}" -quiet-wait "${QUIET_WAIT:-30s}" -retries 1 \
				-out "$results.jsonl" -logdir logs || failed=1
		done
	done
	"$OUT_DIR/muxload" table "$results.jsonl" | tee "$results-table.md"
	if [ "$failed" != 0 ]; then
		echo "some runs failed or were misrouted: see $results.jsonl and logs/" >&2
	fi
	return "$failed"
}
