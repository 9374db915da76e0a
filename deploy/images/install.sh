#!/bin/sh
# Turns a Debian or Ubuntu root filesystem with openssh-server installed into a lab image:
# the portal's sshd_config and entrypoint, no baked-in host keys, root without a password.
# Run inside the image: by deploy/images/Dockerfile, and in a chroot by
# deploy/test-engine/setup.sh for the offline test image, so both behave the same.
set -eu
here=$(dirname "$0")

# No host key is baked into the image: every user gets their own from the portal.
rm -f /etc/ssh/ssh_host_*
install -m 0644 "$here/sshd_config" /etc/ssh/sshd_config
install -m 0755 "$here/entrypoint.sh" /usr/local/sbin/aivc-entrypoint
install -d -m 0700 /root/.ssh
# Without PAM, sshd refuses even a key login to a locked account ("!" in /etc/shadow);
# "*" means no password can ever match.
usermod -p '*' root
