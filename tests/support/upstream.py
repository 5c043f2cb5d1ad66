"""The protected application in tests: an echo server that reports exactly what it received.

`/<anything>` answers JSON with the method, raw path, query, headers (as a list of pairs, in order)
and the body's length and SHA-256, computed while streaming so large uploads use no memory.
Special paths: `/_bytes?n=N[&length=1]` streams N bytes back; `/_slow?seconds=S` answers after S
seconds; `/_redirect` answers 302; `/_cookie` sets a cookie; `/_ws` is a WebSocket echo (the text
`big:N` asks it for an N-byte message); `/_ws_stall?seconds=S` accepts a WebSocket only after S
seconds; `/_ws_deaf` accepts one and never answers its pings.
RecordingUpstream runs it in a thread and remembers every request it received.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import WSMsgType, web
from aiohttp.typedefs import Handler

from support.threaded import ThreadedServer

CHUNK: Final = 64 * 1024


async def echo(request: web.Request) -> web.StreamResponse:
    digest = hashlib.sha256()
    length = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        length += len(chunk)
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "raw_path": request.raw_path,
            "query": request.query_string,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_length": length,
            "body_sha256": digest.hexdigest(),
        }
    )


async def send_bytes(request: web.Request) -> web.StreamResponse:
    total = int(request.query["n"])
    response = web.StreamResponse()
    response.content_type = "application/octet-stream"
    if request.query.get("length"):
        response.content_length = total
    await response.prepare(request)
    block = b"x" * CHUNK
    sent = 0
    while sent < total:
        piece = block[: min(CHUNK, total - sent)]
        await response.write(piece)
        sent += len(piece)
    await response.write_eof()
    return response


async def slow(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(float(request.query.get("seconds", "5")))
    return web.json_response({"slow": True})


async def redirect(request: web.Request) -> web.StreamResponse:
    return web.Response(status=302, headers={"Location": "/elsewhere?from=upstream"})


async def cookie(request: web.Request) -> web.StreamResponse:
    response = web.json_response({"cookie": "set"})
    response.set_cookie("app_pref", "dark", path="/")
    response.set_cookie("app_lang", "en", path="/")
    # A misbehaving (or compromised) app trying to plant the gateway's session cookie.
    response.set_cookie("__Host-msal-gateway", "planted" * 7, path="/", secure=True)
    return response


async def websocket(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(protocols=("echo.v1",), max_msg_size=0)  # the gateway limits
    await ws.prepare(request)
    await ws.send_json({"user": request.headers.get("X-MS-CLIENT-PRINCIPAL-NAME")})
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            if message.data == "close":
                await ws.close(code=4001, message=b"asked to close")
                break
            if message.data.startswith("big:"):
                await ws.send_bytes(b"x" * int(message.data[4:]))
                continue
            await ws.send_str("echo:" + message.data)
        elif message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data[::-1])
    return ws


async def websocket_stall(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(float(request.query.get("seconds", "5")))
    if request.transport is None or request.transport.is_closing():
        return web.Response(status=499)  # the caller gave up meanwhile
    return await websocket(request)


async def websocket_deaf(request: web.Request) -> web.StreamResponse:
    """A WebSocket whose end has hung: pings go unanswered."""
    ws = web.WebSocketResponse(autoping=False)
    await ws.prepare(request)
    async for _ in ws:
        pass
    return ws


async def websocket_forbidden(request: web.Request) -> web.StreamResponse:
    return web.json_response({"error": "not for you"}, status=403)


CAE_CLAIMS: Final = '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}'


async def step_up(request: web.Request) -> web.StreamResponse:
    """An API that demands the `c1` authentication context (a Conditional Access claims
    challenge) before it answers."""
    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
    try:
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    except (IndexError, ValueError):
        claims = {}
    if "c1" in claims.get("acrs", []):
        return await echo(request)
    await request.read()
    challenge = base64.b64encode(CAE_CLAIMS.encode()).decode()
    return web.json_response(
        {"error": "insufficient_claims"},
        status=401,
        headers={
            "WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.example/", '
            f'error="insufficient_claims", claims="{challenge}"'
        },
    )


def upstream_headers(body: dict[str, Any]) -> dict[str, list[str]]:
    """The headers an echo answer reports, by lower-case name, repeats kept in order."""
    seen: dict[str, list[str]] = {}
    for name, value in body["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    return seen


@dataclass(frozen=True)
class Seen:
    """One request as the upstream received it."""

    method: str
    raw_path: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


class RecordingUpstream:
    """The echo application in a thread of its own, remembering every request it received, in
    order: what proves that a request the gateway refused never got through."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.server = ThreadedServer(self._make_app)

    def _make_app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.seen.append(Seen(request.method, request.raw_path, tuple(request.headers.items())))
            return await handler(request)

        app = make_upstream_app()
        app.middlewares.append(record)
        return app

    def start(self) -> RecordingUpstream:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def address(self) -> str:
        """host:port, as nginx's upstream blocks name it."""
        return f"127.0.0.1:{self.server.port}"

    @property
    def paths(self) -> list[str]:
        return [seen.raw_path for seen in self.seen]

    def mark(self) -> int:
        return len(self.seen)

    def since(self, mark: int) -> list[Seen]:
        return list(self.seen[mark:])


def make_upstream_app() -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app.router.add_get("/_bytes", send_bytes)
    app.router.add_get("/_slow", slow)
    app.router.add_get("/_redirect", redirect)
    app.router.add_get("/_cookie", cookie)
    app.router.add_get("/_ws", websocket)
    app.router.add_get("/_ws_forbidden", websocket_forbidden)
    app.router.add_get("/_ws_stall", websocket_stall)
    app.router.add_get("/_ws_deaf", websocket_deaf)
    app.router.add_route("*", "/_cae", step_up)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app
