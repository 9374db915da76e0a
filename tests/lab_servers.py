"""Test helpers for JupyterLab through the portal: the lab proxy (containers.lab_proxy)
served from a thread, as `manage.py lab_proxy` serves it beside `make run`."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web


@contextmanager
def serving(app: web.Application, *, host: str = "127.0.0.1") -> Iterator[int]:
    """Serves an aiohttp application on a free port of `host` from its own thread and event
    loop; yields the port."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    with socket.socket() as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, host, port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@contextmanager
def lab_proxy(portal_url: str) -> Iterator[str]:
    """The lab proxy in front of `portal_url`; yields its base URL."""
    from containers.lab_proxy import LabProxy

    with serving(LabProxy(portal=portal_url).application()) as port:
        yield f"http://127.0.0.1:{port}"
