#!/bin/sh
# Entrypoint of the lab images (deploy/images). The portal, never the student, picks the
# mode with the variable AIVC_MODE (docs/images.md):
#   ssh (default)  a booking: the container's arguments (the image's start command and the
#                  user's extra command) in the background, sshd in the foreground;
#   job            a batch job: the arguments are the main process and their exit code is
#                  the container's; no sshd, no host keys;
#   lab            a booking with a browser session: as ssh, plus JupyterLab beside sshd.
# No password is read or set: logins use the keys the portal mounts.
set -eu

JUPYTER_BIN=/opt/jupyter/bin/jupyter-lab

seed_home() {
  # The portal mounts the student's persistent home at /root, empty the first time: it
  # gets the shell's start-up files from /etc/skel once; what is there already is kept.
  [ -d /etc/skel ] || return 0
  for file in /etc/skel/.[!.]* /etc/skel/*; do
    [ -e "$file" ] || continue
    name=${file##*/}
    if [ ! -e "/root/$name" ] && [ ! -L "/root/$name" ]; then
      cp -a "$file" "/root/$name" || echo "aivc-entrypoint: could not copy $file to /root." >&2
    fi
  done
}

fail() {
  echo "aivc-entrypoint: $*" >&2
  exit 78
}
prepare_sshd() {
  # sshd's privilege-separation directory lives on a /run that may start empty.
  mkdir -p /run/sshd
  chmod 0755 /run/sshd
  for key in /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ecdsa_key; do
    [ -r "$key" ] || fail "$key is missing; the portal mounts the host keys."
  done
}
start_extra_command() {
  if [ "$#" -gt 0 ]; then
    # The user's own command runs beside sshd; its end does not end the container.
    "$@" </dev/null &
  fi
}
start_jupyter() {
  # Its settings (address, base URL, the token read from the file the portal mounts) are
  # in /etc/jupyter/jupyter_server_config.py, so nothing secret is on a command line. Its
  # log goes to the container's (it prints the token as "..."), rotated by the engine.
  if [ ! -x "$JUPYTER_BIN" ]; then
    echo "aivc-entrypoint: JupyterLab is not installed in this image; only ssh is offered." >&2
    return 0
  fi
  (cd /root && exec "$JUPYTER_BIN" </dev/null) &
}
run_sshd() {
  # exec: sshd becomes the direct child of the container's init, with privilege separation.
  exec /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config
}
seed_home

mode=${AIVC_MODE:-ssh}
case "$mode" in
  job)
    [ "$#" -gt 0 ] || { echo "aivc-entrypoint: a job needs a command." >&2; exit 64; }
    exec "$@"
    ;;
  ssh)
    prepare_sshd
    start_extra_command "$@"
    run_sshd
    ;;
  lab)
    prepare_sshd
    start_extra_command "$@"
    start_jupyter
    run_sshd
    ;;
  *)
    fail "unknown AIVC_MODE '$mode' (ssh, job or lab)."
    ;;
esac
