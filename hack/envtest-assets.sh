#!/usr/bin/env bash
# Provide the envtest control plane (kube-apiserver, etcd, kubectl) without
# downloading prebuilt binaries: they are built from source with the Go
# toolchain, using only the Go module proxy, from the builder module in
# hack/envtest (its own go.mod/go.sum, outside the main module).
#
# Prints exactly one line on stdout: the directory to use as
# KUBEBUILDER_ASSETS. Everything else goes to stderr.
#
#   export KUBEBUILDER_ASSETS="$(hack/envtest-assets.sh)"
#
# Results are cached in
#   ${PORTMUX_CACHE:-$HOME/.cache/portmux}/envtest/k8s-<ver>-etcd-<ver>-<hash>
# where <hash> covers the builder module (go.mod, go.sum, etcd/main.go), the
# build recipe revision below and the host OS/architecture. A cache hit
# prints the directory at once without running go. A build happens in a
# temporary directory next to the cache entry and is renamed into place only
# once all three binaries are built and checked, so a half-finished build
# never looks complete.
#
# A cold build takes several minutes and a few GB of Go build cache.
set -euo pipefail

# Bump when the way the binaries are built changes (flags, stamping, ...), so
# that existing cache entries are not reused.
readonly ASSETS_REVISION=1

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
source "$script_dir/lib.sh"
builder_dir="$script_dir/envtest"
[[ -f $builder_dir/go.mod && -f $builder_dir/go.sum ]] ||
	die "builder module not found at $builder_dir (expected go.mod and go.sum)"

k8s_release "$builder_dir"
etcd_version=$(mod_version "$builder_dir" go.etcd.io/etcd/server/v3)
[[ -n $etcd_version ]] ||
	die "cannot read the go.etcd.io/etcd/server/v3 version from $builder_dir/go.mod"

sha256() {
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum
	elif command -v shasum >/dev/null 2>&1; then
		shasum -a 256
	else
		die "need sha256sum or shasum"
	fi
}

key=$(
	{
		printf 'envtest-assets revision %s\n' "$ASSETS_REVISION"
		printf 'host %s %s\n' "$(uname -s)" "$(uname -m)"
		cat "$builder_dir/go.mod" "$builder_dir/go.sum" "$builder_dir/etcd/main.go"
	} | sha256 | cut -c1-12
)

cache_root="${PORTMUX_CACHE:-${HOME:?HOME is not set; set PORTMUX_CACHE}/.cache/portmux}/envtest"
dest="$cache_root/k8s-${k8s_version#v}-etcd-${etcd_version#v}-$key"
binaries=(kube-apiserver etcd kubectl)

complete() {
	local b
	for b in "${binaries[@]}"; do
		[[ -f $1/$b && -x $1/$b ]] || return 1
	done
}

if complete "$dest"; then
	printf '%s\n' "$dest"
	exit 0
fi

command -v go >/dev/null 2>&1 ||
	die "go is not on PATH; the envtest control plane is built from source and needs the Go toolchain (see hack/envtest/go.mod for the version)"

mkdir -p "$cache_root"

# Serialise concurrent builds of the same machine's cache (e.g. parallel make
# targets); whoever waits finds the finished entry afterwards.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$cache_root/.lock"
	if ! flock -n 9; then
		log "waiting for another envtest-assets build to finish"
		flock 9
	fi
	if complete "$dest"; then
		printf '%s\n' "$dest"
		exit 0
	fi
	# Holding the lock, no other build is running: anything left over from
	# an interrupted one can go.
	rm -rf "$cache_root"/.build-*
fi

tmp=$(mktemp -d "$cache_root/.build-XXXXXX")
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Build strictly from the builder module: no workspace from a parent
# directory, no cgo, host platform, go.sum must already be complete.
export GOWORK=off CGO_ENABLED=0
unset GOOS GOARCH
cd "$builder_dir"

log "building envtest control plane: kubernetes $k8s_version, etcd $etcd_version ($(go env GOVERSION))"
log "cache entry: $dest"
start=$SECONDS

log "go mod download"
go mod download

build_date=$(go list -mod=readonly -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes 2>/dev/null || true)
[[ -n $build_date ]] || build_date="1970-01-01T00:00:00Z"

# kube-apiserver and kubectl compare versions from these variables (the
# defaults are v0.0.0-master+...), so stamp them like a release build.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$k8s_version"
	ldflags+=" -X $pkg.gitMajor=$k8s_major"
	ldflags+=" -X $pkg.gitMinor=$k8s_minor"
	ldflags+=" -X $pkg.gitTreeState=clean"
	ldflags+=" -X $pkg.gitCommit="
	ldflags+=" -X $pkg.buildDate=$build_date"
done

build() {
	local name=$1 pkg=$2 t=$SECONDS
	log "go build $pkg"
	go build -mod=readonly -trimpath -ldflags "$ldflags" -o "$tmp/$name" "$pkg"
	log "built $name in $((SECONDS - t))s"
}
build etcd ./etcd
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kubectl k8s.io/kubernetes/cmd/kubectl

# Check that each binary runs and reports the expected version.
check() {
	local name=$1 want=$2 out
	out=$("$tmp/$name" "${@:3}" 2>&1) || die "$name ${*:3} failed: $out"
	[[ $out == *"$want"* ]] || die "$name reports '$out', expected it to mention $want"
}
check kube-apiserver "$k8s_version" --version
check kubectl "$k8s_version" version --client
check etcd "${etcd_version#v}" --version

complete "$tmp" || die "build finished but binaries are missing in $tmp"
chmod 0755 "$tmp"
# Only an incomplete leftover can be here (a complete one returned above).
[[ ! -e $dest ]] || rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT

log "done in $((SECONDS - start))s"
printf '%s\n' "$dest"
