#!/usr/bin/env bash
# Build (or reuse) a kind node image without any container registry: from
# Debian bookworm's packages and from Kubernetes, etcd and CoreDNS built with
# the Go toolchain from the Go module proxy. `kind build node-image` cannot run
# here (it pulls kindest/base and the control-plane images), so this script
# does what it does, by hand:
#
#   1. a Debian base image, portmux.local/debian:bookworm: `debootstrap
#      --variant=minbase bookworm` imported with `docker import` (also the
#      base of the e2e peers image: it has apt-get);
#   2. the binaries: kube-apiserver, etcd and kubectl from
#      hack/envtest-assets.sh (same versions, already built for envtest);
#      kubelet, kubeadm, kube-controller-manager, kube-scheduler and
#      kube-proxy from the builder module hack/kindnode/builder; CoreDNS from
#      hack/kindnode/coredns; a Go pause (hack/kindnode/builder/pause);
#   3. the images `kubeadm config images list` names for this version
#      (registry.k8s.io/kube-apiserver:v1.37.2, ..., etcd, coredns, pause),
#      one binary each on a nearly empty root; kube-proxy on the Debian base
#      with iptables, nftables and conntrack;
#   4. the node: kind's own node files (sigs.k8s.io/kind's images/base/files,
#      from the Go module cache), Debian's systemd, containerd 1.6, runc and
#      CNI plugins, the files in hack/kindnode/node (containerd config, a ptp
#      CNI network, a cgroup v1 fix for kubelet), kubelet, kubeadm and
#      kubectl; then the images of step 3 imported into the node's containerd
#      store (unpacked at first use), as kind's own build does.
#
# Prints exactly one line on stdout: the node image's name (default
# portmux.local/kind-node:<kubernetes version>). Everything else goes to
# stderr. Create a cluster from it with the config patches it needs:
#
#   kind create cluster --image "$(hack/kind-node-image.sh)" --config hack/kindnode/kind-config.yaml
#
# Idempotent and cached by version: the node image carries a label with a key
# that hashes everything it is built from (this script, the builder modules,
# hack/kindnode/node, the envtest assets' key, kind's version); when the Docker
# engine has an image with that key nothing is done. Binaries are cached in
#   ${PORTMUX_CACHE:-$HOME/.cache/portmux}/kind/bin-<k8s version>-<hash>
# and the Debian rootfs in .../kind/debian-bookworm-minbase.tar.gz, so a
# Docker engine with an empty store rebuilds the images in a few minutes
# without compiling anything. A cold build compiles for a long while (see
# hack/envtest-assets.sh; here five more Kubernetes commands and CoreDNS).
#
# Needs: root (debootstrap), a Docker engine that can run privileged
# containers (hack/kindnode/dockerd.sh starts one), Go, apt (for debootstrap
# and for the packages installed in `docker build`).
#
# Environment: KIND_NODE_IMAGE (the name to build), PORTMUX_CACHE, DOCKER,
# KIND_VERSION (whose node files to use; default the Makefile's),
# DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail

# Bump when the way the image is built changes in a way the hashed inputs do
# not show, so that existing images and cache entries are not reused.
readonly NODE_REVISION=1
readonly BIN_REVISION=1

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
source "$script_dir/lib.sh"
repo_root=$(cd "$script_dir/.." && pwd)
kn="$script_dir/kindnode"
builder="$kn/builder"
coredns_mod="$kn/coredns"
docker=${DOCKER:-docker}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
base_image=portmux.local/debian:bookworm
kind_version=${KIND_VERSION:-$(awk '$1 == "KIND_VERSION" && $2 == "?=" { print $3; exit }' "$repo_root/Makefile")}
[[ -n $kind_version ]] || die "no KIND_VERSION in the Makefile"

sha256() { sha256sum | cut -c1-12; }

k8s_release "$builder"
coredns_version=$(mod_version "$coredns_mod" github.com/coredns/coredns)
[[ -n $coredns_version ]] || die "cannot read the CoreDNS version from $coredns_mod/go.mod"
envtest_version=$(mod_version "$script_dir/envtest" k8s.io/kubernetes)
[[ $envtest_version == "$k8s_version" ]] ||
	die "hack/envtest builds Kubernetes $envtest_version, hack/kindnode/builder $k8s_version: keep them equal"

image=${KIND_NODE_IMAGE:-portmux.local/kind-node:$k8s_version}
cache_root="${PORTMUX_CACHE:-${HOME:?HOME is not set; set PORTMUX_CACHE}/.cache/portmux}/kind"
mkdir -p "$cache_root"

command -v "$docker" >/dev/null 2>&1 || die "no docker CLI ($docker)"
"$docker" info >/dev/null 2>&1 || die "no Docker engine answers ('$docker info' failed; hack/kindnode/dockerd.sh starts one)"

# The envtest assets first: their directory name carries their own key.
envtest_dir=$("$script_dir/envtest-assets.sh")

bin_key=$(
	{
		printf 'kind-node-image binaries revision %s\nhost %s %s\n' "$BIN_REVISION" "$(uname -s)" "$(uname -m)"
		cat "$builder/go.mod" "$builder/go.sum" "$builder/pause/main.go" "$coredns_mod/go.mod" "$coredns_mod/go.sum"
	} | sha256
)
bin_dir="$cache_root/bin-${k8s_version#v}-$bin_key"
node_key=$(
	{
		printf 'kind-node-image revision %s\nkind %s\nmirror %s\n' "$NODE_REVISION" "$kind_version" "$mirror"
		printf 'binaries %s\nenvtest %s\n' "$bin_key" "$(basename "$envtest_dir")"
		cat "$script_dir/$(basename "${BASH_SOURCE[0]}")"
		find "$kn/node" -type f | LC_ALL=C sort | xargs cat
	} | sha256
)
readonly label=dev.portmux.kind-node.key

have_node() {
	[[ $("$docker" image inspect --format "{{index .Config.Labels \"$label\"}}" "$image" 2>/dev/null) == "$node_key" ]]
}
if have_node; then
	printf '%s\n' "$image"
	exit 0
fi

# Serialise concurrent builds; whoever waits finds the finished image.
exec 9>"$cache_root/.lock"
if ! flock -n 9; then
	log "waiting for another kind-node-image build to finish"
	flock 9
fi
if have_node; then
	printf '%s\n' "$image"
	exit 0
fi
rm -rf "$cache_root"/.build-*
start=$SECONDS
log "building $image (key $node_key): Kubernetes $k8s_version, CoreDNS $coredns_version, kind $kind_version node files"

# --- 1. the Debian base image ---------------------------------------------
rootfs_tar="$cache_root/debian-bookworm-minbase.tar.gz"
if ! "$docker" image inspect "$base_image" >/dev/null 2>&1; then
	if [[ ! -s $rootfs_tar ]]; then
		[[ $(id -u) == 0 ]] || die "debootstrap needs root"
		if ! command -v debootstrap >/dev/null 2>&1; then
			log "apt-get install debootstrap"
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null ||
				{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
		fi
		t=$SECONDS
		rootfs=$(mktemp -d "$cache_root/.build-rootfs-XXXXXX")
		log "debootstrap --variant=minbase bookworm ($mirror)"
		debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 ||
			{ tail -20 "$rootfs.log" >&2; die "debootstrap failed (log: $rootfs.log)"; }
		rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
		tar -C "$rootfs" --numeric-owner -czf "$rootfs_tar.tmp" .
		mv "$rootfs_tar.tmp" "$rootfs_tar"
		rm -rf "$rootfs" "$rootfs.log"
		log "debootstrap done in $((SECONDS - t))s"
	fi
	log "docker import $base_image"
	"$docker" import -c 'CMD ["/bin/bash"]' "$rootfs_tar" "$base_image" >/dev/null
fi

# --- 2. the binaries --------------------------------------------------------
bin_names=(kubelet kubeadm kube-controller-manager kube-scheduler kube-proxy coredns pause)
bins_complete() {
	local b
	for b in "${bin_names[@]}"; do [[ -x $1/$b ]] || return 1; done
}
if ! bins_complete "$bin_dir"; then
	command -v go >/dev/null 2>&1 || die "go is not on PATH"
	tmp_bin=$(mktemp -d "$cache_root/.build-bin-XXXXXX")
	export GOWORK=off CGO_ENABLED=0
	unset GOOS GOARCH
	build_date=$(cd "$builder" && go list -mod=readonly -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)
	[[ -n $build_date ]] || build_date="1970-01-01T00:00:00Z"
	# Stamped like a release build, as hack/envtest-assets.sh does: kubeadm
	# and kubelet compare versions with these.
	ldflags="-s -w"
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$k8s_major -X $pkg.gitMinor=$k8s_minor"
		ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit= -X $pkg.buildDate=$build_date"
	done
	gobuild() {
		local dir=$1 name=$2 flags=$3 pkg=$4 t=$SECONDS
		log "go build $pkg"
		(cd "$dir" && go build -mod=readonly -trimpath -ldflags "$flags" -o "$tmp_bin/$name" "$pkg")
		log "built $name in $((SECONDS - t))s"
	}
	(cd "$builder" && go mod download) && (cd "$coredns_mod" && go mod download)
	for c in kubeadm kubelet kube-controller-manager kube-scheduler kube-proxy; do
		gobuild "$builder" "$c" "$ldflags" "k8s.io/kubernetes/cmd/$c"
	done
	gobuild "$builder" pause "-s -w -X main.version=builder" ./pause
	gobuild "$coredns_mod" coredns "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$coredns_version" github.com/coredns/coredns
	for c in kubeadm kubelet kube-controller-manager kube-scheduler kube-proxy; do
		out=$("$tmp_bin/$c" --version 2>&1 || "$tmp_bin/$c" version -o short 2>&1) || true
		[[ $out == *"$k8s_version"* ]] || die "$c reports '$out', expected $k8s_version"
	done
	out=$("$tmp_bin/coredns" -version 2>&1) || true
	[[ $out == *"${coredns_version#v}"* ]] || die "coredns reports '$out', expected $coredns_version"
	chmod 0755 "$tmp_bin"
	rm -rf "$bin_dir"
	mv "$tmp_bin" "$bin_dir"
fi

# --- 3. the control-plane images -------------------------------------------
work=$(mktemp -d "$cache_root/.build-node-XXXXXX")
build_ctr=
cleanup() {
	[[ -z $build_ctr ]] || "$docker" rm -f -v "$build_ctr" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mapfile -t wanted < <("$bin_dir/kubeadm" config images list --kubernetes-version "$k8s_version" 2>/dev/null)
((${#wanted[@]} >= 6)) || die "kubeadm config images list printed: ${wanted[*]}"
etcd_version=$("$envtest_dir/etcd" --version | awk '/^etcd Version:/ { print $3 }')

# dbuild ARGS...: docker build, quiet unless it fails.
dbuild() {
	"$docker" build -q "$@" >"$work/build.log" 2>&1 || {
		tail -40 "$work/build.log" >&2
		die "docker build $* failed"
	}
}

# A nearly empty root for the single-binary images: /tmp, a nobody user, the
# CA bundle, PATH.
mkdir -p "$work/root/tmp" "$work/root/etc/ssl/certs"
chmod 1777 "$work/root/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$work/root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$work/root/etc/group"
cp /etc/ssl/certs/ca-certificates.crt "$work/root/etc/ssl/certs/" 2>/dev/null || true

# single REF BINARY PATH_IN_IMAGE [ENTRYPOINT]: FROM scratch with one binary.
single() {
	local ref=$1 bin=$2 path=$3 entry=${4:-} ctx
	ctx="$work/img-$(basename "$path")"
	mkdir -p "$ctx"
	cp -a "$work/root" "$ctx/root"
	mkdir -p "$ctx/root$(dirname "$path")"
	cp "$bin" "$ctx/root$path"
	{
		echo 'FROM scratch'
		echo 'COPY root/ /'
		echo 'ENV PATH=/usr/local/bin:/usr/bin:/bin'
		[[ -z $entry ]] || echo "ENTRYPOINT [\"$entry\"]"
		echo "LABEL $label=$node_key"
	} >"$ctx/Dockerfile"
	log "docker build $ref"
	dbuild -t "$ref" "$ctx"
}

for ref in "${wanted[@]}"; do
	name=${ref##*/}
	name=${name%%:*}
	tag=${ref##*:}
	case $name in
	kube-apiserver) single "$ref" "$envtest_dir/kube-apiserver" /usr/local/bin/kube-apiserver ;;
	kube-controller-manager | kube-scheduler) single "$ref" "$bin_dir/$name" "/usr/local/bin/$name" ;;
	etcd)
		[[ $tag == "$etcd_version"-* ]] || die "kubeadm wants $ref, hack/envtest builds etcd $etcd_version"
		single "$ref" "$envtest_dir/etcd" /usr/local/bin/etcd
		;;
	coredns)
		[[ $tag == "$coredns_version" ]] || die "kubeadm wants $ref, hack/kindnode/coredns builds $coredns_version"
		single "$ref" "$bin_dir/coredns" /coredns /coredns
		;;
	pause) single "$ref" "$bin_dir/pause" /pause /pause ;;
	kube-proxy)
		# kube-proxy runs iptables (or nft) and conntrack: Debian's.
		mkdir -p "$work/img-kube-proxy"
		cp "$bin_dir/kube-proxy" "$work/img-kube-proxy/"
		cat >"$work/img-kube-proxy/Dockerfile" <<-EOF
			FROM $base_image
			RUN apt-get update \\
			 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables nftables conntrack ipset kmod \\
			 && apt-get clean && rm -rf /var/lib/apt/lists/*
			COPY kube-proxy /usr/local/bin/kube-proxy
			LABEL $label=$node_key
		EOF
		log "docker build $ref"
		dbuild -t "$ref" "$work/img-kube-proxy"
		;;
	*) die "kubeadm wants an image this script does not know how to build: $ref" ;;
	esac
done
# The sandbox image is containerd's (node/containerd-config.toml), which must
# be the one kubeadm names.
sandbox=$(awk -F'"' '/^ *sandbox_image *=/ { print $2 }' "$kn/node/containerd-config.toml")
printf '%s\n' "${wanted[@]}" | grep -qxF "$sandbox" ||
	die "hack/kindnode/node/containerd-config.toml's sandbox_image $sandbox is not among kubeadm's images (${wanted[*]})"
log "docker save ${#wanted[@]} images"
mkdir -p "$work/images"
"$docker" save -o "$work/images/images.tar" "${wanted[@]}"

# --- 4. the node -------------------------------------------------------------
kind_dir=$(cd "$work" && GOWORK=off GOFLAGS= go mod download -json "sigs.k8s.io/kind@$kind_version" |
	awk -F'"' '$2 == "Dir" { print $4 }')
[[ -d $kind_dir/images/base/files ]] || die "no images/base/files in sigs.k8s.io/kind@$kind_version ($kind_dir)"
ctx="$work/node"
mkdir -p "$ctx/bin"
cp -r "$kind_dir/images/base/files" "$ctx/kind"
chmod -R u+w "$ctx/kind"
cp -r "$kn/node" "$ctx/node"
cp "$bin_dir/kubelet" "$bin_dir/kubeadm" "$envtest_dir/kubectl" "$ctx/bin/"
cp "$kn/node/Dockerfile" "$ctx/Dockerfile"
stage="$image-stage"
log "docker build $stage"
t=$SECONDS
dbuild --build-arg BASE="$base_image" -t "$stage" "$ctx"
log "built in $((SECONDS - t))s"

# Import the images into the node's containerd store, as `kind build
# node-image` does: containerd in a plain container from the stage image,
# `ctr images import --no-unpack` (the layers are unpacked at first use), and
# a commit. The archive is mounted on /mnt, which exists already, so that the
# commit leaves no trace of it.
build_ctr="portmux-kind-node-build-$$"
"$docker" run -d --name "$build_ctr" --entrypoint sleep --security-opt seccomp=unconfined \
	-v "$work/images:/mnt:ro" "$stage" infinity >/dev/null
"$docker" exec "$build_ctr" bash -c 'nohup containerd >/tmp/containerd.log 2>&1 &'
"$docker" exec -e KUBERNETES_VERSION="$k8s_version" "$build_ctr" bash -euc '
	for i in $(seq 60); do ctr version >/dev/null 2>&1 && break; sleep 0.5; done
	ctr version >/dev/null || { cat /tmp/containerd.log; exit 1; }
	ctr --namespace=k8s.io images import --all-platforms --no-unpack --digests /mnt/images.tar
	printf "%s\n" "$KUBERNETES_VERSION" >/kind/version
	pkill -x containerd
	for i in $(seq 60); do pgrep -x containerd >/dev/null || break; sleep 0.5; done
	rm -f /tmp/containerd.log
' >&2 || die "importing the images into the node failed"
"$docker" commit "$build_ctr" "$stage" >/dev/null
"$docker" rm -f -v "$build_ctr" >/dev/null
build_ctr=
# The commit took the build container's entrypoint (sleep): give the image
# kind's, and what kind's base image declares.
mkdir -p "$work/final"
cat >"$work/final/Dockerfile" <<EOF
FROM $stage
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
CMD []
LABEL $label=$node_key
EOF
dbuild -t "$image" "$work/final"
"$docker" rmi "$stage" >/dev/null 2>&1 || true
# Earlier builds' images, now untagged.
"$docker" image prune -f --filter "label=$label" >/dev/null 2>&1 || true
have_node || die "the committed image $image does not carry the key $node_key"

log "done in $((SECONDS - start))s"
printf '%s\n' "$image"
