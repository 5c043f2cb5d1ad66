"""Idle client connections, measured (THREATS.md F-23): one `python -m gateway serve` process in
front of the echo upstream, a signed-in user, and a flood of N idle client connections over raw
sockets. Prints the gateway's RSS and open file descriptors before and with the flood, how many
flood connections the gateway kept open, and the latency of the signed-in user's requests (each on
a new connection, as a newly arriving user would make them) before and during the flood.

    .venv/bin/python bench/idle_connections.py [--connections 10000] [--mode keepalive]
        [--hold 25] [--gateway-nofile 4096] [--set GATEWAY_PROXY__MAX_CLIENT_CONNECTIONS=2000 ...]

`--mode keepalive`: every flood connection makes one request, reads the answer and then stays
idle (idle keep-alive); `--mode silent`: it connects and never sends a byte. Everything runs on
loopback; the flood is opened at most `--parallel` connections at a time and is closed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import threading
import time
from typing import Final

import aiohttp
from support.browser import Browser
from support.gateway import PUBLIC_URL, SESSION_COOKIE, GatewayProcess, idp_ssl, settings_for
from support.idp import ThreadedDevIdp
from support.procfs import open_fds, rss_kib
from support.threaded import ThreadedServer
from support.upstream import make_upstream_app

from devidp.config import DevIdpConfig

HEALTHZ: Final = b"GET /.auth/healthz HTTP/1.1\r\nHost: app.test\r\n\r\n"
CONNECT_SECONDS: Final = 5.0


async def probe(url: str, session: str, count: int, pause: float) -> list[float]:
    """`count` signed-in requests, each on a new connection; their latencies (failures: inf)."""
    latencies: list[float] = []
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
        for i in range(count):
            started = time.perf_counter()
            try:
                async with client.get(
                    f"{url}/probe/{i}",
                    headers={"Accept": "application/json", "Cookie": f"{SESSION_COOKIE}={session}"},
                ) as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            latencies.append(time.perf_counter() - started if ok else float("inf"))
            await asyncio.sleep(pause)
    return latencies


class Flood:
    """N client connections to the gateway, opened `parallel` at a time."""

    def __init__(self, port: int, mode: str, parallel: int) -> None:
        self.port = port
        self.mode = mode
        self.gate = asyncio.Semaphore(parallel)
        self.streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.failed = 0

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        if self.mode == "keepalive":
            writer.write(HEALTHZ)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
        return reader, writer

    async def _one(self) -> None:
        async with self.gate:
            try:
                # A gateway out of descriptors leaves connections unaccepted in its backlog.
                self.streams.append(await asyncio.wait_for(self._connect(), CONNECT_SECONDS))
            except (OSError, TimeoutError, asyncio.IncompleteReadError, StopIteration):
                self.failed += 1

    async def open(self, count: int) -> None:
        await asyncio.gather(*(self._one() for _ in range(count)))

    async def still_open(self) -> int:
        """Flood connections the gateway has not closed (EOF seen within a short wait)."""
        await asyncio.sleep(0.5)
        return sum(1 for reader, _ in self.streams if not reader.at_eof())

    def close(self) -> None:
        for _, writer in self.streams:
            writer.close()


async def run(
    connections: int,
    mode: str,
    parallel: int,
    hold: float,
    nofile: int | None,
    extra: dict[str, str],
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    idp_thread = ThreadedDevIdp(DevIdpConfig(port=0))
    idp = idp_thread.start()
    upstream = ThreadedServer(make_upstream_app).start()
    # The gateway inherits this process's soft limit: `--gateway-nofile` or the one we were given.
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile or soft, hard))
    gateway = GatewayProcess(settings_for(idp, upstream.url), extra_env=extra)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process holds the flood
    pid = gateway.process.pid
    if gateway.process.stderr is not None:  # drained, or a full pipe would stall the gateway
        threading.Thread(target=gateway.process.stderr.read, daemon=True).start()
    rows: list[tuple[str, str]] = [
        ("idle connections opened", f"{connections} ({mode})"),
        ("settings", " ".join(f"{k}={v}" for k, v in extra.items()) or "defaults"),
        ("soft RLIMIT_NOFILE the gateway started with", str(nofile or soft)),
    ]
    try:
        await gateway.ready()
        browser = Browser(gateway.url, PUBLIC_URL, idp_ssl(idp.ca_path))
        await browser.sign_in("/")
        session = browser.cookie(SESSION_COOKIE) or ""
        await browser.close()
        before = await probe(gateway.url, session, 30, 0.02)
        rows += [
            ("gateway RSS before", f"{rss_kib(pid) / 1024:.1f} MiB"),
            ("gateway open fds before", str(open_fds(pid))),
        ]
        flood = Flood(gateway.port, mode, parallel)
        started = time.perf_counter()
        opening = asyncio.create_task(flood.open(connections))
        during_open: list[float] = []
        while not opening.done():
            during_open += await probe(gateway.url, session, 1, 0.05)
        await opening
        opened_in = time.perf_counter() - started
        held = await probe(gateway.url, session, 30, 0.02)
        kept = await flood.still_open()
        rows += [
            ("flood opened in", f"{opened_in:.1f} s ({flood.failed} failed to connect/answer)"),
            ("flood connections the gateway kept open", str(kept)),
            ("gateway RSS with the flood", f"{rss_kib(pid) / 1024:.1f} MiB"),
            ("gateway peak RSS", f"{gateway.rss_peak_kib() / 1024:.1f} MiB"),
            ("gateway open fds with the flood", str(open_fds(pid))),
        ]
        if hold:
            await asyncio.sleep(hold)
            rows += [
                (f"flood connections still open {hold:.0f} s later", str(await flood.still_open())),
                (f"gateway open fds {hold:.0f} s later", str(open_fds(pid))),
            ]
        for label, sample in (
            ("before the flood", before),
            ("while the flood was opened", during_open),
            ("with the flood held", held),
        ):
            ok = sorted(t for t in sample if t != float("inf"))
            failed = len(sample) - len(ok)
            if ok:
                text = (
                    f"median {statistics.median(ok) * 1000:.1f} ms, "
                    f"max {ok[-1] * 1000:.1f} ms, {failed} failed of {len(sample)}"
                )
            else:
                text = f"all {len(sample)} failed"
            rows.append((f"signed-in request on a new connection, {label}", text))
        flood.close()
        print("| measure | value |")
        print("|---|---|")
        for name, value in rows:
            print(f"| {name} | {value} |")
    finally:
        gateway.stop()
        upstream.stop()
        idp_thread.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--mode", choices=("keepalive", "silent"), default="keepalive")
    parser.add_argument("--parallel", type=int, default=200)
    parser.add_argument(
        "--hold", type=float, default=0.0, help="then wait this long and count again (seconds)"
    )
    parser.add_argument("--gateway-nofile", type=int, help="the gateway's soft fd limit at start")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="gateway environment"
    )
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.set)
    asyncio.run(
        run(args.connections, args.mode, args.parallel, args.hold, args.gateway_nofile, extra)
    )


if __name__ == "__main__":
    main()
