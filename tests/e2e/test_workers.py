"""GATEWAY_WORKERS: several `serve` processes on one port under a supervisor (real processes)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.browser import API, Browser
from support.gateway import PUBLIC_URL, GatewayProcess, env_for, idp_ssl, settings_for, shared_redis
from support.metrics import build_info, expected_build_info, sample, scrape
from support.ports import free_port
from support.threaded import ThreadedServer

from gateway.server.workers import worker_count
from gateway.telemetry.metrics import FLUSH_SECONDS


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def gone(pids: list[int]) -> bool:
    return all(not Path(f"/proc/{pid}").exists() for pid in pids)


async def until(check: Any, what: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds}s: {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def worker_settings(idp: Any, upstream: ThreadedServer, redis_url: str) -> dict[str, Any]:
    return {
        "idp": idp,
        "upstream_url": upstream.url,
        **shared_redis(redis_url),
        "workers": 2,
        "metrics_listen": f"127.0.0.1:{free_port()}",
    }


async def every_worker_ready(url: str, connections: int = 20) -> None:
    """Each worker loads the identity provider's metadata itself and joins the port only then
    (server/serve.py), so once one answers, every new connection (the kernel spreads them over the
    workers) finds one that can start a sign-in."""
    for _ in range(connections):
        async with (
            aiohttp.ClientSession() as fresh,
            fresh.get(url + "/.auth/readyz") as response,
        ):
            assert response.status == 200, await response.text()


async def test_two_workers_share_the_port_sessions_and_metrics(
    worker_settings: dict[str, Any], idp: Any
) -> None:
    gateway = await GatewayProcess(settings_for(**worker_settings)).ready()
    browser = Browser(gateway.url, PUBLIC_URL, idp_ssl(idp.ca_path))
    try:
        workers = children(gateway.process.pid)
        assert len(workers) == 2
        await every_worker_ready(gateway.url)
        assert (await browser.sign_in("/")).status == 302
        cookie = {"Cookie": f"__Host-msal-gateway={browser.cookie('__Host-msal-gateway')}"}
        # A new connection each time: the kernel spreads them over both workers, and a session
        # made by one is known to the other.
        for _ in range(40):
            async with (
                aiohttp.ClientSession() as fresh,
                fresh.get(gateway.url + "/x", headers={**API, **cookie}) as response,
            ):
                assert response.status == 200
        port = int(worker_settings["metrics_listen"].rpartition(":")[2])
        # One listener adds up every worker's samples, which each worker writes at most
        # FLUSH_SECONDS after its requests.
        counted = 'msal_gateway_requests_total{route="proxy",status="200"}'
        deadline = asyncio.get_running_loop().time() + 5 * FLUSH_SECONDS
        while (found := _counted(await scrape(port), counted)) != 40:
            assert asyncio.get_running_loop().time() < deadline, f"{found} requests counted"
            await asyncio.sleep(0.05)
        # Build information is one series for the whole gateway, not one per worker.
        assert build_info(await scrape(port)) == (expected_build_info(), 1.0)
    finally:
        await browser.close()
        log = gateway.stop()
    assert gateway.returncode == 0, log
    assert "Traceback" not in log
    assert gone(workers)


def _counted(text: str, name: str) -> float:
    try:
        return sample(text, name)
    except AssertionError:  # no worker has written the sample yet
        return 0


async def test_a_dead_worker_is_replaced(worker_settings: dict[str, Any]) -> None:
    gateway = await GatewayProcess(settings_for(**worker_settings)).ready()
    try:
        first = children(gateway.process.pid)
        os.kill(first[0], signal.SIGKILL)
        await until(
            lambda: len(set(children(gateway.process.pid)) - {first[0]}) == 2,
            "a new worker takes the dead one's place",
        )
        for _ in range(20):
            async with (
                aiohttp.ClientSession() as fresh,
                fresh.get(gateway.url + "/.auth/readyz") as response,
            ):
                assert response.status == 200
    finally:
        log = gateway.stop()
    assert gateway.returncode == 0, log
    assert f"worker {first[0]} exited" in log


def _sockets(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed since the listing
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


def _memory(pid: int) -> dict[str, int]:
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    return {line.split()[0].rstrip(":"): int(line.split()[1]) for line in rollup[1:]}


async def test_workers_are_forked_sharing_memory_and_none_of_the_supervisors_sockets(
    worker_settings: dict[str, Any],
) -> None:
    """Workers are forked after the imports (server/workers.py): most of each worker's memory is
    the supervisor's, shared; and the supervisor's metrics listener and loop stay its own."""
    gateway = await GatewayProcess(settings_for(**worker_settings)).ready()
    try:
        supervisor = gateway.process.pid
        workers = children(supervisor)
        assert len(workers) == 2
        held = _sockets(supervisor)
        assert held  # its metrics listener and its loop's wakeup sockets, at least
        for worker in workers:
            assert not _sockets(worker) & held
            memory = _memory(worker)
            shared = memory["Shared_Clean"] + memory["Shared_Dirty"]
            # Fresh interpreters share only their libraries' code, a sixth of this.
            assert shared > memory["Rss"] / 2, memory
    finally:
        log = gateway.stop()
    assert gateway.returncode == 0, log


def test_a_taken_port_stops_the_supervisor_before_any_worker_starts(
    worker_settings: dict[str, Any],
) -> None:
    """The supervisor checks the port first (server/preflight.py): one line naming the setting
    and status 2, rather than workers that keep exiting until it gives up."""
    taken = socket.socket()  # no SO_REUSEPORT: the workers cannot bind next to it
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        env = env_for(settings_for(**worker_settings))
        env["GATEWAY_LISTEN"] = f"127.0.0.1:{taken.getsockname()[1]}"
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "serve"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
    finally:
        taken.close()
    assert done.returncode == 2, done.stderr
    assert done.stderr.decode().splitlines() == [
        f"msal-gateway: GATEWAY_LISTEN: {env['GATEWAY_LISTEN']} is already in use by another "
        "process: stop it, or choose another port"
    ]


def test_several_workers_need_the_redis_store(idp: Any, upstream: ThreadedServer) -> None:
    env = env_for(settings_for(idp, upstream.url))
    env["GATEWAY_WORKERS"] = "2"
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config"],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert b"GATEWAY_WORKERS above 1 needs GATEWAY_SESSION_STORE=redis" in done.stderr


@pytest.mark.parametrize(
    ("setting", "store", "expected"),
    [(1, "redis", 1), (3, "redis", 3), ("auto", "memory", 1), ("auto", "redis", None)],
)
def test_worker_count(setting: Any, store: str, expected: int | None) -> None:
    cpus = len(os.sched_getaffinity(0))
    assert worker_count(setting, store) == (expected if expected is not None else cpus) or (
        expected is None and 1 <= worker_count(setting, store) <= cpus  # a cgroup quota caps it
    )
