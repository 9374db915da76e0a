#!/usr/bin/env bash
# Makes the Debian base image of the offline lab images: a debootstrap root with the
# packages the Dockerfile needs, imported with `docker import` (no registry). The root is
# cached as a tarball, so a rebuild reuses it without the Debian mirror.
#
#   deploy/images/debian-rootfs.sh IMAGE_REFERENCE
#
# Uses the Docker engine that answers (DOCKER_HOST or the default socket); never starts one.
# The debootstrap step needs root and the package debootstrap.
set -euo pipefail

reference=${1:?usage: debian-rootfs.sh IMAGE_REFERENCE}
DOCKER=${DOCKER:-docker}
SUITE=${AIVC_DEBIAN_SUITE:-bookworm}
MIRROR=${AIVC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE_DIR=${AIVC_IMAGE_CACHE:-/var/cache/aivc-lab-image}
PACKAGES=openssh-server,ca-certificates,python3,python3-venv,procps,less
say() { echo "lab image: $*" >&2; }

if "$DOCKER" image inspect "$reference" >/dev/null 2>&1; then
  say "base $reference present"
  exit 0
fi

key=$(printf '%s %s %s' "$SUITE" "$PACKAGES" "$(uname -m)" | sha256sum | cut -c1-12)
tarball="$CACHE_DIR/$SUITE-$key.tar"
if [[ ! -s "$tarball" ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    say "debootstrap needs root: run this once as root (sudo make lab-image); the root is then cached in $CACHE_DIR."
    exit 77
  fi
  command -v debootstrap >/dev/null || {
    say "debootstrap is missing: apt-get install debootstrap"
    exit 69
  }
  install -d -m 0755 "$CACHE_DIR"
  rootfs=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs" "$tarball.part"' EXIT
  say "debootstrap $SUITE with $PACKAGES (once, a few minutes)"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >&2
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar --numeric-owner -C "$rootfs" -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
fi

say "importing $tarball as $reference"
"$DOCKER" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  "$tarball" "$reference" >/dev/null
