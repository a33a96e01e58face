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
