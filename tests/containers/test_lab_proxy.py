"""Both proxies a lab runs, between a client, the live portal and a stand-in JupyterLab:
the lab proxy of `make run` (containers.lab_proxy) and nginx with deploy/nginx.conf's
JupyterLab blocks (skipped without an nginx binary unless AIVC_REQUIRE_NGINX=1). Who is
let through, what reaches the lab (the token, never the portal's cookies), what comes back
(never a cookie), and WebSockets."""

import asyncio
import os
import socket

import aiohttp
import pytest
from aiohttp import web
from django.utils import timezone

from bookings.models import Reservation
from containers.lab import lab_token
from tests.factories import ImageFactory, ReservationFactory, UserFactory
from tests.lab_servers import lab_proxy, nginx_missing, nginx_proxy, serving

pytestmark = pytest.mark.django_db(transaction=True)


def _stand_in_lab() -> tuple[web.Application, list[dict]]:
    """Answers like JupyterLab would, and records the headers each request brought."""
    seen: list[dict] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        body = f"lab page {request.path_qs}".encode()
        response = web.Response(body=body)
        response.set_cookie("sessionid", "planted-by-the-container", path="/")
        return response

    async def upload(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(text=f"got {len(await request.read())} bytes")

    async def kernel_channels(request: web.Request) -> web.WebSocketResponse:
        seen.append(dict(request.headers))
        ws = web.WebSocketResponse(protocols=["v1.kernel.websocket.jupyter.org"])
        await ws.prepare(request)
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(f"echo {message.data}")
            elif message.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(message.data[::-1])
        return ws

    app = web.Application(client_max_size=0)
    app.router.add_get("/r/{pk}/lab/api/kernels/k1/channels", kernel_channels)
    app.router.add_post("/r/{pk}/lab/api/contents/upload", upload)
    app.router.add_get("/{tail:.*}", page)
    return app, seen


@pytest.fixture
def stand_in(monkeypatch):
    app, seen = _stand_in_lab()
    with serving(app) as port:
        monkeypatch.setattr("containers.lab.LAB_PORT", port)
        yield seen


@pytest.fixture(params=["make-run", "nginx"])
def proxy_in_front(request, tmp_path):
    """Starts the proxy named by the parameter in front of a portal URL."""
    if request.param == "make-run":
        return lab_proxy
    missing = nginx_missing()
    if missing:
        if os.environ.get("AIVC_REQUIRE_NGINX") == "1":
            pytest.fail(missing)
        pytest.skip(missing)
    return lambda portal: nginx_proxy(portal, prefix=tmp_path / "nginx")


@pytest.fixture
def lab(live_server, stand_in, proxy_in_front):
    now = timezone.now()
    reservation = ReservationFactory(
        image=ImageFactory(lab_modes=True),
        status=Reservation.Status.RUNNING,
        container_address="127.0.0.1",
        start=now - timezone.timedelta(minutes=1),
        end=now + timezone.timedelta(hours=1),
    )
    with proxy_in_front(live_server.url) as proxy:
        yield reservation, proxy


def _session_cookie(client, user) -> dict[str, str]:
    client.force_login(user)
    return {"sessionid": client.cookies["sessionid"].value}


async def _get(url: str, cookies: dict[str, str] | None = None, **kwargs) -> tuple[int, dict, bytes]:
    async with (
        aiohttp.ClientSession(cookies=cookies) as session,
        session.get(url, allow_redirects=False, **kwargs) as response,
    ):
        return response.status, response.headers.copy(), await response.read()


def test_the_owner_reaches_the_lab_with_the_token_and_without_the_portal_cookies(client, lab, stand_in):
    reservation, proxy = lab
    cookies = _session_cookie(client, reservation.user)
    status, headers, body = asyncio.run(_get(f"{proxy}/r/{reservation.pk}/lab/tree?a=1", cookies))
    assert status == 200
    assert body == f"lab page /r/{reservation.pk}/lab/tree?a=1".encode()
    [request] = stand_in
    assert request["Authorization"] == f"token {lab_token(reservation.pk)}"
    assert "Cookie" not in request
    assert request["Host"] == proxy.removeprefix("http://")
    # Nothing the container sets reaches the portal's cookies; the token never comes back.
    assert "Set-Cookie" not in headers
    assert lab_token(reservation.pk) not in str(headers)


def test_another_student_gets_the_portals_404(client, lab, stand_in):
    reservation, proxy = lab
    cookies = _session_cookie(client, UserFactory())
    status, _, _ = asyncio.run(_get(f"{proxy}/r/{reservation.pk}/lab/", cookies))
    assert status == 404
    assert stand_in == []


def test_an_anonymous_visitor_is_sent_to_the_login_page(lab, stand_in):
    reservation, proxy = lab
    status, headers, _ = asyncio.run(_get(f"{proxy}/r/{reservation.pk}/lab/"))
    assert status == 302
    assert headers["Location"].startswith("/accounts/login/?next=")
    assert stand_in == []


def test_after_the_end_the_lab_url_is_404(client, lab, stand_in):
    reservation, proxy = lab
    cookies = _session_cookie(client, reservation.user)
    Reservation.objects.filter(pk=reservation.pk).update(status=Reservation.Status.ENDED)
    status, _, _ = asyncio.run(_get(f"{proxy}/r/{reservation.pk}/lab/", cookies))
    assert status == 404
    assert stand_in == []


def test_a_forged_authorization_header_is_replaced(client, lab, stand_in):
    reservation, proxy = lab
    cookies = _session_cookie(client, reservation.user)
    asyncio.run(_get(f"{proxy}/r/{reservation.pk}/lab/", cookies, headers={"Authorization": "token mine"}))
    assert stand_in[0]["Authorization"] == f"token {lab_token(reservation.pk)}"


def test_the_question_is_not_reachable_through_the_proxy(client, lab):
    reservation, proxy = lab
    cookies = _session_cookie(client, reservation.user)
    status, headers, _ = asyncio.run(
        _get(f"{proxy}/r/{reservation.pk}/lab-auth/", cookies, headers={"X-Aivc-Lab-Proxy": "1"})
    )
    assert status == 404
    assert lab_token(reservation.pk) not in str(headers)


def test_other_pages_pass_through_to_the_portal(client, lab):
    reservation, proxy = lab
    cookies = _session_cookie(client, reservation.user)
    status, _, body = asyncio.run(_get(f"{proxy}/reservations/{reservation.pk}/", cookies))
    assert status == 200
    assert b"Open JupyterLab" in body


def test_an_upload_reaches_the_lab_whole(client, lab, stand_in):
    reservation, proxy = lab
    cookies = _session_cookie(client, reservation.user)

    async def post() -> str:
        async with aiohttp.ClientSession(cookies=cookies) as session:
            url = f"{proxy}/r/{reservation.pk}/lab/api/contents/upload"
            async with session.post(url, data=b"x" * 3_000_000) as response:
                return await response.text()

    assert asyncio.run(post()) == "got 3000000 bytes"


def test_a_websocket_is_relayed_both_ways_with_the_labs_subprotocol(client, lab, stand_in):
    reservation, proxy = lab
    cookies = _session_cookie(client, reservation.user)

    async def talk() -> tuple[str | None, str, bytes]:
        async with aiohttp.ClientSession(cookies=cookies) as session:
            url = f"{proxy}/r/{reservation.pk}/lab/api/kernels/k1/channels"
            async with session.ws_connect(url, protocols=["v1.kernel.websocket.jupyter.org"]) as ws:
                await ws.send_str("hello")
                text = (await ws.receive()).data
                await ws.send_bytes(b"abc")
                data = (await ws.receive()).data
                return ws.protocol, text, data

    protocol, text, data = asyncio.run(talk())
    assert (protocol, text, data) == ("v1.kernel.websocket.jupyter.org", "echo hello", b"cba")
    [request] = stand_in
    assert request["Authorization"] == f"token {lab_token(reservation.pk)}"
    assert "Cookie" not in request


def test_another_students_websocket_never_opens(client, lab, stand_in):
    reservation, proxy = lab
    cookies = _session_cookie(client, UserFactory())

    async def talk() -> int:
        async with aiohttp.ClientSession(cookies=cookies) as session:
            url = f"{proxy}/r/{reservation.pk}/lab/api/kernels/k1/channels"
            try:
                async with session.ws_connect(url):
                    return 101
            except aiohttp.WSServerHandshakeError as error:
                return error.status

    assert asyncio.run(talk()) == 404
    assert stand_in == []


def test_a_lab_that_does_not_answer_yet_gets_a_page_that_retries(client, lab, monkeypatch):
    reservation, proxy = lab
    cookies = _session_cookie(client, reservation.user)
    with socket.socket() as probe:  # a port nothing listens on: JupyterLab still starting
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setattr("containers.lab.LAB_PORT", closed)
    status, headers, body = asyncio.run(_get(f"{proxy}/r/{reservation.pk}/lab/", cookies))
    assert status == 503
    assert headers["Retry-After"] == "3"
    assert b"JupyterLab is starting" in body and b'http-equiv="refresh"' in body
