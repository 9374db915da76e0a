#!/usr/bin/env bash
# The install as a lab runs it, from outside: a fresh Debian root (debootstrap), this
# checkout copied in, deploy/install.sh run in a chroot, then the checks of
# tests/deploy/test_install.py (which runs this script as root and reads its output).
#
#   tests/deploy/install_drill.sh CHECKOUT WORKDIR PORT
#
# The chroot runs in its own PID and mount namespaces (unshare): everything it starts
# (PostgreSQL, gunicorn, the scheduler) dies with it and its mounts vanish with it, even if
# the test is killed. It shares the machine's network, so apt and pip inside reach the
# Debian mirror and PyPI as the machine does; the root's PostgreSQL therefore listens on its
# Unix socket only (the machine may run its own on 127.0.0.1:5432), which is all the
# install uses. The base root and the downloaded packages are cached under
# AIVC_INSTALL_CACHE (/var/cache/aivc-install-test), so a rerun skips the downloads.
set -euo pipefail

checkout=$(cd "$1" && pwd)
work=$2
port=$3
cache=${AIVC_INSTALL_CACHE:-/var/cache/aivc-install-test}
suite=${AIVC_DEBIAN_SUITE:-bookworm}
mirror=${AIVC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
tarball=$cache/$suite-minbase.tar
root=$work/root

mkdir -p "$cache/apt-archives/partial" "$cache/pip" "$root"
if [[ ! -f $tarball ]]; then
  echo "DRILL building the cached $suite root (debootstrap, once)"
  base=$(mktemp -d "$cache/root.XXXXXX")
  debootstrap --variant=minbase "$suite" "$base" "$mirror" >/dev/null
  rm -rf "$base"/var/cache/apt/archives/*.deb "$base"/var/lib/apt/lists/*
  tar --numeric-owner -C "$base" -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
  rm -rf "$base"
fi
started=$(date +%s.%N)
tar --numeric-owner -C "$root" -xf "$tarball"
chmod 0755 "$root"  # the cached root was made in a 0700 temporary folder

# The checkout as git sees it (tracked and new files, not what .gitignore keeps out).
mkdir -p "$root/root/aivc-portal"
(cd "$checkout" && git ls-files -z --cached --others --exclude-standard \
  | tar --null --no-recursion --ignore-failed-read -T - -cf - 2>/dev/null) | tar -xf - -C "$root/root/aivc-portal"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# A chroot must not start daemons from package scripts (Debian's policy-rc.d convention).
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
mkdir -p "$root/etc/postgresql-common/createcluster.d"
echo "listen_addresses = ''" >"$root/etc/postgresql-common/createcluster.d/aivc-drill.conf"
# pip as this machine has it: its configuration and the local wheel folders it names.
pip_folders=()
for folder in /opt/wheels /opt/pypi /opt/pypi-more; do
  [[ -d $folder ]] && pip_folders+=("$folder") && mkdir -p "$root$folder"
done
for file in /etc/pip.conf /etc/xdg/pip/pip.conf /etc/xdg/pip/constraints.txt "$HOME/.config/pip/pip.conf"; do
  [[ -f $file ]] || continue
  target=$root${file/#$HOME//root}
  mkdir -p "$(dirname "$target")"
  cp "$file" "$target"
done
export -p | grep -E '^declare -x PIP_[A-Z_]+=' >"$root/root/pip.env" || true
# This machine's certificate authorities too (a proxy's own may be among them): the root's
# ca-certificates package, installed by install.sh, knows only Debian's.
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/aivc-drill-ca.crt"
  echo 'declare -x PIP_CERT="/etc/aivc-drill-ca.crt"' >>"$root/root/pip.env"
fi

cat >"$root/root/drill.sh" <<'DRILL'
#!/bin/bash
# Runs inside the root: the install, the checks, a second install, an upgrade, a restore.
set -euo pipefail
port=$1 started=$2
set -a
. /root/pip.env
set +a
elapsed() { python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$started"; }
unit_value() { sed -n "s/^$2=//p" "/opt/aivc-portal/deploy/systemd/$1"; }
# A unit's commands run by hand as systemd would: its user, its folder, its Environment=.
run_unit_command() {
  local unit=$1 command=$2 environment as_user=(runuser -u aivc --)
  # systemd's "+" prefix: the line runs as root with full privileges (the build fence's cgroup).
  if [[ $command == +* ]]; then command=${command#+}; as_user=(); fi
  environment=$(unit_value "$unit" Environment | sed 's|%t|/run|g; s|%i|gpu1|g' | tr '\n' ' ')
  ${UNIT_TIMEOUT:+timeout $UNIT_TIMEOUT} "${as_user[@]}" \
    sh -c "cd /opt/aivc-portal && exec env $environment GUNICORN_BIND=127.0.0.1:$port GUNICORN_WORKERS=2 $command"
}
get_login_page() {
  python3 - "$port" <<'PY'
import sys, urllib.request
request = urllib.request.Request(
    f"http://127.0.0.1:{sys.argv[1]}/accounts/login/",
    headers={"Host": "portal.drill.example", "X-Forwarded-Proto": "https"},
)
with urllib.request.urlopen(request, timeout=10) as response:
    body = response.read().decode()
    print(response.status, "csrfmiddlewaretoken" in body)
PY
}

cd /root/aivc-portal
echo "DRILL install"
deploy/install.sh --host-name gpu1 --server-name portal.drill.example
echo "DRILL installed after $(elapsed) s"

echo "DRILL web unit by hand"
install -d -o aivc -g aivc -m 0750 /run/aivc-portal
while IFS= read -r command; do run_unit_command aivc-web.service "$command"; done < <(unit_value aivc-web.service ExecStartPre)
run_unit_command aivc-web.service "$(unit_value aivc-web.service ExecStart)" >/root/gunicorn.log 2>&1 &
for _ in $(seq 1 120); do
  page=$(get_login_page 2>/dev/null) && break
  sleep 0.5
done
echo "DRILL login page ${page:-none} after $(elapsed) s"
[[ -S /run/aivc-portal/gunicorn.ctl ]] && echo "DRILL control socket in the runtime folder"

echo "DRILL scheduler"
while IFS= read -r command; do run_unit_command aivc-scheduler.service "$command"; done < <(unit_value aivc-scheduler.service ExecStartPre)
aivc-manage reconcile && echo "DRILL reconcile ran"
UNIT_TIMEOUT=25 run_unit_command aivc-scheduler.service "$(unit_value aivc-scheduler.service ExecStart)" >/root/qcluster.log 2>&1 || true
grep -q "running" /root/qcluster.log && echo "DRILL qcluster ran"

echo "DRILL createsuperuser"
DJANGO_SUPERUSER_PASSWORD=drill-Password-1942 DJANGO_SUPERUSER_EMAIL=maint@drill.example \
  aivc-manage createsuperuser --noinput --username maint
echo "DRILL superusers in PostgreSQL: $(cd / && runuser -u postgres -- psql -X -tA -d aivc -c "SELECT username FROM accounts_user WHERE is_superuser")"
echo "DRILL no sqlite file: $(find /opt/aivc-portal /var/lib/aivc-portal -name '*.sqlite3*' | wc -l)"

echo "DRILL second install"
watched=(/etc/aivc-portal/env /usr/local/bin/aivc-manage /opt/aivc-portal/.installed-from /opt/aivc-portal/.venv/.requirements)
before=$(sha256sum "${watched[@]}")
touch /root/second-install.mark
sleep 1
deploy/install.sh --host-name gpu1 --server-name portal.drill.example >/root/second-install.log
[[ $(sha256sum "${watched[@]}") == "$before" ]] && echo "DRILL second install kept the checksums"
find /opt/aivc-portal /etc/aivc-portal /usr/local/bin/aivc-manage /var/lib/aivc-portal -newer /root/second-install.mark \
  -not -path '/var/lib/aivc-portal/job-logs*' >/root/second-install.changed
echo "DRILL second install changed $(wc -l </root/second-install.changed) files"
head -n 5 /root/second-install.changed
grep -E "^== (Installing|Writing|Creating)" /root/second-install.log || echo "DRILL second install installed nothing"
stat -c 'DRILL env file %a %U:%G' /etc/aivc-portal/env

echo "DRILL upgrade"
echo "# a newer checkout" >>/root/aivc-portal/README.md
deploy/install.sh --host-name gpu1 --server-name portal.drill.example >/root/upgrade.log
grep -q "^== Installing the code" /root/upgrade.log && tail -n 1 /opt/aivc-portal/README.md | grep -q "a newer checkout" \
  && echo "DRILL upgrade installed the newer code"

echo "DRILL restore"
echo "kept" >/var/lib/aivc-portal/container-state/marker
mkdir -p /root/backup
# As docs/operations.md: root's shell holds the files, postgres reads and writes a pipe.
runuser -u postgres -- pg_dump --format=custom aivc >/root/backup/aivc.dump
tar -C /var/lib/aivc-portal -czf /root/backup/state.tar.gz .
# The services stop first (systemctl stop aivc-web aivc-scheduler on a real server; here
# every process of the aivc user in this PID namespace).
runuser -u aivc -- kill -TERM -1 || true
for _ in $(seq 1 40); do runuser -u postgres -- dropdb aivc 2>/dev/null && break; sleep 0.5; done
find /var/lib/aivc-portal -mindepth 1 -delete
runuser -u postgres -- createdb --owner aivc aivc
runuser -u postgres -- pg_restore --no-owner --role=aivc --dbname=aivc </root/backup/aivc.dump
tar -C /var/lib/aivc-portal -xzpf /root/backup/state.tar.gz
aivc-manage migrate --check >/dev/null && echo "DRILL restored schema is current"
echo "DRILL restored superusers: $(aivc-manage shell --no-imports -c "from accounts.models import User; print(*User.objects.filter(is_superuser=True).values_list('username', flat=True))")"
echo "DRILL restored state: $(cat /var/lib/aivc-portal/container-state/marker) $(stat -c '%U' /var/lib/aivc-portal/container-state)"
echo "DRILL systemd-analyze"
apt-get install -y -qq --no-install-recommends systemd >/dev/null 2>&1
cp /opt/aivc-portal/deploy/systemd/*.service /etc/systemd/system/
# The agent requires Docker's unit, which a GPU server has and this root (no engine) lacks.
[[ -e /lib/systemd/system/docker.service ]] \
  || printf '[Unit]\nDescription=stand-in for Docker\n[Service]\nExecStart=/bin/true\n' >/etc/systemd/system/docker.service
verified=$(systemd-analyze verify --man=no aivc-web.service aivc-scheduler.service aivc-agent@gpu1.service 2>&1) || true
if [[ -z $verified ]]; then echo "DRILL systemd-analyze verify: clean"; else printf 'DRILL systemd-analyze verify said:\n%s\n' "$verified"; fi
echo "DRILL agent-only install"
# A second GPU server, played by this root: its own env file from the portal's key and a
# database URL (the local socket here; another machine names the portal's).
sed -n 's/^SECRET_KEY=//p' /etc/aivc-portal/env >/root/portal-secret-key
mv /etc/aivc-portal/env /root/portal-env
if deploy/install.sh --agent gpu2 --database-url postgres:///aivc >/root/agent-refused.log 2>&1; then
  echo "DRILL agent install without the portal's key went on"
else
  grep -q "secret-key-file" /root/agent-refused.log && echo "DRILL agent install asks for the portal's key"
fi
deploy/install.sh --agent gpu2 --database-url "$(sed -n 's/^DATABASE_URL=//p' /root/portal-env)" \
  --secret-key-file /root/portal-secret-key >/root/agent.log
[[ $(sed -n 's/^SECRET_KEY=//p' /etc/aivc-portal/env) == "$(cat /root/portal-secret-key)" ]] && echo "DRILL agent env has the portal's key"
echo "DRILL hosts: $(aivc-manage shell --no-imports -c "from containers.models import Host; print(*Host.objects.order_by('name').values_list('name', flat=True))")"
echo "DRILL done"
DRILL

cat >"$work/inside.sh" <<INSIDE
set -euo pipefail
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
# The units' ExecStartPre=+ makes the build fence's cgroup, as on a real server.
mount --rbind /sys "$root/sys"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mount --bind "$cache/apt-archives" "$root/var/cache/apt/archives"
mkdir -p "$root/root/.cache/pip"
mount --bind "$cache/pip" "$root/root/.cache/pip"
for folder in ${pip_folders[*]:-}; do mount --bind -o ro "\$folder" "$root\$folder"; done
exec chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root LANG=C.UTF-8 /bin/bash /root/drill.sh "$port" "$started"
INSIDE
unshare --fork --pid --mount --propagation private /bin/bash "$work/inside.sh"
