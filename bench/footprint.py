"""The sidecar tax (issue 17, part 2): what an idle `msal-gateway serve` holds in memory and how
long it takes from exec to ready, with the development identity provider on loopback.

    .venv/bin/python bench/footprint.py [--runs 10] [--store memory|redis] [--workers N]
                                        [--env NAME=VALUE …]

Each run execs `python -m gateway serve` (the in-memory store unless --store redis; --workers N
sets GATEWAY_WORKERS=N, which needs Redis: one redis-server is started for the run) and polls
/.auth/readyz every 10 ms until it answers 200: the time from just before the exec to that answer
is exec-to-ready. The CPU time (user + system) of the gateway's processes up to that moment is
read from /proc as well: unlike the wall time it hardly moves when other work loads the machine.
After one idle second, every gateway process's resident memory (VmRSS) and proportional share
(Pss, /proc/PID/smaps_rollup: shared pages divided among the processes sharing them) are read.
Prints each run and the medians.

The gateway's modules are byte-compiled first, as the image's install (pip, with `--compile`)
and any wheel install leave them: a checkout run with PYTHONDONTWRITEBYTECODE would otherwise
compile every module from source at each start (about 80 ms here), which no installed gateway
does.
"""

from __future__ import annotations

import argparse
import compileall
import http.client
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processes import children_of
from support.gateway import env_for, settings_for
from support.idp import ThreadedDevIdp
from support.ports import free_port
from support.procfs import cpu_seconds, rss_kib
from support.redis_server import RedisServer
from support.threaded import ThreadedServer
from support.upstream import make_upstream_app

from devidp.config import DevIdpConfig

GATEWAY_PACKAGE = Path(__file__).resolve().parent.parent / "gateway"
POLL_SECONDS = 0.01
IDLE_SECONDS = 1.0


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise RuntimeError(f"no Pss for process {pid}")


def ready(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/.auth/readyz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


@dataclass(frozen=True)
class Process:
    role: str
    rss_kib: int
    pss_kib: int


@dataclass(frozen=True)
class Run:
    ready_seconds: float
    cpu_seconds: float  # of every gateway process, up to ready
    processes: list[Process]


def one_run(env: dict[str, str], port: int) -> Run:
    started = time.monotonic()
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not ready(port):
            if gateway.poll() is not None:
                raise RuntimeError(f"the gateway exited with status {gateway.returncode}")
            if time.monotonic() - started > 30:
                raise RuntimeError("the gateway was not ready within 30 s")
            time.sleep(POLL_SECONDS)
        ready_seconds = time.monotonic() - started
        pids = [gateway.pid, *children_of(gateway.pid)]
        cpu = sum(cpu_seconds(pid) for pid in pids)
        time.sleep(IDLE_SECONDS)
        workers = children_of(gateway.pid)
        roles = [("supervisor" if workers else "gateway", gateway.pid)]
        roles += [(f"worker {index + 1}", pid) for index, pid in enumerate(workers)]
        processes = [Process(role, rss_kib(pid), pss_kib(pid)) for role, pid in roles]
        return Run(ready_seconds, cpu, processes)
    finally:
        gateway.terminate()
        try:
            gateway.wait(15)
        except subprocess.TimeoutExpired:
            gateway.kill()
            gateway.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--store", choices=("memory", "redis"), default="memory")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="one more setting for the gateway (repeatable), e.g. GATEWAY_EVENT_LOOP=asyncio",
    )
    args = parser.parse_args()
    compileall.compile_dir(GATEWAY_PACKAGE, quiet=1)
    store = "redis" if args.workers > 1 else args.store
    idp_thread = ThreadedDevIdp(DevIdpConfig(port=0))
    idp = idp_thread.start()
    upstream = ThreadedServer(make_upstream_app).start()
    redis = RedisServer().start() if store == "redis" else None
    try:
        overrides: dict[str, Any] = {}
        if redis is not None:
            overrides = {
                "session_store": "redis",
                "redis_url": redis.url,
                "cookie_secret": secrets.token_urlsafe(32),
            }
        env = env_for(settings_for(idp, upstream.url, **overrides))
        port = free_port()
        env["GATEWAY_LISTEN"] = f"127.0.0.1:{port}"
        env["GATEWAY_PROXY__DRAIN_SECONDS"] = "0"
        if args.workers > 1:
            env["GATEWAY_WORKERS"] = str(args.workers)
        env.update(setting.split("=", 1) for setting in args.env)
        runs = []
        for index in range(args.runs):
            run = one_run(env, port)
            runs.append(run)
            memory = ", ".join(
                f"{p.role} RSS {p.rss_kib / 1024:.1f} MiB PSS {p.pss_kib / 1024:.1f} MiB"
                for p in run.processes
            )
            print(
                f"run {index + 1}: ready in {run.ready_seconds:.3f} s, "
                f"CPU {run.cpu_seconds:.2f} s; {memory}",
                flush=True,
            )
    finally:
        if redis is not None:
            redis.cleanup()
        upstream.stop()
        idp_thread.stop()
    print(
        f"\nmsal-gateway serve, {store} store, {args.workers} process(es) serving, "
        f"medians of {len(runs)} runs:"
    )
    print(f"  exec to ready: {statistics.median(r.ready_seconds for r in runs):.3f} s")
    cpu = statistics.median(r.cpu_seconds for r in runs)
    print(f"  CPU time to ready (user + system): {cpu:.2f} s")
    for position, process in enumerate(runs[0].processes):
        rss = statistics.median(r.processes[position].rss_kib for r in runs) / 1024
        pss = statistics.median(r.processes[position].pss_kib for r in runs) / 1024
        print(f"  {process.role}, idle: RSS {rss:.1f} MiB, PSS {pss:.1f} MiB")
    total = statistics.median(sum(p.pss_kib for p in r.processes) for r in runs) / 1024
    print(f"  all processes, idle: PSS {total:.1f} MiB")


if __name__ == "__main__":
    main()
