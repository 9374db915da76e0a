# JupyterLab of the lab images, started by aivc-entrypoint in AIVC_MODE=lab (docs/images.md).
# The portal's proxy reaches it on port 8888 inside the container (never published on the
# host) under the base URL AIVC_LAB_BASE_URL. The token is read from the file the portal
# mounts read-only, so it is never on a command line, in the environment or `docker inspect`.
# A JupyterLab the student starts by hand (over ssh, where AIVC_MODE is not set) keeps
# Jupyter's own defaults.
import os

TOKEN_FILE = "/run/aivc/jupyter/token"  # noqa: S105 (a path, not a token)

c = get_config()  # noqa: F821 (provided by Jupyter when it loads this file)

if os.environ.get("AIVC_MODE") == "lab":
    try:
        with open(TOKEN_FILE, encoding="utf-8") as handle:
            token = handle.read().strip()
    except OSError as error:
        message = f"aivc: no Jupyter token at {TOKEN_FILE} ({error}); JupyterLab does not start."
        raise SystemExit(message) from None
    if not token:
        raise SystemExit(f"aivc: {TOKEN_FILE} is empty; JupyterLab does not start.")
    c.IdentityProvider.token = token
    # Inside the container only: port 8888 is never published on the host.
    c.ServerApp.ip = "0.0.0.0"  # noqa: S104
    c.ServerApp.port = 8888
    c.ServerApp.port_retries = 0
    c.ServerApp.allow_remote_access = True
    c.ServerApp.open_browser = False
    c.ServerApp.allow_root = True
    c.ServerApp.root_dir = "/root"
    c.ServerApp.base_url = os.environ.get("AIVC_LAB_BASE_URL") or "/"
    c.ServerApp.terminado_settings = {"shell_command": ["/bin/bash", "-l"]}
