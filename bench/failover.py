"""Repeated Redis Sentinel failovers under sign-in churn (issue 14), with figures: three data nodes
(a master and two replicas, configured as docs/operations.md asks), three sentinels
(down-after 1 s), two gateway processes, signed-in traffic, sign-in and sign-out churn and
direct writes to the store; in each run a fresh deployment, then the faults asked for.

    .venv/bin/python bench/failover.py [--runs 10] [--faults kill] [--sync-delay 0]

`--faults failover,kill` is the issue's sequence: a SENTINEL FAILOVER, then, once the old master
has rejoined as a replica, kill -9 of the new master. For every fault it prints when the sentinels
promoted a replica, until when after that writes and sign-ins were still refused, and how many
confirmed writes and completed sign-ins were lost (every completed sign-in of the run is checked
on both gateways at its end). Exits 0 only when nothing confirmed was lost and writes and sign-ins
were back within --target seconds of every promotion. tests/resilience/test_failover_durability.py
runs the quick form of the same scenarios in the test suite; tests/support/failover.py drives both.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from soak import StderrDrain
from support.browser import Browser
from support.failover import OPERATOR_NODE_ARGS, Gateways, Run, sessions_gone, through
from support.gateway import PUBLIC_URL, GatewayProcess, idp_ssl, settings_for
from support.idp import ThreadedDevIdp
from support.redis_sentinel import SentinelSet
from support.threaded import ThreadedServer
from support.upstream import make_upstream_app

from devidp.config import DevIdpConfig, User
from gateway.config.redis import RedisSettings
from gateway.store.redis import RedisStorage

SETTLE_TIMEOUT_SECONDS: Final = 60.0
# Enough users that none reaches the gateway's cap of 100 sessions in a run (the cap would end
# the oldest, which would count as lost).
USERS: Final = tuple(
    User(
        username=f"user{n}",
        name=f"User {n}",
        oid=str(uuid.UUID(int=n + 1)),
        preferred_username=f"user{n}@contoso.example",
        email=f"user{n}@contoso.example",
    )
    for n in range(30)
)
FAULTS: Final = ("failover", "kill")


@dataclass
class Row:
    run: int
    result: Run
    load: float


def replicas_in_sync(sentinels: SentinelSet, wanted: int) -> bool:
    """Every replica streams from the current master (the old one has rejoined, in sync)."""
    with sentinels.node_client(sentinels.master_address()) as node:
        confirmed: Any = node.execute_command("WAIT", wanted, 100)
    return int(confirmed) == wanted


async def settle(sentinels: SentinelSet) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    while not await asyncio.to_thread(replicas_in_sync, sentinels, 2):
        if time.monotonic() > deadline:
            raise TimeoutError("the replicas did not all follow the new master")
        await asyncio.sleep(0.5)


async def one_run(
    number: int, faults: list[str], args: argparse.Namespace, idp: Any, upstream_url: str
) -> tuple[list[Row], int]:
    """A fresh deployment and gateways, the faults in turn; the rows and the sessions lost
    by the end (checked again on both gateways after the last fault)."""
    node_args = (*OPERATOR_NODE_ARGS, "--repl-diskless-sync-delay", str(args.sync_delay))
    sentinels = SentinelSet(replicas=2, node_args=node_args).start()
    processes: list[GatewayProcess] = []
    drains: list[StderrDrain] = []
    storage: RedisStorage | None = None
    rows: list[Row] = []
    try:
        settings = settings_for(
            idp,
            upstream_url,
            session_store="redis",
            cookie_secret=secrets.token_urlsafe(32),
            redis={"sentinels": sentinels.addresses},
            # Every simulated browser comes from 127.0.0.1.
            signin={"max_starts_per_minute": 100_000},
            log={"access_log": False},
        )
        for _ in range(2):
            processes.append(GatewayProcess(settings))
            drains.append(StderrDrain(processes[-1].process))
        for process in processes:
            await process.ready()
        storage = RedisStorage(None, RedisSettings(sentinels=sentinels.addresses))
        context = idp_ssl(idp.ca_path)

        def browser(url: str) -> Browser:
            return Browser(url, PUBLIC_URL, context)

        gateways = Gateways([p.url for p in processes], browser)
        every: dict[str, int] = {}
        for index, fault in enumerate(faults):
            if index:
                await settle(sentinels)
            result = await through(
                sentinels,
                fault,
                storage,
                gateways=gateways,
                writers=args.writers,
                churners=args.churners,
                readers=args.readers,
                after_seconds=args.after_seconds,
                users=[user.username for user in USERS],
            )
            every.update(result.sessions)
            rows.append(Row(number, result, os.getloadavg()[0]))
            if missed(result, args.target):
                # What the gateways logged, to tell a slow store from a slow gateway.
                for index, drain in enumerate(drains):
                    for message, count in drain.notable.most_common(6):
                        print(f"  gateway {index + 1}: {message} x{count}", flush=True)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(
            timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
        ) as client:
            final = Run("all")
            final.sessions = every
            gone = await sessions_gone(gateways, client, final)
        return rows, len(gone)
    finally:
        if storage is not None:
            await storage.close()
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.process.wait(15)
            except Exception:  # a gateway that will not stop is killed: the next run needs ports
                process.process.kill()
        for drain in drains:
            drain.join(5)
        sentinels.cleanup()


def missed(result: Run, target: float) -> bool:
    """Whether a fault lost something confirmed or kept writes or sign-ins refused too long."""
    refused = [result.writes.refused_after(result.promotions)]
    refused.append(result.sign_ins.refused_after(result.promotions))
    late = any(value is None or value >= target for value in refused)
    return late or bool(result.lost_writes or result.lost_sessions)


def secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def report(rows: list[Row], lost_at_end: list[int], target: float) -> int:
    print(
        "\n| run | fault | promoted after | promotions | writes refused after a promotion "
        "| sign-ins refused after a promotion | writes confirmed / lost "
        "| sign-ins confirmed / lost | load (1 min) |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    worst = 0.0
    lost = 0
    for row in rows:
        r = row.result
        promoted = None if r.promoted is None else r.promoted - r.fault_at
        writes = r.writes.refused_after(r.promotions)
        sign_ins = r.sign_ins.refused_after(r.promotions)
        for value in (writes, sign_ins):
            worst = max(worst, float("inf") if value is None else value)
        lost += len(r.lost_writes) + len(r.lost_sessions)
        print(
            f"| {row.run} | {r.fault} | {secs(promoted)} | {len(r.promotions)} "
            f"| {secs(writes)} | {secs(sign_ins)} "
            f"| {len(r.confirmed)} / {len(r.lost_writes)} "
            f"| {len(r.sessions)} / {len(r.lost_sessions)} | {row.load:.2f} |"
        )
    print(
        f"\n{len(rows)} faults in {len(lost_at_end)} run(s): writes and sign-ins back at most "
        f"{secs(worst)} after a promotion (target {target:.1f} s); "
        f"{lost} confirmed writes or sign-ins lost during the runs, "
        f"{sum(lost_at_end)} completed sign-ins gone at the ends of the runs"
    )
    passed = lost == 0 and not sum(lost_at_end) and worst < target
    print(f"\n**{'PASS' if passed else 'FAIL'}**")
    return 0 if passed else 1


async def run(args: argparse.Namespace) -> int:
    faults = [fault.strip() for fault in args.faults.split(",")]
    unknown = [fault for fault in faults if fault not in FAULTS]
    if unknown:
        raise SystemExit(f"--faults: unknown {', '.join(unknown)} (known: {', '.join(FAULTS)})")
    idp_runner = ThreadedDevIdp(DevIdpConfig(port=0, users=USERS))
    idp = idp_runner.start()
    upstream = ThreadedServer(make_upstream_app).start()
    rows: list[Row] = []
    lost_at_end: list[int] = []
    try:
        for number in range(1, args.runs + 1):
            got, gone = await one_run(number, faults, args, idp, upstream.url)
            rows += got
            lost_at_end.append(gone)
            for row in got:
                print(f"run {number}: {row.result.summary()} (load {row.load:.2f})", flush=True)
    finally:
        upstream.stop()
        idp_runner.stop()
    return report(rows, lost_at_end, args.target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="fresh deployments, one after another")
    parser.add_argument(
        "--faults",
        default="kill",
        help="comma-separated, in order: failover (SENTINEL FAILOVER), kill (kill -9 of the "
        "master)",
    )
    parser.add_argument(
        "--sync-delay",
        type=int,
        default=0,
        help="repl-diskless-sync-delay of the data nodes (0 as docs/operations.md asks; Redis's "
        "default is 5)",
    )
    parser.add_argument("--writers", type=int, default=4, help="tasks writing to the store")
    parser.add_argument("--churners", type=int, default=3, help="browsers signing in and out")
    parser.add_argument("--readers", type=int, default=2, help="tasks using signed-in sessions")
    parser.add_argument(
        "--after-seconds",
        type=float,
        default=3.0,
        help="load kept on after every sentinel names the new master",
    )
    parser.add_argument(
        "--target", type=float, default=1.0, help="seconds from a promotion to writes succeeding"
    )
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
