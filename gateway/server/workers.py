"""Several worker processes on one port (GATEWAY_WORKERS), and the supervisor that keeps them.

One Python process uses one core; a sidecar on a multi-core pod should use the cores it was given.
The supervisor imports the gateway and validates its configuration once, then forks each worker,
which binds the listen address with SO_REUSEPORT (the kernel spreads connections across workers
with no hand-off). Forking rather than starting fresh interpreters shares the imported code and
data between all of them, copy-on-write: gc.freeze() first, so that the collector never writes to
those objects and so never copies their pages. Workers share nothing else: sessions, sign-ins,
token caches and locks are all in Redis, which is why more than one worker requires the redis
store.

The supervisor serves no traffic. It restarts a worker that dies (a crash loop at start-up, e.g. a
port in use, stops everything with status 1 instead), forwards SIGTERM so every worker drains and
finishes its requests, and serves the metrics listener: workers write their samples to files in a
private directory (prometheus_client's multiprocess mode), which the supervisor adds up.

A worker is forked from the supervisor's running event loop (restarts need that anyway), so it
starts by letting go of everything of the supervisor's it inherited (see `_Fork`): no thread may
run in the supervisor at a fork, the supervisor's signal wakeup and its file descriptors (its
loop's, the metrics listener's, a scrape in progress) are dropped, and the worker runs a loop of
its own and ends with os._exit, never returning into the supervisor's code.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Final, Literal, NoReturn

from aiohttp import web

from gateway.config.settings import Settings
from gateway.telemetry import logs

log = logging.getLogger(__name__)

METRICS_DIRECTORY: Final = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client at import
QUICK_EXIT_SECONDS: Final = 5.0  # a worker that dies sooner than this did not start
MAX_QUICK_EXITS: Final = 3
RESTART_DELAY_SECONDS: Final = 0.5
POLL_SECONDS: Final = 0.2
STOP_POLL_SECONDS: Final = 0.05
# Blocked while forking, so that no signal reaches a new worker before it has dropped the
# supervisor's handlers and wakeup descriptor (one would wake the supervisor's loop instead).
FORK_SIGNALS: Final = frozenset({signal.SIGINT, signal.SIGTERM})


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
    """A forked worker process, by its id."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.started = time.monotonic()
        self.status: int | None = None

    def poll(self) -> int | None:
        """The exit status (negative: the signal that ended it), or None while it runs."""
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def wait(self) -> int:
        """Until it exits (for a worker that was sent SIGKILL: at once)."""
        if self.status is None:
            self.status = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.status

    def signal(self, signum: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)


async def _until_exited(workers: list[_Worker], seconds: float) -> None:
    """Until every worker has exited or `seconds` passed. Polled: a child's exit wakes no loop."""
    for _ in range(max(1, math.ceil(seconds / STOP_POLL_SECONDS))):
        if all(worker.poll() is not None for worker in workers):
            return
        await asyncio.sleep(STOP_POLL_SECONDS)


class _Fork:
    """Starts a worker process running `work`, in the state a fresh process would have."""

    def __init__(self, work: Callable[[], int], log_format: str, log_level: str) -> None:
        self._work = work
        self._log_format = log_format
        self._log_level = log_level

    def __call__(self) -> _Worker:
        # What the supervisor printed must not be printed again by the worker's copy of the buffer.
        sys.stdout.flush()
        sys.stderr.flush()
        # A thread's locks are copied in whatever state they are in, and the thread is not: the
        # log writer stops while forking, so that the worker inherits no lock held by nobody.
        logs.shutdown()
        gc.collect()  # no garbage whose finalizer would close a descriptor number in the worker
        signal.pthread_sigmask(signal.SIG_BLOCK, FORK_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                self._become_worker()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORK_SIGNALS)
            logs.configure(self._log_format, self._log_level)
        return _Worker(pid)

    def _become_worker(self) -> NoReturn:
        status = 1
        try:
            # The supervisor's loop lives on in this process's stack but is never run again: its
            # signal wakeup would wake it, not this process's own loop.
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            asyncio.events._set_running_loop(None)
            # Nothing the supervisor opened is the worker's: its loop's epoll and wakeup sockets,
            # the metrics listener (which must close with the supervisor), a scrape being answered.
            os.closerange(3, _descriptor_limit())
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORK_SIGNALS)
            status = self._work()
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            # Never back into the supervisor's frames, its finally blocks or its atexit hooks.
            os._exit(status)


def _descriptor_limit() -> int:
    try:
        import resource

        return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    except (ImportError, OSError, ValueError):
        return 1024


class Supervisor:
    def __init__(
        self,
        count: int,
        fork: Callable[[], _Worker],
        metrics_directory: str | None,
        metrics_listen: str | None,
        grace_seconds: float,
    ) -> None:
        self._count = count
        self._fork = fork
        self._directory = metrics_directory
        self._metrics_listen = metrics_listen
        self._grace = grace_seconds
        self._workers: list[_Worker] = []
        self._quick_exits = 0

    def _spawn(self) -> _Worker:
        worker = self._fork()
        log.info("worker %d started", worker.pid)
        return worker

    async def run(self) -> int:
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

    async def _watch(self, stop: asyncio.Event) -> int:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_SECONDS)
            for index, worker in enumerate(self._workers):
                code = worker.poll()
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
            worker.signal(signal.SIGTERM)
        # Each worker drains and finishes its own requests; allow that, then a margin.
        await _until_exited(self._workers, self._grace)
        for worker in self._workers:
            if worker.poll() is None:
                log.error("worker %d did not stop in time; killing it", worker.pid)
                worker.signal(signal.SIGKILL)
                worker.wait()
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
    count: int,
    settings: Settings,
    work: Callable[[], int],
    preload: Callable[[], None],
) -> int:
    """Run `count` workers, each running `work()` (its exit status), until SIGTERM or SIGINT.

    `preload()` imports what the workers need, after the metrics directory is known and before the
    first fork, so that every worker shares it."""
    directory = None
    if settings.metrics_listen:
        # prometheus_client picks its multiprocess mode when it is first imported: before that.
        if "prometheus_client" in sys.modules:
            raise RuntimeError("prometheus_client was imported before the metrics directory")
        directory = tempfile.mkdtemp(prefix="msal-gateway-metrics-")
        os.environ[METRICS_DIRECTORY] = directory
    try:
        preload()
        # Everything imported and built so far lives as long as every worker: out of the
        # collector's sight, so that no collection in a worker writes to (and copies) its pages.
        # Frozen without a full collection first, as serve.py does: the start-up's garbage
        # (class-building leftovers, no descriptors) is never visited again, never copied.
        gc.freeze()
        gc.enable()  # off during start-up (gateway/__main__.py)
        proxy = settings.proxy
        # Workers drain and finish their requests first; the margin covers their start-up.
        grace = proxy.drain_seconds + proxy.shutdown_grace_seconds + 5
        fork = _Fork(work, settings.log.format, settings.log.level)
        supervisor = Supervisor(count, fork, directory, settings.metrics_listen, grace)
        return asyncio.run(supervisor.run())
    finally:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
