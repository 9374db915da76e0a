#!/usr/bin/env bash
# Builds the CPU lab image offline: a Debian root made by debootstrap (debian-rootfs.sh,
# cached) as the base, JupyterLab from the Python package index (wheels downloaded here on
# the host, installed in the build without network), then the Dockerfile of this folder.
# No container registry. It uses the Docker engine that answers (DOCKER_HOST or the default
# socket) and never starts one. Idempotent: an image built from the same recipe is kept.
# The image reference is the last line it prints (progress goes to stderr).
#
#   deploy/images/build-lab-image.sh                       aivc/lab:cpu
#   deploy/images/build-lab-image.sh --tag REF --without-jupyter   (the offline test image)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DOCKER=${DOCKER:-docker}
PYTHON=${PYTHON:-python3}
CACHE_DIR=${AIVC_IMAGE_CACHE:-/var/cache/aivc-lab-image}
BASE_REFERENCE=${AIVC_LAB_BASE:-aivc/lab-base:bookworm}
PYTHON_VERSION=3.11 # the python3 of Debian bookworm, the base's
tag=${AIVC_LAB_IMAGE:-aivc/lab:cpu}
with_jupyter=yes
while (($#)); do
  case "$1" in
    --tag) tag=${2:?--tag needs a reference}; shift 2 ;;
    --without-jupyter) with_jupyter=no; shift ;;
    *) echo "usage: build-lab-image.sh [--tag REFERENCE] [--without-jupyter]" >&2; exit 64 ;;
  esac
done
say() { echo "lab image: $*" >&2; }

if ! timeout 20 "$DOCKER" info >/dev/null 2>&1; then
  say "no Docker engine answers at ${DOCKER_HOST:-the default socket (unix:///var/run/docker.sock)}."
  say "Start the lab's engine (this script never starts one) or set DOCKER_HOST, then run it again."
  exit 69
fi

recipe_files=(Dockerfile .dockerignore entrypoint.sh install.sh sshd_config jupyter_server_config.py
  lab-requirements.txt debian-rootfs.sh)
recipe=$( (cd "$here" && cat "${recipe_files[@]}"; echo "jupyter=$with_jupyter base=$BASE_REFERENCE") \
  | sha256sum | cut -c1-16)
built=$("$DOCKER" image inspect --format '{{index .Config.Labels "aivc.recipe"}}' "$tag" 2>/dev/null || true)
if [[ "$built" == "$recipe" ]]; then
  say "$tag is up to date (recipe $recipe)"
  echo "$tag"
  exit 0
fi

"$here/debian-rootfs.sh" "$BASE_REFERENCE"

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "${recipe_files[@]/#/$here/}" "$context/"
if [[ $with_jupyter == yes ]]; then
  arch=$(uname -m)
  wheels="$CACHE_DIR/wheels-$(cat "$here/lab-requirements.txt" | sha256sum | cut -c1-12)-$arch"
  if [[ ! -f "$wheels/.complete" ]]; then
    say "downloading JupyterLab's wheels for Python $PYTHON_VERSION into $wheels"
    mkdir -p "$wheels"
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
      --python-version "$PYTHON_VERSION" --implementation cp --abi "cp${PYTHON_VERSION/./}" \
      --platform "manylinux_2_28_$arch" --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
      -d "$wheels" -r "$here/lab-requirements.txt" >&2
    touch "$wheels/.complete"
  fi
  mkdir "$context/wheels"
  cp "$wheels"/*.whl "$context/wheels/"
fi

say "building $tag from $BASE_REFERENCE (recipe $recipe)"
"$DOCKER" build --build-arg "BASE_IMAGE=$BASE_REFERENCE" --build-arg "WITH_JUPYTER=$with_jupyter" \
  --label "aivc.recipe=$recipe" --label "aivc.lab-modes=ssh,job,lab" -t "$tag" "$context" >&2
echo "$tag"
