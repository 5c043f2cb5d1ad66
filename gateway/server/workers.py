"""Several worker processes on one port (GATEWAY_WORKERS), and the supervisor that keeps them.

One Python process uses one core; a sidecar on a multi-core pod should use the cores it was given.
Each worker is a fresh `msal-gateway serve` process (same arguments, same environment) that binds
the listen address with SO_REUSEPORT, so the kernel spreads connections across workers with no
hand-off. Workers share nothing in memory: sessions, sign-ins, token caches and locks are all in
Redis, which is why more than one worker requires the redis store.

The supervisor serves no traffic. It restarts a worker that dies (a crash loop at start-up, e.g. a
port in use, stops everything with status 1 instead), forwards SIGTERM so every worker drains and
finishes its requests, and serves the metrics listener: workers write their samples to files in a
private directory (prometheus_client's multiprocess mode), which the supervisor adds up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal

from aiohttp import web

log = logging.getLogger(__name__)

WORKER_MARK: Final = "MSAL_GATEWAY_WORKER"  # set in a worker's environment by its supervisor
METRICS_DIRECTORY: Final = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client at import
QUICK_EXIT_SECONDS: Final = 5.0  # a worker that dies sooner than this did not start
MAX_QUICK_EXITS: Final = 3
RESTART_DELAY_SECONDS: Final = 0.5


def is_worker() -> bool:
    return os.environ.get(WORKER_MARK) == "1"


def available_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota (a Kubernetes CPU
    limit), rounded up."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = max(1, count or 1)
    quota = _cgroup_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def _cgroup_quota() -> float | None:
    v2 = Path("/sys/fs/cgroup/cpu.max")
    with contextlib.suppress(OSError, ValueError):
        limit, period = v2.read_text().split()[:2]
        return None if limit == "max" else int(limit) / int(period)
    v1 = Path("/sys/fs/cgroup/cpu")
    with contextlib.suppress(OSError, ValueError):
        microseconds = int((v1 / "cpu.cfs_quota_us").read_text())
        per = int((v1 / "cpu.cfs_period_us").read_text())
        return None if microseconds <= 0 else microseconds / per
    return None


def worker_count(setting: int | Literal["auto"], session_store: str) -> int:
    if setting != "auto":
        return setting
    # Memory-store sessions live in one process; auto never splits them.
    return available_cpus() if session_store == "redis" else 1


class _Worker:
    def __init__(self, argv: Sequence[str], env: dict[str, str]) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen([sys.executable, "-m", "gateway", *argv], env=env)  # noqa: S603

    @property
    def pid(self) -> int:
        return self.process.pid


class Supervisor:
    def __init__(
        self, count: int, argv: Sequence[str], metrics_listen: str | None, grace_seconds: float
    ) -> None:
        self._count = count
        self._argv = list(argv)
        self._metrics_listen = metrics_listen
        self._grace = grace_seconds
        self._workers: list[_Worker] = []
        self._quick_exits = 0
        self._directory: str | None = None

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env[WORKER_MARK] = "1"
        if self._directory is not None:
            env[METRICS_DIRECTORY] = self._directory
        return env

    def _spawn(self) -> _Worker:
        worker = _Worker(self._argv, self._environment())
        log.info("worker %d started", worker.process.pid)
        return worker

    async def run(self) -> int:
        if self._metrics_listen:
            self._directory = tempfile.mkdtemp(prefix="msal-gateway-metrics-")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        metrics = await self._serve_metrics()
        try:
            self._workers = [self._spawn() for _ in range(self._count)]
            log.info("msal-gateway supervising %d workers", self._count)
            status = await self._watch(stop)
            await self._stop_workers()
            return status
        finally:
            if metrics is not None:
                await metrics.cleanup()
            if self._directory is not None:
                shutil.rmtree(self._directory, ignore_errors=True)

    async def _watch(self, stop: asyncio.Event) -> int:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
            for index, worker in enumerate(self._workers):
                code = worker.process.poll()
                if code is None or stop.is_set():
                    continue
                self._forget(worker)
                quick = time.monotonic() - worker.started < QUICK_EXIT_SECONDS
                self._quick_exits = self._quick_exits + 1 if quick else 0
                if self._quick_exits >= MAX_QUICK_EXITS:
                    log.error("workers keep exiting at start-up (status %d); stopping", code)
                    return 1
                log.error("worker %d exited with status %d; starting another", worker.pid, code)
                await asyncio.sleep(RESTART_DELAY_SECONDS)
                self._workers[index] = self._spawn()
        return 0

    async def _stop_workers(self) -> None:
        for worker in self._workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        # Each worker drains and finishes its own requests; allow that, then a margin.
        deadline = time.monotonic() + self._grace
        for worker in self._workers:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                await asyncio.to_thread(worker.process.wait, remaining)
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop in time; killing it", worker.pid)
                worker.process.kill()
                await asyncio.to_thread(worker.process.wait)
            self._forget(worker)

    def _forget(self, worker: _Worker) -> None:
        if self._directory is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.pid, self._directory)  # type: ignore[no-untyped-call]

    async def _serve_metrics(self) -> web.AppRunner | None:
        if not self._metrics_listen or self._directory is None:
            return None
        from prometheus_client import CollectorRegistry, multiprocess
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

        directory = self._directory

        async def metrics(request: web.Request) -> web.Response:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
            return web.Response(
                body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        host, _, port = self._metrics_listen.rpartition(":")
        await web.TCPSite(runner, host.strip("[]"), int(port)).start()
        return runner


def supervise(
    count: int, argv: Sequence[str], metrics_listen: str | None, grace_seconds: float
) -> int:
    return asyncio.run(Supervisor(count, argv, metrics_listen, grace_seconds).run())
