"""Memory per idle WebSocket, measured in the gateway process alone (issue 17, part 4).

The gateway runs in this process, on the production runner (server/connections.py's
BoundedAppRunner, uvloop unless `--loop asyncio`), with a public-path rule for the WebSocket path so
no sign-in is needed. A second process (`--peer`, started by this script) runs the test kit's echo
application and the WebSocket clients, so neither the application's sockets nor the clients' are
counted here. Then:

1. `--sockets` idle WebSockets are opened through the gateway; this process's RSS before and with
   them gives bytes per socket (allocator slack included), and the Python objects alive gives
   objects per socket, by type;
2. they are closed, tracemalloc is started, and as many are opened again: the allocations still
   held, by file:line, per socket (what Python allocates; not the C buffers outside its allocator).

    .venv/bin/python bench/websocket_memory.py [--sockets 2000] [--loop uvloop|asyncio]
        [--top 25] [--set GATEWAY_PROXY__WEBSOCKET_HEARTBEAT_SECONDS=0 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final

import aiohttp
from aiohttp import web
from support.gateway import settings_for, wait_ready
from support.idp import ThreadedDevIdp
from support.ports import free_port
from support.procfs import rss_kib
from support.upstream import make_upstream_app

from devidp.config import DevIdpConfig
from gateway.app import build_app
from gateway.keys import METRICS
from gateway.server.connections import BoundedAppRunner, ClientConnections

WS_PATH: Final = "/_ws"
PARALLEL: Final = 100


# ---- the peer process: the echo application and the clients ----


async def _peer() -> None:
    """Serve the echo app on a free port (printed first), then obey lines on stdin:
    `open URL N` (print `opened K failed F`), `close` (print `closed`)."""
    runner = web.AppRunner(make_upstream_app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    loop = asyncio.get_running_loop()
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).split():
        if line[0] == "open":
            url, count = line[1], int(line[2])
            gate = asyncio.Semaphore(PARALLEL)
            opened = await asyncio.gather(*(_open_one(client, url, gate) for _ in range(count)))
            sockets += [ws for ws in opened if ws is not None]
            failed = opened.count(None)
            print(f"opened {len(sockets)} failed {failed}", flush=True)
        elif line[0] == "close":
            await asyncio.gather(*(ws.close() for ws in sockets))
            sockets.clear()
            print("closed", flush=True)
    await client.close()
    await runner.cleanup()


async def _open_one(
    client: aiohttp.ClientSession, url: str, gate: asyncio.Semaphore
) -> aiohttp.ClientWebSocketResponse | None:
    async with gate:
        try:
            ws = await client.ws_connect(url + WS_PATH, protocols=("echo.v1",), heartbeat=None)
            await ws.receive_json(timeout=10)  # the application's greeting
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        return ws


class Peer:
    def __init__(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - this interpreter, this script
            [sys.executable, __file__, "--peer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}"

    async def ask(self, line: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return await asyncio.get_running_loop().run_in_executor(None, self.process.stdout.readline)

    async def open(self, url: str, count: int) -> int:
        answer = (await self.ask(f"open {url} {count}")).split()
        if int(answer[3]):
            print(f"  {answer[3]} WebSockets failed to open", flush=True)
        return int(answer[1])

    async def close(self) -> None:
        await self.ask("close")

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ---- the gateway, in this process ----


def _settings(idp: Any, upstream: str, sockets: int, extra: dict[str, str]) -> Any:
    proxy: dict[str, Any] = {
        "max_connections": sockets + 100,
        "max_client_connections": sockets + 1000,
        "max_connections_per_client": sockets + 100,  # every socket comes from one address
    }
    for name, value in extra.items():
        group, _, field = name.removeprefix("GATEWAY_").lower().partition("__")
        if group != "proxy" or not field:
            raise SystemExit(f"--set takes GATEWAY_PROXY__* settings only, not {name}")
        proxy[field] = value
    return settings_for(
        idp,
        upstream,
        policy={"rules": [{"path": WS_PATH, "allow": "public"}]},
        proxy=proxy,
    )


def _settle() -> int:
    gc.collect()
    time.sleep(0.2)
    return rss_kib()


def _objects() -> Counter[str]:
    gc.collect()
    return Counter(type(o).__qualname__ for o in gc.get_objects())


async def measure(peer: Peer, settings: Any, count: int, top: int) -> dict[str, Any]:
    app = build_app(settings)
    proxy = settings.proxy
    runner = BoundedAppRunner(
        app,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=proxy.keepalive_timeout_seconds,
        connections=ClientConnections(proxy.max_client_connections, app[METRICS]),
        header_timeout=proxy.header_timeout_seconds,
    )
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url)
        # Warm up: every code path once, so its first-use allocations are not counted.
        await peer.open(url, min(count, 200))
        await peer.close()
        await asyncio.sleep(0.5)
        before_kib, before_objects = _settle(), _objects()
        tasks_before = len(asyncio.all_tasks())
        held = await peer.open(url, count)
        await asyncio.sleep(0.5)
        with_kib, with_objects = _settle(), _objects()
        tasks_with = len(asyncio.all_tasks())
        running = Counter(getattr(t.get_coro(), "__qualname__", "?") for t in asyncio.all_tasks())
        await peer.close()
        await asyncio.sleep(0.5)

        tracemalloc.start(30)
        start = tracemalloc.take_snapshot()
        traced_held = await peer.open(url, count)
        await asyncio.sleep(0.5)
        gc.collect()
        end = tracemalloc.take_snapshot()
        tracemalloc.stop()
        await peer.close()
        await asyncio.sleep(0.5)
    finally:
        await runner.cleanup()
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diff = end.filter_traces(ignore).compare_to(start.filter_traces(ignore), "lineno")
    callers: Counter[str] = Counter()
    for stat in end.filter_traces(ignore).compare_to(start.filter_traces(ignore), "traceback"):
        callers[_caller(stat.traceback)] += stat.size_diff
    objects = with_objects.copy()
    objects.subtract(before_objects)
    return {
        "held": held,
        "rss_per_socket": (with_kib - before_kib) * 1024 / max(held, 1),
        "tasks_per_socket": (tasks_with - tasks_before) / max(held, 1),
        "tasks": [(name, n / max(held, 1)) for name, n in running.most_common(6)],
        "objects_per_socket": sum(objects.values()) / max(held, 1),
        "objects": [(name, n / max(held, 1)) for name, n in objects.most_common(top)],
        "traced_per_socket": sum(d.size_diff for d in diff) / max(traced_held, 1),
        "callers": [(where, size / traced_held) for where, size in callers.most_common(top)],
        "traced": [
            (
                f"{_short(d.traceback[-1].filename)}:{d.traceback[-1].lineno}",
                d.size_diff / traced_held,
            )
            for d in sorted(diff, key=lambda d: -d.size_diff)[:top]
        ],
    }


def _caller(traceback: tracemalloc.Traceback) -> str:
    """The innermost line of the gateway's own code that led to an allocation (else the
    allocation's own line)."""
    frames = list(reversed(traceback))  # tracemalloc lists the oldest frame first
    for frame in frames:
        if "/gateway/" in frame.filename:
            return f"{_short(frame.filename)}:{frame.lineno}"
    return f"(no gateway frame) {_short(frames[0].filename)}:{frames[0].lineno}"


def _where(frame: tracemalloc.Frame) -> str:
    return f"{_short(frame.filename)}:{frame.lineno}"


def _short(path: str) -> str:
    for marker in ("site-packages/", "/lib/python3."):
        if marker in path:
            return path.split(marker, 1)[1]
    return os.path.relpath(path)


def report(result: dict[str, Any], loop_name: str) -> None:
    print(f"\n{result['held']:,} idle WebSockets through one gateway process ({loop_name})\n")
    print(f"RSS per idle WebSocket:           {result['rss_per_socket']:,.0f} B")
    print(f"traced (Python) per WebSocket:    {result['traced_per_socket']:,.0f} B")
    print(f"objects per WebSocket:            {result['objects_per_socket']:.1f}")
    print(f"asyncio tasks per WebSocket:      {result['tasks_per_socket']:.2f}")
    for name, n in result["tasks"]:
        print(f"  {name}: {n:.2f}")
    print("\n| allocated at | B per socket |\n|---|---:|")
    for where, size in result["traced"]:
        print(f"| {where} | {size:,.0f} |")
    print("\n| gateway line that led to it | B per socket |\n|---|---:|")
    for where, size in result["callers"]:
        print(f"| {where} | {size:,.0f} |")
    print("\n| object type | per socket |\n|---|---:|")
    for name, n in result["objects"]:
        print(f"| {name} | {n:.2f} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--set", action="append", default=[], metavar="GATEWAY_PROXY__X=V")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.peer:
        asyncio.run(_peer())
        return 0
    extra = dict(item.split("=", 1) for item in args.set)
    factory = None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    idp_thread = ThreadedDevIdp(DevIdpConfig(port=0))
    idp = idp_thread.start()
    peer = Peer()
    try:
        settings = _settings(idp, peer.url, args.sockets, extra)
        with asyncio.Runner(loop_factory=factory) as runner:
            result = runner.run(measure(peer, settings, args.sockets, args.top))
    finally:
        peer.stop()
        idp_thread.stop()
    report(result, args.loop)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
