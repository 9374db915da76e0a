"""The lab proxy of `make run` (`manage.py lab_proxy`): what nginx does in production
(deploy/nginx.conf), for a portal served by `runserver`, which speaks no WebSocket.

An aiohttp server (aiohttp: one maintained package that is both an HTTP/WebSocket server
and client, so the proxy is one small module with no framework of its own). Before every
request or WebSocket under `/r/<pk>/lab/` it asks the portal's `lab-auth` view with the
browser's cookies, exactly as nginx's `auth_request` does; on 204 it forwards to the
container's address with the token header the portal gave, without the browser's cookies,
and drops any cookie JupyterLab sets, so nothing in the container reads or replaces the
portal's session. Every other request, and a lab request the portal refused, is passed
to the portal unchanged, which answers it as any page (the login page, 404).

It imports no Django model and talks to no Docker engine: it knows only the portal's URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from dataclasses import dataclass

from aiohttp import ClientSession, ClientTimeout, DummyCookieJar, WSMsgType, web
from aiohttp.client_exceptions import ClientError, WSServerHandshakeError

logger = logging.getLogger(__name__)
LAB_PATH = re.compile(r"^/r/([0-9]+)/lab/")
AUTH_PATH = re.compile(r"^/r/[0-9]+/lab-auth/")
PROXY_HEADER = "X-Aivc-Lab-Proxy"  # the same names as containers.lab_views
UPSTREAM_HEADER = "X-Aivc-Lab-Upstream"
AUTHORIZATION_HEADER = "X-Aivc-Lab-Authorization"
# Hop-by-hop headers (RFC 9110, 7.6.1) and the ones each side of a WebSocket makes itself.
HOP_BY_HOP = frozenset(
    name.lower()
    for name in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
WEBSOCKET_HANDSHAKE = frozenset(
    ("sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol")
)
CHUNK = 256 * 1024
# What a lab that does not answer yet shows (JupyterLab takes seconds to start with its
# container); the same page as deploy/nginx.conf's.
STARTING_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="3">'
    "<title>JupyterLab is starting</title></head><body><p>JupyterLab is starting in your container "
    "(or cannot be reached yet). This page tries again every few seconds.</p></body></html>\n"
)


@dataclass(frozen=True)
class _Target:
    upstream: str
    authorization: str


def _forwarded_headers(request: web.Request, *, to_lab: bool, websocket: bool = False) -> dict[str, str]:
    """The request's headers for the next hop. The Host header is kept (Django checks it,
    JupyterLab compares a WebSocket's Origin with it); the proxy's own question header
    never passes from a browser."""
    drop = HOP_BY_HOP | {PROXY_HEADER.lower(), "content-length" if websocket else ""}
    if websocket:
        drop |= WEBSOCKET_HANDSHAKE
    if to_lab:
        # The portal's session never reaches the container; the token authenticates.
        drop |= {"cookie", "authorization"}
    return {name: value for name, value in request.headers.items() if name.lower() not in drop}


def _response_headers(upstream_headers, *, from_lab: bool) -> list[tuple[str, str]]:
    drop = HOP_BY_HOP | ({"set-cookie"} if from_lab else set())
    return [(name, value) for name, value in upstream_headers.items() if name.lower() not in drop]


class LabProxy:
    """One proxy in front of one portal (`portal`: its base URL, e.g. http://127.0.0.1:8000)."""

    def __init__(self, *, portal: str) -> None:
        self.portal = portal.rstrip("/")
        self._session: ClientSession | None = None

    async def _client(self) -> ClientSession:
        if self._session is None:
            # No total timeout: a long download or a WebSocket lives as long as it is used.
            # No cookie jar: one browser's cookies must never ride along with another's request.
            self._session = ClientSession(
                timeout=ClientTimeout(total=None, sock_connect=10),
                auto_decompress=False,
                cookie_jar=DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def application(self) -> web.Application:
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_cleanup.append(lambda _app: self.close())
        return app

    async def _ask(self, request: web.Request, pk: str) -> _Target | None:
        """The portal's answer for this request (the browser's cookies, its Host)."""
        headers = {PROXY_HEADER: "1", "Host": request.headers.get("Host", "")}
        if "Cookie" in request.headers:
            headers["Cookie"] = request.headers["Cookie"]
        session = await self._client()
        async with session.get(
            f"{self.portal}/r/{pk}/lab-auth/", headers=headers, allow_redirects=False
        ) as answer:
            await answer.read()
            if answer.status != 204:
                return None
            return _Target(
                upstream=answer.headers[UPSTREAM_HEADER], authorization=answer.headers[AUTHORIZATION_HEADER]
            )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if AUTH_PATH.match(request.path):
            raise web.HTTPNotFound()
        match = LAB_PATH.match(request.path)
        try:
            target = await self._ask(request, match.group(1)) if match else None
        except (TimeoutError, ClientError, OSError, KeyError) as error:
            logger.warning("Lab proxy: asking the portal about %s failed: %r", request.path, error)
            raise web.HTTPBadGateway(text="The portal did not answer.\n") from None
        if target is None:
            return await self._forward(
                request, base=self.portal, headers=_forwarded_headers(request, to_lab=False)
            )
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, target)
        headers = _forwarded_headers(request, to_lab=True)
        headers["Authorization"] = target.authorization
        return await self._forward(request, base=f"http://{target.upstream}", headers=headers, to_lab=True)

    async def _forward(
        self, request: web.Request, *, base: str, headers: dict[str, str], to_lab: bool = False
    ) -> web.StreamResponse:
        session = await self._client()
        try:
            upstream = await session.request(
                request.method,
                base + request.rel_url.raw_path_qs,
                headers=headers,
                data=request.content if request.body_exists else None,
                allow_redirects=False,
            )
        except (TimeoutError, ClientError, OSError) as error:
            logger.warning("Lab proxy: %s %s to %s failed: %r", request.method, request.path, base, error)
            if to_lab:
                return web.Response(
                    status=503, text=STARTING_PAGE, content_type="text/html", headers={"Retry-After": "3"}
                )
            raise web.HTTPBadGateway(text="The portal did not answer.\n") from None
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in _response_headers(upstream.headers, from_lab=to_lab):
                response.headers.add(name, value)
            try:
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    await response.write(chunk)
                await response.write_eof()
            except ConnectionResetError:  # the browser left (a tab closed): nothing to answer
                pass
        return response

    async def _websocket(self, request: web.Request, target: _Target) -> web.StreamResponse:
        """Opens the container's WebSocket first, so the browser gets the subprotocol the
        lab chose, then relays frames both ways until either side closes."""
        headers = _forwarded_headers(request, to_lab=True, websocket=True)
        headers["Authorization"] = target.authorization
        protocols = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
        ]
        session = await self._client()
        try:
            upstream = await session.ws_connect(
                f"ws://{target.upstream}{request.rel_url.raw_path_qs}",
                headers=headers,
                protocols=protocols,
                max_msg_size=0,
                autoping=True,
            )
        except WSServerHandshakeError as error:
            raise web.HTTPBadGateway(text=f"The lab refused the WebSocket ({error.status}).\n") from None
        except (TimeoutError, ClientError, OSError):
            raise web.HTTPBadGateway(text="The lab did not answer.\n") from None
        browser = web.WebSocketResponse(
            protocols=[upstream.protocol] if upstream.protocol else (), max_msg_size=0, autoping=True
        )
        await browser.prepare(request)

        async def relay(source, sink) -> None:
            async for message in source:
                if message.type == WSMsgType.TEXT:
                    await sink.send_str(message.data)
                elif message.type == WSMsgType.BINARY:
                    await sink.send_bytes(message.data)
                else:
                    break

        tasks = [
            asyncio.ensure_future(relay(browser, upstream)),
            asyncio.ensure_future(relay(upstream, browser)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                await upstream.close()
            with contextlib.suppress(Exception):
                await browser.close()
        return browser


async def _exit_with_parent(parent: int) -> None:
    """Stops the proxy once the process that started it is gone (`make run`'s shell)."""
    while os.getppid() == parent:
        await asyncio.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)  # run_app's own graceful stop


def serve(*, host: str, port: int, portal: str, exit_with_parent: bool = False, print_fn=print) -> None:
    proxy = LabProxy(portal=portal)
    app = proxy.application()
    if exit_with_parent:
        parent = os.getppid()

        async def watch(_app: web.Application):
            task = asyncio.ensure_future(_exit_with_parent(parent))
            yield
            task.cancel()

        app.cleanup_ctx.append(watch)
    web.run_app(app, host=host, port=port, print=print_fn, access_log=None)
