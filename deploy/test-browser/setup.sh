#!/usr/bin/env bash
# Installs what the browser tests need on Debian 12, as root: Debian's own Chromium (the
# tests drive /usr/bin/chromium through Playwright; no browser is downloaded) and CJK fonts
# for the Traditional Chinese pages. Idempotent: installs only what is missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

missing=()
for package in chromium fonts-noto-cjk; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "apt-get install ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
/usr/bin/chromium --version
