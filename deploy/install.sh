#!/usr/bin/env bash
# Installs or upgrades the AIVC Portal on this Debian or Ubuntu machine, from the checkout
# this script sits in. Run as root. Idempotent: a second run changes nothing; a run from a
# newer checkout upgrades (code, Python packages, migrations, restart). docs/operations.md.
#
#   deploy/install.sh [--host-name NAME] [--server-name portal.lab.example] [--lab-image]
#       the portal machine: web server, central scheduler, local PostgreSQL.
#   deploy/install.sh --agent NAME --database-url URL --secret-key-file FILE [--lab-image]
#       a further GPU server: only its agent, against the portal's database.
set -euo pipefail
umask 022

PREFIX=/opt/aivc-portal
STATE=/var/lib/aivc-portal
CONFIG_DIR=/etc/aivc-portal
ENV_FILE=$CONFIG_DIR/env
SERVICE_USER=aivc
WRAPPER=/usr/local/bin/aivc-manage
UNIT_DIR=/etc/systemd/system
SOURCE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '== %s\n' "$*"; }
fail() {
  printf 'install.sh: %s\n' "$*" >&2
  exit 1
}
usage() {
  sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

mode=portal
host_name=""
server_name=""
database_url=""
secret_key_file=""
lab_image=0
while (($#)); do
  case $1 in
    --agent) mode=agent host_name=${2:?--agent needs the host name}; shift 2 ;;
    --host-name) host_name=${2:?--host-name needs a name}; shift 2 ;;
    --server-name) server_name=${2:?--server-name needs a name}; shift 2 ;;
    --database-url) database_url=${2:?--database-url needs a URL}; shift 2 ;;
    --secret-key-file) secret_key_file=${2:?--secret-key-file needs a file}; shift 2 ;;
    --lab-image) lab_image=1; shift ;;
    -h | --help) usage 0 ;;
    *) printf 'install.sh: unknown argument %s\n\n' "$1" >&2; usage 2 ;;
  esac
done

((EUID == 0)) || fail "run me as root (sudo $0)."
command -v apt-get >/dev/null || fail "this installer needs Debian or Ubuntu (apt-get)."
[[ -f $SOURCE/manage.py && -f $SOURCE/requirements.txt ]] || fail "$SOURCE is not a checkout of the portal."
[[ -n $host_name ]] || host_name=$(hostname -s)
[[ -n $server_name ]] || server_name=$(hostname -f 2>/dev/null || hostname)
systemd_runs=0
[[ -d /run/systemd/system ]] && systemd_runs=1

# Whether the env file (new or existing) names the local socket: then this machine's
# PostgreSQL holds the portal's database and the install creates it.
local_database() { [[ $(env_value DATABASE_URL) =~ ^postgres(ql)?://(:[0-9]+)?/[A-Za-z0-9_]+$ ]]; }
env_value() { sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1; }

# --- Debian packages -----------------------------------------------------------------------
packages=(python3 python3-venv ca-certificates openssh-client)
[[ $mode == portal ]] && packages+=(postgresql)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || fail "the portal needs Python 3.11 or newer; this system's python3 is $(python3 -V)."

# --- The service's user --------------------------------------------------------------------
if ! getent passwd "$SERVICE_USER" >/dev/null; then
  say "Creating the system user $SERVICE_USER"
  useradd --system --user-group --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin \
    --comment "AIVC Portal" "$SERVICE_USER"
fi
# The scheduler and the agents drive the Docker engine through its socket.
if getent group docker >/dev/null && ! id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx docker; then
  say "Adding $SERVICE_USER to the docker group"
  usermod -aG docker "$SERVICE_USER"
fi

# --- Code ----------------------------------------------------------------------------------
# What is copied: the checkout without its local state (virtualenv, databases, keys, logs).
# The fingerprint of those files decides whether this run upgrades.
copy_list() {
  (cd "$SOURCE" && find . \( -name .git -o -name .venv -o -name var -o -name staticfiles -o -name __pycache__ \
    -o -name node_modules -o -name '.pytest_cache' -o -name '.ruff_cache' -o -name 'db.sqlite3*' \) -prune \
    -o \( -type f -o -type l \) -print | LC_ALL=C sort)
}
fingerprint=$(cd "$SOURCE" && copy_list | tr '\n' '\0' | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
code_changed=0
if [[ $SOURCE != "$PREFIX" && $(cat "$PREFIX/.installed-from" 2>/dev/null || true) != "$fingerprint" ]]; then
  say "Installing the code into $PREFIX"
  staging=$(mktemp -d "${PREFIX}.new.XXXXXX")
  (cd "$SOURCE" && copy_list | tar -cf - --no-recursion -T -) | tar -xf - -C "$staging"
  # The virtualenv is kept across upgrades (its path stays $PREFIX/.venv).
  [[ -d $PREFIX/.venv ]] && mv "$PREFIX/.venv" "$staging/.venv"
  echo "$fingerprint" >"$staging/.installed-from"
  chmod 0755 "$staging"
  if [[ -d $PREFIX ]]; then mv "$PREFIX" "${PREFIX}.old"; fi
  mv "$staging" "$PREFIX"
  rm -rf "${PREFIX}.old"
  code_changed=1
fi

# --- Virtual environment -------------------------------------------------------------------
requirements_hash=$(sha256sum "$PREFIX/requirements.txt" | cut -d' ' -f1)
if [[ ! -x $PREFIX/.venv/bin/python || $(cat "$PREFIX/.venv/.requirements" 2>/dev/null || true) != "$requirements_hash" ]]; then
  say "Installing the Python packages (requirements.txt) into $PREFIX/.venv"
  [[ -x $PREFIX/.venv/bin/python ]] || python3 -m venv "$PREFIX/.venv"
  "$PREFIX/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$PREFIX/requirements.txt"
  echo "$requirements_hash" >"$PREFIX/.venv/.requirements"
  code_changed=1
fi
if ((code_changed)); then
  # The service's user may not write under $PREFIX: compiled once here, not on every start.
  "$PREFIX/.venv/bin/python" -m compileall -q -x '/(\.venv|node_modules)/' "$PREFIX" >/dev/null
fi

# --- PostgreSQL runs (the portal machine) ----------------------------------------------------
# Debian's package made a cluster; its port (5432 unless another PostgreSQL held it) goes
# into a new env file's DATABASE_URL.
pg_port=5432
if [[ $mode == portal ]]; then
  if ((systemd_runs)); then
    systemctl enable --now --quiet postgresql
  else
    # No systemd (a container or a chroot): start the clusters that are down.
    install -d -o postgres -g postgres -m 2775 /run/postgresql
    pg_lsclusters --no-header | while read -r version cluster _port status _rest; do
      [[ $status == online* ]] || pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start
    done
  fi
  pg_port=$(pg_lsclusters --no-header | sort -V | tail -n 1 | awk '{print $3}')
fi

# --- State and configuration ---------------------------------------------------------------
install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0750 "$STATE" "$STATE/static" "$STATE/job-logs"
install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0700 "$STATE/container-state"
install -d -o root -g "$SERVICE_USER" -m 0750 "$CONFIG_DIR"
if [[ ! -e $ENV_FILE ]]; then
  if [[ -n $secret_key_file ]]; then
    secret_key=$(tr -d '[:space:]' <"$secret_key_file")
  elif [[ $mode == agent ]]; then
    fail "an agent signs tasks with the portal's SECRET_KEY: copy it from the portal's $ENV_FILE into a root-only file and pass --secret-key-file FILE."
  else
    secret_key=$(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')
  fi
  if [[ $mode == agent && -z $database_url ]]; then
    fail "an agent uses the portal's database: pass --database-url postgres://aivc:PASSWORD@portal.lab.example/aivc"
  fi
  [[ $secret_key =~ ^[A-Za-z0-9_.~+/=-]{50,}$ ]] || fail "the secret key in $secret_key_file is not 50 or more key characters."
  say "Writing $ENV_FILE (a new SECRET_KEY; edit the rest to fit, then restart the units)"
  written=$(mktemp "$CONFIG_DIR/.env.XXXXXX")
  while IFS= read -r line; do
    case $line in
      SECRET_KEY=*) line="SECRET_KEY=$secret_key" ;;
      ALLOWED_HOSTS=*) line="ALLOWED_HOSTS=$server_name,localhost,127.0.0.1" ;;
      CSRF_TRUSTED_ORIGINS=*) line="CSRF_TRUSTED_ORIGINS=https://$server_name" ;;
      DATABASE_URL=*)
        if [[ -n $database_url ]]; then
          line="DATABASE_URL=$database_url"
        elif [[ $pg_port != 5432 ]]; then
          line="DATABASE_URL=postgres://:$pg_port/aivc"
        fi
        ;;
    esac
    printf '%s\n' "$line"
  done <"$PREFIX/deploy/env.example" >"$written"
  chown root:"$SERVICE_USER" "$written"
  chmod 0640 "$written"
  mv "$written" "$ENV_FILE"
fi

# --- aivc-manage: manage.py as the service's user, with the service's configuration ----------
wrapper=$(mktemp)
cat >"$wrapper" <<EOF
#!/bin/sh
# Installed by deploy/install.sh: runs the portal's manage.py as the service's user ($SERVICE_USER)
# with the service's configuration ($ENV_FILE), e.g. sudo aivc-manage createsuperuser.
set -e
cd $PREFIX
export AIVC_ENV_FILE="\${AIVC_ENV_FILE:-$ENV_FILE}"
if [ "\$(id -u)" = 0 ]; then
  exec runuser -u $SERVICE_USER -- $PREFIX/.venv/bin/python manage.py "\$@"
elif [ "\$(id -un)" = $SERVICE_USER ]; then
  exec $PREFIX/.venv/bin/python manage.py "\$@"
fi
echo "aivc-manage: run it as root (sudo aivc-manage ...); it runs as $SERVICE_USER." >&2
exit 1
EOF
if ! cmp -s "$wrapper" "$WRAPPER"; then
  install -m 0755 "$wrapper" "$WRAPPER"
fi
rm -f "$wrapper"

# --- PostgreSQL: the role and the database, peer authentication over the local socket ----------
cd /
if [[ $mode == portal ]] && local_database; then
  database_url_now=$(env_value DATABASE_URL)
  database=${database_url_now##*/}
  port=5432
  [[ $database_url_now =~ ^postgres(ql)?://:([0-9]+)/ ]] && port=${BASH_REMATCH[2]}
  for _ in $(seq 1 30); do runuser -u postgres -- pg_isready -q -p "$port" && break; sleep 1; done
  runuser -u postgres -- pg_isready -q -p "$port" \
    || fail "PostgreSQL does not answer on its local socket, port $port (pg_lsclusters; DATABASE_URL in $ENV_FILE)."
  psql_postgres() { runuser -u postgres -- psql -X -q -p "$port" -v ON_ERROR_STOP=1 -tAc "$1"; }
  if [[ -z $(psql_postgres "SELECT 1 FROM pg_roles WHERE rolname = '$SERVICE_USER'") ]]; then
    say "Creating the PostgreSQL role $SERVICE_USER"
    runuser -u postgres -- createuser -p "$port" "$SERVICE_USER"
  fi
  if [[ -z $(psql_postgres "SELECT 1 FROM pg_database WHERE datname = '$database'") ]]; then
    say "Creating the PostgreSQL database $database"
    runuser -u postgres -- createdb -p "$port" --owner "$SERVICE_USER" "$database"
  fi
fi

# --- The database's schema, static files, this host, the schedules ------------------------
manage() { runuser -u "$SERVICE_USER" -- env AIVC_ENV_FILE="$ENV_FILE" "$PREFIX/.venv/bin/python" "$PREFIX/manage.py" "$@"; }
cd "$PREFIX"
if [[ $mode == portal ]]; then
  manage migrate --noinput
  # collectstatic rewrites every compressed file even when nothing changed: only for new
  # code or a missing manifest (the web unit's start collects them too).
  static_root=$(env_value STATIC_ROOT)
  if ((code_changed)) || [[ ! -f ${static_root:-$PREFIX/staticfiles}/staticfiles.json ]]; then
    manage collectstatic --noinput --verbosity 0
  fi
else
  manage migrate --check >/dev/null \
    || fail "the portal's database ($ENV_FILE) cannot be reached or is behind this code: check DATABASE_URL, upgrade the portal first."
fi
manage bootstrap_host --name "$host_name" | sed 's/^/   /'
manage setup_schedules >/dev/null

# The host's folder roots (admin: Folders on this server): the scheduler, as aivc, makes the
# users' folders in the work and backup roots. Missing ones are made here; existing ones
# are the lab's storage, left as they are with a word if aivc cannot write them.
read -r work_root backup_root dataset_root < <(runuser -u "$SERVICE_USER" -- env AIVC_ENV_FILE="$ENV_FILE" \
  AIVC_INSTALL_HOST="$host_name" "$PREFIX/.venv/bin/python" "$PREFIX/manage.py" shell --no-imports -c \
  "import os; from containers.models import Host; h = Host.objects.get(name=os.environ['AIVC_INSTALL_HOST']); print(h.work_root, h.backup_root, h.dataset_root)")
for folder in "$work_root" "$backup_root"; do
  if [[ ! -e $folder ]]; then
    say "Creating the folder root $folder (owned by $SERVICE_USER)"
    install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0755 "$folder"
  elif ! runuser -u "$SERVICE_USER" -- test -w "$folder"; then
    say "Warning: $SERVICE_USER cannot write $folder; the scheduler makes users' folders there: chown $SERVICE_USER: $folder"
  fi
done
[[ -e $dataset_root ]] || install -d -m 0755 "$dataset_root"

# --- systemd units -------------------------------------------------------------------------
if [[ $mode == portal ]]; then
  units=(aivc-web.service aivc-scheduler.service)
  enable=(aivc-web.service aivc-scheduler.service)
else
  units=(aivc-agent@.service)
  enable=("aivc-agent@$host_name.service")
fi
if ((systemd_runs)); then
  units_changed=0
  for unit in "${units[@]}"; do
    if ! cmp -s "$PREFIX/deploy/systemd/$unit" "$UNIT_DIR/$unit"; then
      install -m 0644 "$PREFIX/deploy/systemd/$unit" "$UNIT_DIR/$unit"
      units_changed=1
    fi
  done
  ((units_changed)) && systemctl daemon-reload
  systemctl enable --quiet "${enable[@]}"
  if ((code_changed || units_changed)); then
    say "Starting (or restarting) ${enable[*]}"
    systemctl restart "${enable[@]}"
  else
    systemctl start "${enable[@]}"
  fi
else
  say "systemd is not running here: units not installed. Start the services by hand (deploy/systemd/: ExecStart lines)."
fi

# --- Optional: the lab image, on the engine that runs here ---------------------------------
if ((lab_image)); then
  builder=$PREFIX/deploy/images/build-lab-image.sh
  if [[ ! -f $builder ]]; then
    say "No $builder in this checkout: lab image skipped."
  elif ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
    say "No Docker engine answers here: lab image skipped."
  else
    say "Building the lab image (deploy/images/build-lab-image.sh)"
    reference=$(bash "$builder" | tail -n 1)
    say "Lab image $reference built: register it in admin (Images) if it is new."
  fi
fi

if [[ $mode == portal ]]; then
  say "Done. Create the first maintainer with: sudo aivc-manage createsuperuser"
else
  say "Done. Agent of $host_name installed."
fi
