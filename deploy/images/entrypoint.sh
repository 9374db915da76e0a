#!/bin/sh
# Entrypoint of the lab images: starts the user's extra command (the container's arguments,
# if any) in the background, then replaces itself with sshd in the foreground, so sshd is
# the direct child of the container's init and keeps its privilege separation. No password
# is read or set: logins use the keys the portal mounts at /root/.ssh/authorized_keys.
set -eu

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

seed_home

# sshd's privilege-separation directory lives on a tmpfs-like /run that may start empty.
mkdir -p /run/sshd
chmod 0755 /run/sshd

for key in /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ecdsa_key; do
  if [ ! -r "$key" ]; then
    echo "aivc-entrypoint: $key is missing; the portal mounts the host keys." >&2
    exit 78
  fi
done

if [ "$#" -gt 0 ]; then
  # The user's own command runs beside sshd; its end does not end the container.
  "$@" </dev/null &
fi

exec /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config
