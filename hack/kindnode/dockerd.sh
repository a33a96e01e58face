#!/usr/bin/env bash
# Make sure a Docker engine runs here that can start kind's privileged node
# containers: install Debian's docker.io (and jq, for the runc wrapper) when
# dockerd is missing, install ./runc-wrapper as /usr/local/sbin/portmux-runc,
# and start dockerd in the background with it as the default runtime
# (overlay2; log in /var/log/portmux-dockerd.log). When an engine already
# answers it is left alone. Needs root. Used by .ci/run; by hand:
#
#   sudo hack/kindnode/dockerd.sh
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
docker=${DOCKER:-docker}

if "$docker" info >/dev/null 2>&1; then
	log "a Docker engine already answers; leaving it alone"
	exit 0
fi
[[ $(id -u) == 0 ]] || die "no Docker engine answers, and starting one needs root"

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v jq >/dev/null 2>&1 || need+=(jq)
if ((${#need[@]})); then
	log "apt-get install ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# A docker.io package install may have started its own units; this script's
# dockerd is the one that runs.
systemctl stop docker.socket docker.service containerd.service 2>/dev/null || true

install -m 0755 "$here/runc-wrapper" /usr/local/sbin/portmux-runc

# A dockerd that was killed (a session's processes end before CI runs) leaves
# its pid file; dockerd refuses to start if that pid is now someone else's.
pidfile=/var/run/docker.pid
if [[ -f $pidfile ]] && ! grep -qx dockerd "/proc/$(cat "$pidfile")/comm" 2>/dev/null; then
	rm -f "$pidfile"
fi

log "starting dockerd (default runtime: portmux-runc)"
nohup dockerd --storage-driver overlay2 \
	--add-runtime portmux-runc=/usr/local/sbin/portmux-runc --default-runtime portmux-runc \
	>>/var/log/portmux-dockerd.log 2>&1 </dev/null &
for _ in $(seq 60); do
	if "$docker" info >/dev/null 2>&1; then
		log "dockerd is up ($("$docker" info --format '{{.ServerVersion}} {{.Driver}} {{.CgroupDriver}} cgroup v{{.CgroupVersion}}'))"
		exit 0
	fi
	sleep 1
done
tail -20 /var/log/portmux-dockerd.log >&2 || true
die "dockerd did not answer within 60s (log: /var/log/portmux-dockerd.log)"
