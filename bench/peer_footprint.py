"""The sidecar tax beside its peers (issue 17, part 2): the resident memory (RSS) and proportional
share (PSS) of each system's processes, idle and under load, in one run.

    .venv/bin/python bench/peer_footprint.py [--duration 8] [--connections 32]

Starts the systems of bench/compare.py (see `stack`) with their production defaults, access logs
on for every system: msal-gateway (one process, Redis, sealed sessions, identity headers, a bearer
token, metrics), Apache + mod_auth_openidc (its cache on the same Redis), nginx proxy_pass (one
worker) and the bare aiohttp proxy (one process). It signs in to the gateway and to Apache for
real. Then, for each system in turn: its process tree's RSS and PSS after two idle seconds; then
wrk at `--connections` for `--duration` seconds on an authenticated 100 B GET, with the tree read
every half second, keeping the largest sum. A process's RSS counts the pages it shares (libraries,
and a forked server's pages shared with its parent); PSS divides shared pages among the processes
sharing them, so the sum of PSS is what the system as a whole holds. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import wrk
from compare import APACHE, BARE, GATEWAY, NGINX, sign_in_and_verify
from footprint import pss_kib
from processes import ManagedProcess, MissingTool, tree_pids
from stack import Stack, check_tools
from support.procfs import rss_kib

SAMPLE_SECONDS: Final = 0.5
IDLE_SECONDS: Final = 2.0


@dataclass(frozen=True)
class Memory:
    processes: int
    rss_kib: int
    pss_kib: int


def tree_memory(pid: int) -> Memory:
    rss = pss = count = 0
    for member in tree_pids(pid):
        try:
            rss += rss_kib(member)
            pss += pss_kib(member)
        except (OSError, RuntimeError):  # exited between listing and reading
            continue
        count += 1
    return Memory(count, rss, pss)


def under_load(url: str, cookie: str | None, pid: int, args: argparse.Namespace) -> Memory:
    """The largest tree sums seen while wrk runs against `url`."""
    headers = {"Cookie": cookie} if cookie else {}
    done = threading.Event()
    failure: list[BaseException] = []

    def load() -> None:
        try:
            wrk.run(url, connections=args.connections, duration=args.duration, headers=headers)
        except BaseException as exc:  # reported below, in the main thread
            failure.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    most = Memory(0, 0, 0)
    while not done.wait(SAMPLE_SECONDS):
        now = tree_memory(pid)
        most = Memory(
            max(most.processes, now.processes),
            max(most.rss_kib, now.rss_kib),
            max(most.pss_kib, now.pss_kib),
        )
    thread.join()
    if failure:
        raise RuntimeError(f"wrk against {url} failed: {failure[0]}")
    return most


def _mib(kib: int) -> str:
    return f"{kib / 1024:,.1f} MiB"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds of load (8)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    args = parser.parse_args(argv)
    try:
        check_tools()
    except MissingTool as exc:
        print(f"peer_footprint.py: {exc}", file=sys.stderr)
        return 2
    stack = Stack(gateway_workers=1, access_logs=True)
    rows = []
    try:
        print(f"starting the systems in {stack.root} ...", flush=True)
        stack.start()
        assert stack.apache is not None and stack.nginx_proxy is not None
        assert stack.gateway is not None and stack.bare is not None
        gateway_cookie, apache_cookie = asyncio.run(sign_in_and_verify(stack))
        systems: list[tuple[str, str, ManagedProcess, str | None]] = [
            (GATEWAY, stack.gateway_url, stack.gateway, gateway_cookie),
            (APACHE, stack.apache.url, stack.apache.process, apache_cookie),
            (NGINX, stack.nginx_proxy.url, stack.nginx_proxy.process, None),
            (BARE, stack.bare_url, stack.bare, None),
        ]
        for name, url, process, cookie in systems:
            time.sleep(IDLE_SECONDS)
            idle = tree_memory(process.pid)
            loaded = under_load(url + "/b100", cookie, process.pid, args)
            rows.append((name, idle, loaded))
            print(f"  {name}: idle PSS {_mib(idle.pss_kib)}, under load {_mib(loaded.pss_kib)}")
    except RuntimeError as exc:
        print(f"peer_footprint.py: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
    print(
        f"\nMemory of each system's processes, idle and under load (wrk, {args.connections} "
        f"connections, {args.duration} s, authenticated 100 B GET), access logs on:\n"
    )
    print("| system | processes | RSS idle | PSS idle | RSS under load | PSS under load |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, idle, loaded in rows:
        print(
            f"| {name} | {idle.processes} ({loaded.processes} under load) | "
            f"{_mib(idle.rss_kib)} | {_mib(idle.pss_kib)} | {_mib(loaded.rss_kib)} | "
            f"{_mib(loaded.pss_kib)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
