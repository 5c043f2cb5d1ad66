"""The cold path under load (issue 17, part 3): a sign-in storm, as when an office signs in at 9:00.

N scripted browsers, each with a cookie jar and connections of its own, run the whole sign-in at
once against the same local identity provider: the protected page, the relying party's redirect
to the provider, the provider's authorize endpoint (the browser names its user in the dev IdP's
`X-DevIdp-User` header, so no account picker), the callback (code redemption, id_token
validation, session write) and the first proxied request, which must return the upstream's body.
Meanwhile a separate process keeps a paced load of already signed-in users on the hot path.

Both msal-gateway (its defaults: one process, memory store, access log on) and Apache +
mod_auth_openidc (configured as in bench/compare.py, its cache of the same kind: shared memory
beside the memory store, Redis beside `--store redis`) face the same storm, one after the other,
in one run. For each it prints completed sign-ins per second, the callback's p50/p99, failures by
kind, and the hot path's p99 before (quiet) and during the storm, then the issue's targets with
PASS/FAIL.

    .venv/bin/python bench/signin_storm.py [--browsers 500] [--store memory|redis] [--quick]

The identity provider runs in a process of its own (never in the harness's, whose event loop is
busy driving the browsers), with one user per browser. By default all browsers come from one
address, as an office behind NAT does; the gateway's per-address limit on starting sign-ins
(GATEWAY_SIGNIN__MAX_STARTS_PER_MINUTE, 300) would refuse part of a larger office, so the harness
raises it to cover the storm, as such an office must. `--source-addresses K` spreads the browsers
over K loopback addresses instead and leaves the limit alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess
from pathlib import Path
from types import FrameType
from typing import Final
from urllib.parse import urljoin, urlsplit

import aiohttp
import apache
import nginx
from aiohttp import CookieJar
from processes import MissingTool, tree_cpu_seconds
from stack import GATEWAY_CALLBACK, GATEWAY_CLIENT_ID, UPSTREAM_SCOPE, Stack
from support.browser import NAVIGATE, parse_form
from support.ports import free_port
from yarl import URL

from devidp import DevIdpConfig, User
from gateway.config.settings import Settings

GATEWAY: Final = "msal-gateway"
APACHE: Final = "Apache + mod_auth_openidc"
PAGE: Final = "/b100"
REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
MAX_HOPS: Final = 10
USER_HEADER: Final = "X-DevIdp-User"
REQUEST_TIMEOUT_SECONDS: Final = 60.0
DEFAULT_STARTS_PER_MINUTE: Final = 300  # GATEWAY_SIGNIN__MAX_STARTS_PER_MINUTE's default
# Issue 17's targets.
SIGNIN_RATIO_TARGET: Final = 2.0
STORM_SIZE_TARGET: Final = 500
CALLBACK_P99_TARGET: Final = 1.0
HOT_P99_RATIO_TARGET: Final = 2.0


class StormFailed(RuntimeError):
    """The scenario could not be set up (not a failed sign-in, which is counted)."""


# ---- the identity provider, in a process of its own ----


def storm_users(count: int) -> tuple[User, ...]:
    """`count` users, each with a stable object id, named u0001, u0002, ..."""
    return tuple(
        User(
            username=f"u{n:04d}",
            name=f"Storm User {n}",
            oid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"msal-gateway-storm-{n}")),
            preferred_username=f"u{n:04d}@contoso.test",
        )
        for n in range(1, count + 1)
    )


def _serve_idp(config: DevIdpConfig, reply: multiprocessing.connection.Connection) -> None:
    """Child process: serve `config` until SIGTERM; send (base URL, authority, CA path) once up."""
    from devidp import start

    async def serve() -> None:
        running = await start(config)
        reply.send((running.base_url, running.authority, str(running.ca_path)))
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await running.stop()

    asyncio.run(serve())


@dataclass(frozen=True)
class IdpAddress:
    base_url: str
    authority: str


@dataclass
class StormStack(Stack):
    """The upstream, Redis, the identity provider (as a process), msal-gateway and Apache."""

    users: tuple[User, ...] = ()
    store: str = "memory"
    starts_per_minute: int | None = None
    idp_address: IdpAddress | None = None
    _idp_process: SpawnProcess | None = None

    def start(self) -> None:
        self._start_redis()
        apache_port = free_port()
        self._start_idp_process(apache_port)
        self.upstream = nginx.start_upstream(
            self.root, self.group, user=self.user, access_log=self.access_logs
        )
        self._start_gateway()
        self._start_apache(apache_port)

    def _start_idp_process(self, apache_port: int) -> None:
        clients = self.idp_clients(apache_port)
        config = DevIdpConfig(
            port=0, state_dir=self.root / "devidp", clients=clients, users=self.users
        )
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe(duplex=False)
        self._idp_process = context.Process(target=_serve_idp, args=(config, child), daemon=True)
        self._idp_process.start()
        if not parent.poll(60):
            raise StormFailed("the identity provider did not start within 60 s")
        base_url, authority, ca_path = parent.recv()
        self.idp_address = IdpAddress(base_url, authority)
        shutil.copyfile(ca_path, self.idp_ca)
        self.idp_ca.chmod(0o644)

    def gateway_settings(self) -> Settings:
        assert self.idp_address is not None and self.upstream is not None
        redis = self.store == "redis"
        return Settings(
            upstream=self.upstream.url,
            public_url="https://app.test",
            client_id=GATEWAY_CLIENT_ID,
            client_secret=self.client_secret,
            authority=self.idp_address.authority,
            ca_bundle=self.idp_ca,
            scopes=UPSTREAM_SCOPE,
            log={"access_log": self.access_logs},
            session_store="redis" if redis else "memory",
            redis_url=f"redis://127.0.0.1:{self.redis_port}/0" if redis else None,
            # Redis's records are sealed with keys from the cookie secret, which replicas share.
            cookie_secret=secrets.token_urlsafe(32) if redis else None,
        )

    def gateway_env(self) -> dict[str, str]:
        env = super().gateway_env()
        if self.starts_per_minute is not None:
            env["GATEWAY_SIGNIN__MAX_STARTS_PER_MINUTE"] = str(self.starts_per_minute)
        return env

    def idp_authority(self) -> str:
        assert self.idp_address is not None
        return self.idp_address.authority

    def apache_redis_address(self) -> str | None:
        # Apache's cache of the same kind as the gateway's store: shared memory beside memory.
        return f"127.0.0.1:{self.redis_port}" if self.store == "redis" else None

    def idp_cpu_seconds(self) -> float:
        assert self._idp_process is not None and self._idp_process.pid is not None
        return tree_cpu_seconds(self._idp_process.pid)

    def stop(self) -> None:
        self.group.stop_all()
        if self._idp_process is not None:
            self._idp_process.terminate()
            self._idp_process.join(10)
            if self._idp_process.is_alive():
                self._idp_process.kill()
                self._idp_process.join(5)
            self._idp_process = None
        super().stop()


# ---- one browser ----


@dataclass(frozen=True)
class Target:
    """A relying party: where it listens, the URL it calls itself by, its callback path."""

    name: str
    local_url: str
    public_url: str
    callback_path: str
    idp_base_url: str


@dataclass
class Outcome:
    user: str
    started: float
    finished: float = 0.0
    callback_seconds: float | None = None
    cookie: str = ""
    failure: str | None = None  # what went wrong, short enough to count by kind


async def browse(
    target: Target, user: str, idp_ssl: ssl.SSLContext, source_address: str | None
) -> Outcome:
    """One browser's whole sign-in and first proxied request."""
    outcome = Outcome(user, time.monotonic())
    local = target.local_url
    jar = CookieJar(unsafe=True, treat_as_secure_origin=[URL(local)])
    connector = aiohttp.TCPConnector(
        local_addr=(source_address, 0) if source_address else None, force_close=False
    )
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    try:
        async with aiohttp.ClientSession(
            cookie_jar=jar, connector=connector, timeout=timeout
        ) as session:
            await _walk(session, target, user, idp_ssl, outcome)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        outcome.failure = f"{type(exc).__name__}"
    outcome.finished = time.monotonic()
    if outcome.failure is None:
        cookies = jar.filter_cookies(URL(local + "/"))
        outcome.cookie = "; ".join(f"{name}={m.value}" for name, m in cookies.items())
    return outcome


async def _walk(
    session: aiohttp.ClientSession,
    target: Target,
    user: str,
    idp_ssl: ssl.SSLContext,
    outcome: Outcome,
) -> None:
    local, public = target.local_url, target.public_url

    def reachable(url: str) -> str:
        return local + url[len(public) :] if url.startswith(public) else url

    url, method, form = local + PAGE, "GET", None
    for _ in range(MAX_HOPS):
        where = reachable(url)
        at_idp = where.startswith(target.idp_base_url)
        path = urlsplit(where).path
        callback = not at_idp and path == target.callback_path
        headers = {**NAVIGATE, USER_HEADER: user} if at_idp else NAVIGATE
        began = time.monotonic()
        async with session.request(
            method,
            where,
            data=form,
            headers=headers,
            allow_redirects=False,
            ssl=idp_ssl if at_idp else True,
        ) as response:
            body = await response.read()
            status, location = response.status, response.headers.get("Location", "")
            retry_after = response.headers.get("Retry-After")
        if callback:
            outcome.callback_seconds = time.monotonic() - began
        if status in REDIRECTS:
            url, method, form = urljoin(where, location), "GET", None
            continue
        if status != 200:
            place = "idp" if at_idp else ("callback" if callback else path)
            suffix = f" Retry-After {retry_after}" if retry_after else ""
            outcome.failure = f"{status} at {place}{suffix}"
            return
        if at_idp and b'id="devidp-form-post"' in body:
            # response_mode=form_post: the page a browser submits to the callback at once.
            action, method, fields = parse_form(body.decode(errors="replace"))
            url, method, form = action, method.upper(), fields
            continue
        if at_idp or path != PAGE or body != nginx.BODIES[PAGE]:
            outcome.failure = f"unexpected page at {'idp' if at_idp else path}"
        return
    outcome.failure = "too many hops"


# ---- the hot path, in a process of its own ----


def _hot_load(
    url: str,
    cookies: list[str],
    interval: float,
    stop: multiprocessing.connection.Connection,
    reply: multiprocessing.connection.Connection,
) -> None:
    """Child process: one keep-alive connection per signed-in user, each sending a request every
    `interval` seconds (or at once when late) until told to stop. Says "ready" once every user
    has had an answer, then replies with every request's (start on the monotonic clock, latency,
    status)."""
    answered: set[str] = set()

    async def user(
        cookie: str, samples: list[tuple[float, float, int]], done: asyncio.Event
    ) -> None:
        connector = aiohttp.TCPConnector(limit=1)
        headers = {"Cookie": cookie}
        async with aiohttp.ClientSession(connector=connector) as session:
            due = time.monotonic()
            while not done.is_set():
                began = time.monotonic()
                try:
                    async with session.get(url, headers=headers, allow_redirects=False) as r:
                        await r.read()
                        status = r.status
                except (aiohttp.ClientError, OSError):
                    status = 0
                samples.append((began, time.monotonic() - began, status))
                if cookie not in answered:
                    answered.add(cookie)
                    if len(answered) == len(cookies):
                        reply.send("ready")
                due += interval
                await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def run() -> list[tuple[float, float, int]]:
        samples: list[tuple[float, float, int]] = []
        done = asyncio.Event()
        asyncio.get_running_loop().add_reader(stop.fileno(), done.set)
        await asyncio.gather(*(user(c, samples, done) for c in cookies))
        return samples

    reply.send(asyncio.run(run()))


class HotLoad:
    def __init__(self, url: str, cookies: list[str], interval: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop_read, self._stop_write = context.Pipe(duplex=False)
        self._reply_read, reply_write = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_hot_load,
            args=(url, cookies, interval, self._stop_read, reply_write),
            daemon=True,
        )
        self._process.start()
        if not self._reply_read.poll(60) or self._reply_read.recv() != "ready":
            self.kill()
            raise StormFailed("the hot-path load did not start")

    def finish(self) -> list[tuple[float, float, int]]:
        self._stop_write.send(None)
        if not self._reply_read.poll(60):
            self._process.kill()
            raise StormFailed("the hot-path load did not report back")
        samples: list[tuple[float, float, int]] = self._reply_read.recv()
        self._process.join(10)
        return samples

    def kill(self) -> None:
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)


# ---- one system's storm ----


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class StormResult:
    system: str
    browsers: int
    outcomes: list[Outcome]
    storm_seconds: float
    hot_quiet: list[tuple[float, float, int]]
    hot_storm: list[tuple[float, float, int]]
    cpu_seconds: float
    idp_cpu_seconds: float
    browsers_cpu_seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def completed(self) -> int:
        return sum(1 for o in self.outcomes if o.failure is None)

    @property
    def failures(self) -> Counter[str]:
        return Counter(o.failure for o in self.outcomes if o.failure is not None)

    @property
    def signins_per_second(self) -> float:
        return self.completed / self.storm_seconds if self.storm_seconds else 0.0

    def callback(self, fraction: float) -> float:
        return percentile(
            [o.callback_seconds for o in self.outcomes if o.callback_seconds is not None],
            fraction,
        )

    def hot_p99(self, storm: bool) -> float:
        return percentile([s[1] for s in (self.hot_storm if storm else self.hot_quiet)], 0.99)

    def hot_errors(self) -> int:
        return sum(1 for s in self.hot_quiet + self.hot_storm if s[2] != 200)


def source_addresses(count: int) -> list[str | None]:
    """`count` loopback source addresses (127.1.x.y), or [None] for the default one."""
    if count <= 1:
        return [None]
    return [f"127.1.{n // 250}.{n % 250 + 1}" for n in range(count)]


async def _storm(
    target: Target, users: Sequence[str], idp_ssl: ssl.SSLContext, addresses: list[str | None]
) -> list[Outcome]:
    return list(
        await asyncio.gather(
            *(
                browse(target, user, idp_ssl, addresses[n % len(addresses)])
                for n, user in enumerate(users)
            )
        )
    )


def storm_system(
    target: Target,
    cpu: Callable[[], float],
    idp_cpu: Callable[[], float],
    *,
    storm_names: Sequence[str],
    hot_names: Sequence[str],
    idp_ssl: ssl.SSLContext,
    addresses: list[str | None],
    quiet_seconds: float,
    hot_interval: float,
    profile: Path | None = None,
    pid: int | None = None,
) -> StormResult:
    """Signs the hot users in, measures the hot path quiet, then during the storm."""
    hot = asyncio.run(_storm(target, hot_names, idp_ssl, addresses))
    broken = [o.failure for o in hot if o.failure]
    if broken:
        raise StormFailed(f"{target.name}: signing the hot-path users in failed: {broken[:3]}")
    load = HotLoad(target.local_url + PAGE, [o.cookie for o in hot], hot_interval)
    profiler = None
    try:
        time.sleep(quiet_seconds)  # the quiet baseline
        storm_began = time.monotonic()
        if profile is not None and pid is not None:
            profiler = start_profiler(profile, pid)
        cpu_before, idp_before, own_before = cpu(), idp_cpu(), time.process_time()
        outcomes = asyncio.run(_storm(target, storm_names, idp_ssl, addresses))
        cpu_after, idp_after, own_after = cpu(), idp_cpu(), time.process_time()
        storm_ended = max(o.finished for o in outcomes)
        if profiler is not None:
            stop_profiler(profiler)
        time.sleep(0.3)
        samples = load.finish()
    finally:
        load.kill()
        if profiler is not None and profiler.poll() is None:
            profiler.kill()
    quiet_from = storm_began - quiet_seconds
    return StormResult(
        system=target.name,
        browsers=len(storm_names),
        outcomes=outcomes,
        storm_seconds=storm_ended - storm_began,
        hot_quiet=[s for s in samples if quiet_from <= s[0] < storm_began],
        hot_storm=[s for s in samples if storm_began <= s[0] < storm_ended],
        cpu_seconds=cpu_after - cpu_before,
        idp_cpu_seconds=idp_after - idp_before,
        browsers_cpu_seconds=own_after - own_before,
    )


# ---- profiling the gateway during the storm (optional) ----


def start_profiler(output: Path, pid: int) -> subprocess.Popen[bytes]:
    """py-spy sampling every thread of `pid` (MSAL's workers too), until stopped."""
    binary = shutil.which("py-spy")
    if binary is None:
        raise MissingTool("--profile needs py-spy on PATH (pip install py-spy)")
    argv = [
        binary,
        "record",
        "--threads",
        "--nonblocking",
        "-r",
        "100",
        "-p",
        str(pid),
        "-o",
        str(output),
    ]
    if output.suffix == ".txt":
        argv += ["-f", "raw"]
    return subprocess.Popen(  # noqa: S603 - a fixed binary, generated arguments
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def stop_profiler(profiler: subprocess.Popen[bytes]) -> None:
    # py-spy writes its output on SIGINT.
    profiler.send_signal(signal.SIGINT)
    try:
        profiler.wait(30)
    except subprocess.TimeoutExpired:
        profiler.kill()


# ---- the report ----


def _ms(seconds: float) -> str:
    if seconds != seconds:  # NaN: nothing measured
        return "—"
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _per(seconds: float, result: StormResult) -> str:
    return f"{seconds / max(result.browsers, 1) * 1000:.1f} ms"


def table(results: Sequence[StormResult]) -> str:
    lines = [
        "| system | browsers | completed | failures | sign-ins/s | callback p50 | callback p99 "
        "| hot p99 quiet | hot p99 storm | hot ratio | CPU per sign-in: system, IdP, browsers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        quiet, storm = r.hot_p99(False), r.hot_p99(True)
        failures = sum(r.failures.values())
        lines.append(
            f"| {r.system} | {r.browsers} | {r.completed} | "
            f"{f'**{failures}**' if failures else 0} | {r.signins_per_second:,.1f} | "
            f"{_ms(r.callback(0.5))} | {_ms(r.callback(0.99))} | {_ms(quiet)} | {_ms(storm)} | "
            f"{storm / quiet:.2f}x | {_per(r.cpu_seconds, r)}, {_per(r.idp_cpu_seconds, r)}, "
            f"{_per(r.browsers_cpu_seconds, r)} |"
        )
    for r in results:
        for kind, count in r.failures.most_common():
            lines.append(f"\n- {r.system}: {count} x {kind}")
        if r.hot_errors():
            statuses = Counter(s[2] for s in r.hot_quiet + r.hot_storm if s[2] != 200)
            seen = ", ".join(f"{n} x {status or 'no answer'}" for status, n in statuses.items())
            lines.append(f"\n- {r.system}: hot-path requests that did not answer 200: {seen}")
        lines += [f"\n- {r.system}: {note}" for note in r.notes]
    return "\n".join(lines)


@dataclass
class Verdict:
    target: str
    passed: bool | None
    measured: str

    def line(self) -> str:
        mark = "n/a" if self.passed is None else ("PASS" if self.passed else "FAIL")
        return f"- {self.target}: {mark} ({self.measured})"


def verdicts(gateway: StormResult | None, apache_result: StormResult | None) -> list[Verdict]:
    found: list[Verdict] = []
    target = f"sign-ins/s: {GATEWAY} >= {SIGNIN_RATIO_TARGET:g}x {APACHE}"
    if gateway is None or apache_result is None or not apache_result.signins_per_second:
        found.append(Verdict(target, None, "both systems are needed"))
    else:
        ratio = gateway.signins_per_second / apache_result.signins_per_second
        clean = not gateway.failures
        found.append(
            Verdict(
                target,
                ratio >= SIGNIN_RATIO_TARGET and clean,
                f"{ratio:.2f}x" + ("" if clean else f", {GATEWAY} had failures"),
            )
        )
    if gateway is None:
        return found
    failures = sum(gateway.failures.values())
    p99 = gateway.callback(0.99)
    size = f"{gateway.browsers} browsers"
    if gateway.browsers < STORM_SIZE_TARGET:
        size += f"; the target is for {STORM_SIZE_TARGET}"
    found.append(
        Verdict(
            f"{GATEWAY}: every sign-in of the storm completes, callback p99 <= "
            f"{CALLBACK_P99_TARGET:g} s",
            failures == 0 and p99 <= CALLBACK_P99_TARGET,
            f"{failures} failures, callback p99 {_ms(p99)}, {size}",
        )
    )
    quiet, storm = gateway.hot_p99(False), gateway.hot_p99(True)
    found.append(
        Verdict(
            f"{GATEWAY}: hot-path p99 during the storm <= {HOT_P99_RATIO_TARGET:g}x its quiet p99",
            storm <= HOT_P99_RATIO_TARGET * quiet and not gateway.hot_errors(),
            f"{_ms(quiet)} quiet, {_ms(storm)} during the storm: {storm / quiet:.2f}x"
            + (f"; {gateway.hot_errors()} hot-path errors" if gateway.hot_errors() else ""),
        )
    )
    return found


# ---- main ----


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A sign-in storm against msal-gateway and Apache + mod_auth_openidc "
        "(issue 17 part 3): sign-ins per second, callback p50/p99, failures, and the hot "
        "path's p99 before and during the storm."
    )
    parser.add_argument("--browsers", type=int, default=STORM_SIZE_TARGET, help="storm size (500)")
    parser.add_argument(
        "--hot-users", type=int, default=8, help="signed-in users on the hot path (8)"
    )
    parser.add_argument(
        "--hot-interval",
        type=float,
        default=0.02,
        help="seconds between one hot user's requests (0.02: 50/s each)",
    )
    parser.add_argument(
        "--quiet-seconds", type=float, default=5.0, help="hot-path baseline before the storm (5)"
    )
    parser.add_argument(
        "--store",
        choices=("memory", "redis"),
        default="memory",
        help="the gateway's session store (memory, its default); Apache's cache follows "
        "(shared memory, or Redis)",
    )
    parser.add_argument(
        "--gateway-workers", type=int, default=1, help="GATEWAY_WORKERS (1; more needs redis)"
    )
    parser.add_argument(
        "--source-addresses",
        type=int,
        default=1,
        help="loopback addresses the browsers come from (1: one office behind NAT)",
    )
    parser.add_argument(
        "--no-access-logs", action="store_true", help="access logs off (on for every system)"
    )
    parser.add_argument(
        "--only", choices=("gateway", "apache"), help="storm only one of the two systems"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="record the gateway with py-spy during its storm (.svg flame graph, .txt raw)",
    )
    parser.add_argument(
        "--gateway-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra GATEWAY_* variable for the gateway",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 20 browsers, 4 hot users, 2 s baseline"
    )
    parser.add_argument("--keep-temp", action="store_true", help="keep configurations and logs")
    args = parser.parse_args(argv)
    if args.quick:
        args.browsers, args.hot_users, args.quiet_seconds = 20, 4, 2.0
    if args.browsers < 1 or args.hot_users < 1 or args.source_addresses < 1:
        parser.error("--browsers, --hot-users and --source-addresses must be at least 1")
    if args.gateway_workers > 1 and args.store != "redis":
        parser.error("--gateway-workers above 1 needs --store redis")
    for setting in args.gateway_setting:
        if not setting.startswith("GATEWAY_") or "=" not in setting:
            parser.error(f"--gateway-setting wants GATEWAY_NAME=VALUE, got {setting!r}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        apache.apache_binary()
        nginx.nginx_binary()
    except MissingTool as exc:
        print(f"signin_storm.py: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    users = storm_users(args.browsers + args.hot_users)
    names = [u.username for u in users]
    hot_names, storm_names = names[: args.hot_users], names[args.hot_users :]
    addresses = source_addresses(args.source_addresses)
    starts = None
    if len(addresses) == 1 and len(names) > DEFAULT_STARTS_PER_MINUTE:
        starts = len(names)
    extra = dict(s.split("=", 1) for s in args.gateway_setting)
    stack = StormStack(
        gateway_workers=args.gateway_workers,
        access_logs=not args.no_access_logs,
        keep_temp=args.keep_temp,
        gateway_extra_env=extra,
        users=users,
        store=args.store,
        starts_per_minute=starts,
    )
    results: list[StormResult] = []
    try:
        print(f"starting the systems in {stack.root} ...", flush=True)
        stack.start()
        assert stack.idp_address is not None and stack.apache is not None
        assert stack.gateway is not None
        idp_ssl = ssl.create_default_context(cafile=str(stack.idp_ca))
        idp = stack.idp_address.base_url
        systems = []
        if args.only != "apache":
            gateway_process = stack.gateway
            systems.append(
                (
                    Target(
                        GATEWAY,
                        stack.gateway_url,
                        "https://app.test",
                        urlsplit(GATEWAY_CALLBACK).path,
                        idp,
                    ),
                    gateway_process.cpu_seconds,
                    gateway_process.pid,
                )
            )
        if args.only != "gateway":
            apache_process = stack.apache.process
            systems.append(
                (
                    Target(APACHE, stack.apache.url, stack.apache.url, apache.REDIRECT_PATH, idp),
                    apache_process.cpu_seconds,
                    apache_process.pid,
                )
            )
        for target, cpu, pid in systems:
            print(f"{target.name}: {args.hot_users} hot users, then {args.browsers} browsers")
            result = storm_system(
                target,
                cpu,
                stack.idp_cpu_seconds,
                storm_names=storm_names,
                hot_names=hot_names,
                idp_ssl=idp_ssl,
                addresses=addresses,
                quiet_seconds=args.quiet_seconds,
                hot_interval=args.hot_interval,
                profile=args.profile if target.name == GATEWAY else None,
                pid=pid,
            )
            if target.name == GATEWAY and starts is not None:
                result.notes.append(
                    f"GATEWAY_SIGNIN__MAX_STARTS_PER_MINUTE={starts}: every browser comes from "
                    f"one address, as behind an office's NAT"
                )
            results.append(result)
            print(
                f"  {result.completed}/{result.browsers} signed in in "
                f"{result.storm_seconds:.2f} s, {len(result.failures)} kind(s) of failure",
                flush=True,
            )
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("interrupted; stopping every system", file=sys.stderr)
        return 130
    except (RuntimeError, OSError) as exc:
        print(f"signin_storm.py: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
    by_name = {r.system: r for r in results}
    lines = [
        f"Sign-in storm: {args.browsers} browsers at once, {args.hot_users} signed-in users on "
        f"the hot path (one request each per {args.hot_interval * 1000:.0f} ms), "
        f"{os.cpu_count()} CPUs, gateway store {args.store}, access logs "
        f"{'off' if args.no_access_logs else 'on'}, "
        f"{len(addresses)} source address(es)",
        "",
        table(results),
        "",
        "Targets (issue 17, part 3):",
        *(v.line() for v in verdicts(by_name.get(GATEWAY), by_name.get(APACHE))),
    ]
    if args.quick:
        lines += ["", "(quick run: it shows that the scenario works; its figures are no measure)"]
    print()
    print("\n".join(lines))
    if args.profile is not None and args.only != "apache":
        print(f"\nprofile of the gateway during its storm: {args.profile}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
