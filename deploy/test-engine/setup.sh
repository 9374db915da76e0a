#!/usr/bin/env bash
# Installs and starts a Docker engine for the container tests, and builds the offline test
# image. Run as root on Debian 12; idempotent, so CI may run it on every build. Needs only
# the Debian mirror: the image is made with `docker import` from Debian's static busybox.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

TEST_IMAGE="${AIVC_TEST_IMAGE:-aivc-test/busybox:latest}"
STATE_DIR="${AIVC_ENGINE_STATE:-/var/lib/aivc-test-engine}"
HOOK_DIR="$STATE_DIR/bin"
DOCKERD_LOG="${AIVC_DOCKERD_LOG:-/var/log/aivc-dockerd.log}"

missing=()
for package in docker.io busybox-static; do
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
engine_answers() { timeout 10 "$DOCKER" info >/dev/null 2>&1; }

if ! engine_answers; then
  echo "Starting dockerd (log: $DOCKERD_LOG)"
  PATH="$HOOK_DIR:/usr/sbin:/usr/bin:/sbin:/bin" setsid nohup /usr/sbin/dockerd \
    >>"$DOCKERD_LOG" 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    engine_answers && break
    sleep 1
  done
fi
if ! engine_answers; then
  echo "dockerd did not answer; last lines of $DOCKERD_LOG:" >&2
  tail -n 30 "$DOCKERD_LOG" >&2 || true
  exit 1
fi

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
echo "Docker engine ready; test image $TEST_IMAGE present."
