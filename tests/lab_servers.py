"""Test helpers for JupyterLab through the portal: the two proxies a lab runs, the lab
proxy of `make run` (containers.lab_proxy, served from a thread as `manage.py lab_proxy`
serves it) and nginx with the JupyterLab blocks of deploy/nginx.conf."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web


@contextmanager
def serving(app: web.Application, *, host: str = "127.0.0.1") -> Iterator[int]:
    """Serves an aiohttp application on a free port of `host` from its own thread and event
    loop; yields the port."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
    with socket.socket() as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    # Set up from the server's own thread: the calling thread may run a loop already
    # (Playwright's sync API does).
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, host, port).start()

    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    try:
        yield port
    finally:
        # Open WebSockets are closed by the cleanup; it is not waited for past a few seconds.
        with contextlib.suppress(TimeoutError):
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@contextmanager
def lab_proxy(portal_url: str) -> Iterator[str]:
    """The lab proxy in front of `portal_url`; yields its base URL."""
    from containers.lab_proxy import LabProxy

    with serving(LabProxy(portal=portal_url).application()) as port:
        yield f"http://127.0.0.1:{port}"


# nginx, configured by the JupyterLab blocks of deploy/nginx.conf ----------------------

ROOT = Path(__file__).resolve().parents[1]
# deploy/test-nginx/setup.sh unpacks Debian's nginx there without installing a service.
NGINX = Path(os.environ.get("AIVC_NGINX", "/opt/aivc-test-nginx/usr/sbin/nginx"))
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
LAB_BLOCK = "# BEGIN JupyterLab through the portal ({level}", "# END JupyterLab through the portal ({level}"


def nginx_missing() -> str:
    """Why the nginx tests cannot run here ("" when they can)."""
    if not NGINX.exists():
        return f"{NGINX} is missing: run deploy/test-nginx/setup.sh (or set AIVC_NGINX)"
    return ""


def _lab_block(text: str, level: str) -> str:
    begin, end = (marker.format(level=level) for marker in LAB_BLOCK)
    return text[text.index(begin) : text.index(end)]


def nginx_config(*, portal: str, port: int, prefix: Path) -> str:
    """A plain-HTTP nginx in front of `portal` (host:port) with deploy/nginx.conf's JupyterLab
    blocks as they are, the portal's own address put where the file has gunicorn's."""
    text = NGINX_CONF.read_text()
    http_block = _lab_block(text, "http level")
    server_block = _lab_block(text, "server level").replace("127.0.0.1:8000", portal)
    temp = "\n".join(
        f"{kind}_temp_path {prefix}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
daemon off;
worker_processes 1;
user root;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    {temp}
{http_block}
    server {{
        listen 127.0.0.1:{port};
        # Port included: the site is not on 443 here (Django's CSRF check compares origins).
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        location / {{
            proxy_pass http://{portal};
        }}
{server_block}
    }}
}}
"""


@contextmanager
def nginx_proxy(portal_url: str, *, prefix: Path) -> Iterator[str]:
    """nginx in front of `portal_url`, run from `prefix`; yields its base URL."""
    portal = f"127.0.0.1:{urlsplit(portal_url).port}"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(portal=portal, port=port, prefix=prefix))
    process = subprocess.Popen([str(NGINX), "-p", str(prefix), "-c", str(conf), "-e", "stderr"])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"nginx did not start (exit {process.poll()}); config {conf}"
                    ) from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
