"""The measuring stick of the benchmark: a plain aiohttp reverse proxy with no authentication at
all, on uvloop, in as many processes as the gateway, sharing one port through SO_REUSEPORT.

It does what any honest streaming proxy must and nothing more: the request's method, path, query
and end-to-end headers go upstream (hop-by-hop headers, and those the client names in
`Connection`, do not), the body is streamed both ways over one pooled keep-alive ClientSession,
and the upstream's status, reason and end-to-end headers come back. With --access-log, aiohttp's
own access logger writes a line per request to stderr (its default format, through `logging`),
as a plain aiohttp service would in production; without it, no access log.

    .venv/bin/python bench/bare_proxy.py --listen 127.0.0.1:9000 \\
        --upstream http://127.0.0.1:8080 [--workers 2] [--loop uvloop|asyncio] [--access-log]

With more than one worker the first process only starts the workers and passes SIGTERM/SIGINT
on to them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Final

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

# The gateway's own list: both proxies drop exactly the same headers, so neither does less work.
from gateway.auth.headers import HOP_BY_HOP

UPSTREAM: Final = web.AppKey("upstream", str)
CLIENT: Final = web.AppKey("client", aiohttp.ClientSession)


def end_to_end(headers: CIMultiDictProxy[str], *, drop: frozenset[str]) -> CIMultiDict[str]:
    """The headers a proxy passes on: not hop-by-hop, not named in Connection, not in `drop`."""
    named = {
        token.strip().lower()
        for value in headers.getall("Connection", [])
        for token in value.split(",")
    }
    return CIMultiDict(
        (name, value)
        for name, value in headers.items()
        if (lower := name.lower()) not in HOP_BY_HOP and lower not in named and lower not in drop
    )


async def proxy(request: web.Request) -> web.StreamResponse:
    client = request.app[CLIENT]
    # The upstream's origin with the request's raw path and query, byte for byte (joined as
    # strings: a path starting with // must not become an authority).
    url = URL(request.app[UPSTREAM] + request.raw_path, encoded=True)
    headers = end_to_end(request.headers, drop=frozenset({"host"}))
    body = request.content if request.body_exists else None
    try:
        async with client.request(
            request.method, url, headers=headers, data=body, allow_redirects=False
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers=end_to_end(upstream.headers, drop=frozenset()),
            )
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
    except (aiohttp.ClientConnectionError, TimeoutError) as exc:
        raise web.HTTPBadGateway(text=f"upstream: {type(exc).__name__}") from exc


async def _client(app: web.Application) -> AsyncIterator[None]:
    """The pooled upstream client, as long as the app runs."""
    app[CLIENT] = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256),
        # Nothing the client did not send: no User-Agent or Accept-Encoding of the proxy's own.
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_read=60),
    )
    yield
    await app[CLIENT].close()


def make_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(_client)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket every worker binds on its own; the kernel spreads connections across them."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


async def serve(host: str, port: int, upstream: str, access_log: bool) -> None:
    logger = None
    if access_log:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
        logger = logging.getLogger("aiohttp.access")
    runner = web.AppRunner(make_app(upstream), access_log=logger, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, listening_socket(host, port)).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run_worker(listen: str, upstream: str, loop: str, access_log: bool) -> None:
    host, _, port = listen.rpartition(":")
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        runner.run(serve(host, int(port), upstream, access_log))


def run_workers(argv: list[str], workers: int) -> int:
    """Start the workers, pass termination on to them, wait for all of them."""
    children = [
        # The same script and arguments, as a worker.
        subprocess.Popen([sys.executable, __file__, *argv, "--worker"])  # noqa: S603
        for _ in range(workers)
    ]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        status = max(status, child.wait())
    return status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--listen", required=True, help="host:port")
    parser.add_argument("--upstream", required=True, help="http://host:port")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--access-log", action="store_true", help="aiohttp's access log to stderr")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker or args.workers <= 1:
        run_worker(args.listen, args.upstream, args.loop, args.access_log)
        return
    own = ["--listen", args.listen, "--upstream", args.upstream, "--loop", args.loop]
    if args.access_log:
        own.append("--access-log")
    sys.exit(run_workers(own, args.workers))


if __name__ == "__main__":
    main()
