#!/usr/bin/env bash
# Installs and starts a Docker engine for the container tests, and builds the offline test
# images. Run as root on Debian 12; idempotent, so CI may run it on every build. Needs only
# the Debian mirror: the busybox image is made with `docker import` from Debian's static
# busybox, the sshd image from a debootstrap rootfs with openssh-server and the lab images'
# own entrypoint and sshd_config (deploy/images/), so the tests log in as students do.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

TEST_IMAGE="${AIVC_TEST_IMAGE:-aivc-test/busybox:latest}"
SSHD_IMAGE="${AIVC_SSHD_IMAGE:-aivc-test/sshd:latest}"
DEBIAN_SUITE="${AIVC_DEBIAN_SUITE:-bookworm}"
DEBIAN_MIRROR="${AIVC_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
IMAGES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../images" && pwd)"
STATE_DIR="${AIVC_ENGINE_STATE:-/var/lib/aivc-test-engine}"
HOOK_DIR="$STATE_DIR/bin"
DOCKERD_LOG="${AIVC_DOCKERD_LOG:-/var/log/aivc-dockerd.log}"

missing=()
for package in docker.io busybox-static debootstrap; do
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
if ! "$DOCKER" image inspect "$SSHD_IMAGE" >/dev/null 2>&1; then
  echo "Building $SSHD_IMAGE from a $DEBIAN_SUITE rootfs (debootstrap, a few minutes)"
  sshd_rootfs=$(mktemp -d)
  trap 'rm -rf "${rootfs:-}" "$sshd_rootfs"' EXIT
  debootstrap --variant=minbase --include=openssh-server "$DEBIAN_SUITE" "$sshd_rootfs" "$DEBIAN_MIRROR" \
    >/dev/null
  install -d "$sshd_rootfs/tmp/aivc-image"
  install -m 0644 "$IMAGES_DIR/sshd_config" "$IMAGES_DIR/entrypoint.sh" "$IMAGES_DIR/install.sh" \
    "$sshd_rootfs/tmp/aivc-image/"
  chroot "$sshd_rootfs" /bin/sh /tmp/aivc-image/install.sh
  rm -rf "$sshd_rootfs/tmp/aivc-image"
  rm -rf "$sshd_rootfs"/var/cache/apt/archives/*.deb "$sshd_rootfs"/var/lib/apt/lists/*
  tar --numeric-owner -C "$sshd_rootfs" -cf - . | "$DOCKER" import \
    --change 'ENTRYPOINT ["/usr/local/sbin/aivc-entrypoint"]' \
    --change 'CMD []' \
    --change 'EXPOSE 22' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$SSHD_IMAGE" >/dev/null
fi
echo "Docker engine ready; test images $TEST_IMAGE and $SSHD_IMAGE present."
