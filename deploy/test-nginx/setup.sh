#!/usr/bin/env bash
# Tests only: Debian's nginx binary for the tests of deploy/nginx.conf's JupyterLab blocks
# (tests/containers/test_lab_proxy.py), unpacked into /opt/aivc-test-nginx WITHOUT
# installing the package, so no nginx service is started or enabled on this machine.
# Debian 12, as root; idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
TARGET=/opt/aivc-test-nginx

if [[ ! -x "$TARGET/usr/sbin/nginx" ]]; then
  missing=()
  for package in libpcre2-8-0 libssl3 zlib1g libcrypt1; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  if ((${#missing[@]})); then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && chmod 777 . && apt-get download -qq nginx)
  dpkg-deb -x "$work"/nginx_*.deb "$TARGET"
fi
"$TARGET/usr/sbin/nginx" -V 2>&1 | grep -q -- --with-http_auth_request_module
"$TARGET/usr/sbin/nginx" -v
