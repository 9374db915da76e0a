#!/bin/sh
# Turns a Debian or Ubuntu root filesystem with openssh-server installed into a lab image:
# the portal's sshd_config and entrypoint, no baked-in host keys, root without a password,
# and with AIVC_WITH_JUPYTER=yes JupyterLab in /opt/jupyter with its server config. Run
# inside the image by deploy/images/Dockerfile (which build-lab-image.sh uses for both the
# lab image and the offline test image), so every image behaves the same.
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

if [ "${AIVC_WITH_JUPYTER:-no}" = yes ]; then
  # A virtual environment of its own: what the student installs never breaks JupyterLab.
  python3 -m venv /opt/jupyter
  if ls "$here"/wheels/*.whl >/dev/null 2>&1; then
    # build-lab-image.sh downloaded the wheels on the host: the build needs no network.
    /opt/jupyter/bin/pip install --no-cache-dir --no-index --find-links "$here/wheels" \
      -r "$here/lab-requirements.txt"
  else
    /opt/jupyter/bin/pip install --no-cache-dir -r "$here/lab-requirements.txt"
  fi
  install -d -m 0755 /etc/jupyter
  install -m 0644 "$here/jupyter_server_config.py" /etc/jupyter/jupyter_server_config.py
fi
