"""JupyterLab through the portal, measured (`make bench`; writes docs/benchmarks/jupyterlab.md):

- a click on *Open JupyterLab* to a kernel ready (a new notebook's first cell answered),
  in Chromium, through each proxy: p50 and p95;
- through the proxy against straight to the container's address: a 100 MB download and a
  notebook round trip (an execute_request answered over the kernel's WebSocket), in one
  run, as ratios.

The real engine and the offline lab image `aivc/lab:cpu`; nginx from deploy/test-nginx."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import statistics
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from django.utils import timezone
from playwright.sync_api import expect

from containers.lab import lab_token, upstream_of
from tests.bench.conftest import machine, summary
from tests.containers.test_ssh_login import _tick_until_running
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.test_jupyterlab import LAB_IMAGE, _type_into_first_cell, wait_for_kernel_ready
from tests.factories import ImageFactory, ReservationFactory, UserFactory, host_with_roots
from tests.lab_servers import lab_proxy, nginx_missing, nginx_proxy

pytestmark = [
    pytest.mark.bench,
    pytest.mark.docker,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]

CLICKS = int(os.environ.get("LAB_BENCH_CLICKS", "12"))
DOWNLOADS = int(os.environ.get("LAB_BENCH_DOWNLOADS", "5"))
ROUND_TRIPS = int(os.environ.get("LAB_BENCH_ROUND_TRIPS", "300"))
DOWNLOAD_BYTES = 100 * 1024 * 1024
PASSWORD = "correct-horse-battery"


@pytest.fixture
def lab(db, docker_client, docker_scope, tmp_path):
    try:
        docker_client.images.get(LAB_IMAGE)
    except Exception:
        pytest.skip(f"no {LAB_IMAGE}: make lab-image")
    image = ImageFactory(reference=LAB_IMAGE, lab_modes=True, is_default=True)
    host = host_with_roots(
        tmp_path, name=f"bench-{uuid.uuid4().hex[:6]}", address="127.0.0.1", cpus=4, ram_gb=8
    )
    now = timezone.now()
    reservation = ReservationFactory(
        user=UserFactory(username=f"m11{uuid.uuid4().hex[:6]}"),
        host=host,
        image=image,
        cpus=Decimal("2"),
        memory_gb=2,
        start=now - timedelta(minutes=1),
        end=now + timedelta(hours=2),
    )
    _tick_until_running(reservation, host=host)
    return reservation


def _cookie(client, user) -> dict[str, str]:
    client.force_login(user)
    return {"sessionid": client.cookies["sessionid"].value}


async def _wait_until_up(direct: str, headers: dict[str, str]) -> float:
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        while time.monotonic() - started < 120:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"{direct}api/status", headers=headers) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            await asyncio.sleep(0.2)
    raise AssertionError("JupyterLab did not answer in 120 s")


async def _download(url: str, *, headers=None, cookies=None) -> float:
    async with aiohttp.ClientSession(cookies=cookies) as session:
        started = time.perf_counter()
        async with session.get(url, headers=headers) as response:
            assert response.status == 200, response.status
            size = 0
            async for chunk in response.content.iter_chunked(1 << 20):
                size += len(chunk)
        elapsed = time.perf_counter() - started
    assert size == DOWNLOAD_BYTES
    return elapsed


def _message(msg_type: str, content: dict) -> dict:
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "username": "bench",
            "session": "bench",
            "date": "",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
        "channel": "shell",
        "buffers": [],
    }


async def _round_trips(base: str, *, headers=None, cookies=None, count: int) -> list[float]:
    """execute_request -> execute_reply over a kernel's WebSocket, `count` times."""
    async with aiohttp.ClientSession(cookies=cookies) as session:
        async with session.post(f"{base}api/kernels", headers=headers, json={"name": "python3"}) as response:
            assert response.status == 201, response.status
            kernel = (await response.json())["id"]
        try:
            async with session.ws_connect(f"{base}api/kernels/{kernel}/channels", headers=headers) as ws:
                samples = []
                for index in range(count + 5):
                    message = _message(
                        "execute_request", {"code": "pass", "silent": True, "store_history": False}
                    )
                    started = time.perf_counter()
                    await ws.send_str(json.dumps(message))
                    while True:
                        reply = json.loads((await ws.receive()).data)
                        if (
                            reply.get("msg_type") == "execute_reply"
                            and reply["parent_header"].get("msg_id") == message["header"]["msg_id"]
                        ):
                            break
                    if index >= 5:  # the first few warm the kernel up
                        samples.append(time.perf_counter() - started)
                return samples
        finally:
            async with session.delete(f"{base}api/kernels/{kernel}", headers=headers):
                pass


def _click_to_kernel(browser, proxy: str, reservation, *, count: int) -> list[float]:
    context = browser.new_context(base_url=proxy, viewport={"width": 1366, "height": 900}, locale="en-US")
    context.set_default_timeout(60_000)
    try:
        page = context.new_page()
        page.goto("/accounts/login/")
        page.locator("#id_username").fill(reservation.user.username)
        page.locator("#id_password").fill(PASSWORD)
        page.locator("main form button[type=submit]").click()
        expect(page).to_have_url(re.compile(r"/$"))
        samples = []
        for _ in range(count):
            page.goto(f"/reservations/{reservation.pk}/")
            button = page.get_by_test_id("open-lab")
            started = time.perf_counter()
            with context.expect_page() as opened:
                button.click()
            lab = opened.value
            lab.locator('.jp-LauncherCard[data-category="Notebook"]').first.click()
            wait_for_kernel_ready(lab)
            samples.append(time.perf_counter() - started)
            # And it answers.
            _type_into_first_cell(lab, "1+1")
            lab.keyboard.press("Shift+Enter")
            expect(lab.locator(".jp-OutputArea-output").first).to_have_text("2", timeout=60_000)
            # Each click starts from a fresh lab: the kernel shut down, the notebook and the
            # remembered workspace removed, so the next click finds the launcher again.
            lab.close()
            base = f"/r/{reservation.pk}/lab/"
            for kernel in context.request.get(f"{base}api/kernels").json():
                context.request.delete(f"{base}api/kernels/{kernel['id']}")
            for item in context.request.get(f"{base}api/contents").json()["content"]:
                if item["name"].endswith(".ipynb"):
                    context.request.delete(f"{base}api/contents/{item['path']}")
            context.request.delete(f"{base}lab/api/workspaces/default")
        return samples
    finally:
        context.close()


def test_jupyterlab_through_the_portal(client, live_server, lab, tmp_path, write_figures):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing")
    from playwright.sync_api import sync_playwright

    reservation = lab
    reservation.refresh_from_db()
    token_header = {"Authorization": f"token {lab_token(reservation.pk)}"}
    direct = f"http://{upstream_of(reservation.container_address)}/r/{reservation.pk}/lab/"
    first_answer_s = asyncio.run(_wait_until_up(direct, token_header))
    # 100 MB in the student's Work folder, served by JupyterLab's files handler.
    work = Path(reservation.host.work_root) / reservation.user.username
    with open(work / "bench-100mb.bin", "wb") as handle:
        handle.write(os.urandom(DOWNLOAD_BYTES))
    cookies = _cookie(client, reservation.user)
    proxies = {"make run (aiohttp)": lab_proxy}
    if not nginx_missing():
        proxies["nginx"] = lambda portal: nginx_proxy(portal, prefix=tmp_path / "nginx")

    clicks: dict[str, list[float]] = {}
    downloads: dict[str, list[float]] = {"direct": []}
    trips: dict[str, list[float]] = {"direct": []}
    with contextlib.ExitStack() as stack:
        bases = {name: stack.enter_context(start(live_server.url)) for name, start in proxies.items()}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            try:
                for name, base in bases.items():
                    clicks[name] = _click_to_kernel(browser, base, reservation, count=CLICKS)
            finally:
                browser.close()
        # Alternating direct and proxied, so a busy moment of the machine hits both.
        for name in bases:
            downloads[name] = []
            trips[name] = []
        for _ in range(DOWNLOADS):
            downloads["direct"].append(
                asyncio.run(_download(f"{direct}files/Work/bench-100mb.bin", headers=token_header))
            )
            for name, base in bases.items():
                url = f"{base}/r/{reservation.pk}/lab/files/Work/bench-100mb.bin"
                downloads[name].append(asyncio.run(_download(url, cookies=cookies)))
        trips["direct"] = asyncio.run(_round_trips(direct, headers=token_header, count=ROUND_TRIPS))
        for name, base in bases.items():
            trips[name] = asyncio.run(
                _round_trips(f"{base}/r/{reservation.pk}/lab/", cookies=cookies, count=ROUND_TRIPS)
            )

    load = os.getloadavg()
    lines = [
        "# JupyterLab through the portal",
        "",
        f"Measured {timezone.now():%Y-%m-%d %H:%M} UTC by `tests/bench/test_lab_bench.py` (`make bench`) on "
        f"{machine()}, load average {load[0]:.1f} / {load[1]:.1f} at the end; the real Docker engine, the "
        f"offline lab image `{LAB_IMAGE}`, a booking of 2 CPUs and 2 GiB, the portal under pytest-django's "
        "live server (PostgreSQL), Chromium (Debian's) through each proxy. JupyterLab first answered "
        f"{first_answer_s:.1f} s after the container was marked running.",
        "",
        f"## A click on *Open JupyterLab* to a kernel ready ({CLICKS} clicks per proxy)",
        "",
        "From the click on the reservation page to a new notebook's kernel ready (connected over its "
        "WebSocket and idle, as JupyterLab's status bar shows): JupyterLab's page and scripts through the "
        "proxy, the launcher, a new notebook, a new kernel. Each sample then runs `1+1` and checks `2`.",
        "",
        "| proxy | p50 (s) | p95 (s) | mean (s) |",
        "|---|---|---|---|",
    ]
    for name, samples in clicks.items():
        figures = summary(samples)
        lines.append(f"| {name} | {figures['p50']:.2f} | {figures['p95']:.2f} | {figures['mean']:.2f} |")
    lines += [
        "",
        "## Through the proxy against straight to the container, in one run",
        "",
        f"100 MB download (`/files/Work/...`, {DOWNLOADS} each, alternating) and a notebook round trip "
        f"(execute_request `pass` to its execute_reply over the kernel's WebSocket, {ROUND_TRIPS} each "
        "after 5 to warm up). Direct: from the test process to the container's bridge address with the "
        "token header; proxied: the portal's session cookie, the proxy asks the portal for every request "
        "(the download is one request, the round trips share one WebSocket).",
        "",
        "| path | download median (s) | MB/s | ratio to direct | round trip p50 (ms) | p95 (ms) "
        "| ratio to direct (p50) |",
        "|---|---|---|---|---|---|---|",
    ]
    direct_download = statistics.median(downloads["direct"])
    direct_trip = summary(trips["direct"])["p50"]
    for name in ["direct", *bases]:
        median = statistics.median(downloads[name])
        trip = summary(trips[name])
        rate = DOWNLOAD_BYTES / median / 1e6
        lines.append(
            f"| {name} | {median:.3f} | {rate:.0f} | {median / direct_download:.2f}x | "
            f"{trip['p50'] * 1000:.2f} | {trip['p95'] * 1000:.2f} | {trip['p50'] / direct_trip:.2f}x |"
        )
    write_figures("jupyterlab.md", "\n".join(lines) + "\n")
