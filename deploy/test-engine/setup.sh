#!/usr/bin/env bash
# TEST-ONLY TOOL: for CI and developers' test machines, never for a lab's GPU server. It
# installs Docker, STARTS ITS OWN dockerd (and a second one on another socket, for the
# multi-server tests) and builds the offline test images. A lab builds its lab image with
# `make lab-image` instead, which uses the engine already running and starts none.
#
# Run as root on Debian 12; idempotent, so CI may run it on every build. Needs only the
# Debian mirror and the Python package index: the busybox image is made with `docker import`
# from Debian's static busybox; the sshd test image is the lab image's own recipe without
# JupyterLab (deploy/images/build-lab-image.sh --without-jupyter), so the tests log in as
# students do.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

TEST_IMAGE="${AIVC_TEST_IMAGE:-aivc-test/busybox:latest}"
SSHD_IMAGE="${AIVC_SSHD_IMAGE:-aivc-test/sshd:latest}"
IMAGES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../images" && pwd)"
STATE_DIR="${AIVC_ENGINE_STATE:-/var/lib/aivc-test-engine}"
HOOK_DIR="$STATE_DIR/bin"
DOCKERD_LOG="${AIVC_DOCKERD_LOG:-/var/log/aivc-dockerd.log}"

missing=()
for package in docker.io busybox-static debootstrap iproute2; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" iptables
fi

# dockerd accepts GPU device requests when this hook is on its PATH; a no-op one lets the
# tests inspect device requests on a machine without a GPU.
mkdir -p "$HOOK_DIR"
if [[ ! -x "$HOOK_DIR/nvidia-container-runtime-hook" ]]; then
  printf '#!/bin/sh\nexit 0\n' >"$HOOK_DIR/nvidia-container-runtime-hook"
  chmod 0755 "$HOOK_DIR/nvidia-container-runtime-hook"
fi

DOCKER=/usr/bin/docker
FIRST_ENGINE=unix:///var/run/docker.sock
answers() { timeout 10 "$DOCKER" -H "$1" info >/dev/null 2>&1; }

# An engine can outlive its default bridge's interface (deleted by hand, or by another
# dockerd that once managed it); every start on that network then fails with "could not
# find bridge". Putting the interface back as the engine recorded it heals this without
# stopping the engine.
ensure_default_bridge() {
  local docker_host=$1 name subnet gateway
  read -r name subnet gateway < <("$DOCKER" -H "$docker_host" network inspect bridge --format \
    '{{index .Options "com.docker.network.bridge.name"}} {{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}')
  [[ -n "$name" && "$subnet" == */* ]] || return 0
  # Docker 20.10 records no gateway for the default bridge; it then gives the bridge the
  # subnet's first address.
  [[ -n "${gateway:-}" ]] || gateway=$(python3 -c \
    'import ipaddress, sys; print(next(ipaddress.ip_network(sys.argv[1], strict=False).hosts()))' "$subnet")
  local prefix=${subnet##*/}
  if ! ip link show "$name" >/dev/null 2>&1; then
    echo "Restoring the missing bridge $name ($gateway/$prefix) of $docker_host"
    ip link add name "$name" type bridge
  fi
  ip -4 addr show dev "$name" | grep -q "inet $gateway/" || ip addr add "$gateway/$prefix" dev "$name"
  ip link set "$name" up
}

# dockerd refuses to start while its pidfile names a live process, and waits in vain for
# a containerd whose pidfile names one. An engine killed without a clean shutdown (its
# session ended) leaves both files behind, and its processes may linger as zombies nobody
# reaps, or their numbers may belong to other programs by now.
clear_stale_pidfile() {
  local pidfile=$1 program=$2 pid
  [[ -f "$pidfile" ]] || return 0
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if [[ "$pid" =~ ^[0-9]+$ && "$(ps -o stat= -o comm= -p "$pid" 2>/dev/null)" =~ ^[^Z]*[[:space:]]+$program$ ]]; then
    return 0
  fi
  echo "Removing the stale pidfile $pidfile"
  rm -f "$pidfile"
}

# Starts dockerd with the given arguments unless the engine at $1 already answers, and
# waits for it. Never stops an engine.
start_engine() {
  local docker_host=$1 log=$2 name=$3 pidfile=$4 exec_root=$5
  shift 5
  if ! answers "$docker_host"; then
    clear_stale_pidfile "$pidfile" dockerd
    clear_stale_pidfile "$exec_root/containerd/containerd.pid" containerd
    echo "Starting $name (log: $log)"
    PATH="$HOOK_DIR:/usr/sbin:/usr/bin:/sbin:/bin" setsid nohup /usr/sbin/dockerd --pidfile "$pidfile" --exec-root "$exec_root" "$@" \
      >>"$log" 2>&1 </dev/null &
    for _ in $(seq 1 60); do
      answers "$docker_host" && break
      sleep 1
    done
  fi
  if ! answers "$docker_host"; then
    echo "$name did not answer; last lines of $log:" >&2
    tail -n 30 "$log" >&2 || true
    exit 1
  fi
}

start_engine "$FIRST_ENGINE" "$DOCKERD_LOG" dockerd /var/run/docker.pid /var/run/docker

if ! "$DOCKER" image inspect "$TEST_IMAGE" >/dev/null 2>&1; then
  echo "Building $TEST_IMAGE from busybox-static"
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  mkdir -p "$rootfs"/{bin,etc,root,tmp,proc,sys,dev,run,var/run}
  cp /bin/busybox "$rootfs/bin/busybox"
  for applet in sh sleep ls cat echo id mkdir rm touch env ps kill true false du df test; do
    ln -s busybox "$rootfs/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\n' >"$rootfs/etc/group"
  tar -C "$rootfs" -cf - . | "$DOCKER" import \
    --change 'CMD ["/bin/sleep", "1d"]' \
    --change 'ENV PATH=/bin' \
    - "$TEST_IMAGE" >/dev/null
fi
# The same recipe as the lab image (a cached debootstrap root, then deploy/images/Dockerfile),
# without JupyterLab; rebuilt only when the recipe changed.
DOCKER_HOST="$FIRST_ENGINE" "$IMAGES_DIR/build-lab-image.sh" --tag "$SSHD_IMAGE" --without-jupyter >/dev/null
echo "Docker engine ready; test images $TEST_IMAGE and $SSHD_IMAGE present."

# A second engine on the same machine, for the tests of several GPU servers (one agent per
# engine). It shares nothing with the first: its own socket, data-root, exec-root (and so
# its own containerd), pidfile, config file and bridge. It runs with --iptables=false and
# --ip-masq=false because a dockerd that manages iptables removes and rebuilds the DOCKER
# chains when it starts, which would drop the first engine's port forwards; without
# iptables, published ports still work through docker-proxy, and the test containers need
# no way out. Nothing here ever stops or restarts an engine.
# The tests find it through AIVC_TEST_ENGINE2 (default unix:///run/aivc-test-engine2/docker.sock).
ENGINE2_SOCKET="${AIVC_TEST_ENGINE2_SOCKET:-/run/aivc-test-engine2/docker.sock}"
ENGINE2_ROOT="${AIVC_TEST_ENGINE2_ROOT:-/var/lib/aivc-test-engine2}"
ENGINE2_EXEC="${AIVC_TEST_ENGINE2_EXEC:-/run/aivc-test-engine2/exec}"
ENGINE2_BRIDGE="${AIVC_TEST_ENGINE2_BRIDGE:-aivc-br2}"
# Subnets the first engine's default pools (172.17-31.x, 192.168.x) never hand out.
ENGINE2_BRIDGE_CIDR="${AIVC_TEST_ENGINE2_BRIDGE_CIDR:-10.213.0.1/24}"
ENGINE2_POOL="${AIVC_TEST_ENGINE2_POOL:-10.214.0.0/16}"
ENGINE2_LOG="${AIVC_DOCKERD2_LOG:-/var/log/aivc-dockerd2.log}"

if ! answers "unix://$ENGINE2_SOCKET"; then
  # dockerd makes its own roots 0700/0710; the socket's folder stays readable so members
  # of the docker group reach the socket as they reach the first one.
  install -d -m 0755 "$(dirname "$ENGINE2_SOCKET")"
  install -d -m 0710 "$ENGINE2_ROOT"
  [[ -f "$ENGINE2_ROOT/daemon.json" ]] || printf '{}\n' >"$ENGINE2_ROOT/daemon.json"
  if ! ip link show "$ENGINE2_BRIDGE" >/dev/null 2>&1; then
    ip link add name "$ENGINE2_BRIDGE" type bridge
  fi
  ip -4 addr show dev "$ENGINE2_BRIDGE" | grep -q "inet ${ENGINE2_BRIDGE_CIDR%/*}/" \
    || ip addr add "$ENGINE2_BRIDGE_CIDR" dev "$ENGINE2_BRIDGE"
  ip link set "$ENGINE2_BRIDGE" up
fi
start_engine "unix://$ENGINE2_SOCKET" "$ENGINE2_LOG" "the second dockerd" "$ENGINE2_ROOT/dockerd.pid" "$ENGINE2_EXEC" \
  --config-file "$ENGINE2_ROOT/daemon.json" \
  --host "unix://$ENGINE2_SOCKET" \
  --data-root "$ENGINE2_ROOT/data" \
  --bridge "$ENGINE2_BRIDGE" \
  --default-address-pool "base=$ENGINE2_POOL,size=24" \
  --iptables=false --ip6tables=false --ip-masq=false
for image in "$TEST_IMAGE" "$SSHD_IMAGE"; do
  if [[ "$("$DOCKER" -H "unix://$ENGINE2_SOCKET" image inspect --format '{{.Id}}' "$image" 2>/dev/null)" \
    != "$("$DOCKER" image inspect --format '{{.Id}}' "$image")" ]]; then
    echo "Copying $image to the second engine"
    "$DOCKER" save "$image" | "$DOCKER" -H "unix://$ENGINE2_SOCKET" load >/dev/null
  fi
done
echo "Second Docker engine ready on unix://$ENGINE2_SOCKET with the test images."

# After both engines were killed (a session's end), starting the second one again deleted
# the first one's docker0 (seen with Docker 20.10.24; a clean restart of either alone did
# not), and every start on the first engine's default bridge then failed. Heal both now
# that both run, then prove each can attach a container to its default bridge.
for docker_host in "$FIRST_ENGINE" "unix://$ENGINE2_SOCKET"; do
  ensure_default_bridge "$docker_host"
  if ! "$DOCKER" -H "$docker_host" run --rm --network bridge "$TEST_IMAGE" true; then
    echo "$docker_host cannot start a container on its default bridge." >&2
    exit 1
  fi
done
echo "Both engines start containers on their default bridges."
