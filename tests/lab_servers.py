"""Test helpers for JupyterLab through the portal: the lab proxy (containers.lab_proxy)
served from a thread, as `manage.py lab_proxy` serves it beside `make run`."""

from __future__ import annotations

import asyncio
import contextlib
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
