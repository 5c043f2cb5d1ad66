"""msal-gateway side by side with Apache mod_auth_openidc, nginx and a bare aiohttp proxy, in one
run on one machine (issue 6): starts every system on loopback (see `stack`), signs in to the
gateway and to Apache for real, checks one request through each, then drives wrk against each
system for 100-byte and 64 KiB bodies at 32 and 128 connections, plus the unauthenticated
redirect to sign-in. Prints a Markdown table of req/s, p50, p99, errors, ratios and CPU time per
request, then the issue's targets with PASS/FAIL, and writes the same to bench/RESULTS.md.

    .venv/bin/python bench/compare.py [--duration 10] [--gateway-workers 2] [--quick]

Needs apache2, libapache2-mod-auth-openidc, nginx, redis-server, wrk and uvloop: bench/bootstrap.sh
installs them. Ratios inside one run are what count; absolute figures move between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

import aiohttp
import apache
import nginx
import wrk
from chart import write_chart
from processes import ManagedProcess, MissingTool
from signin import Fetched, SignInFailed, fetch, sign_in
from stack import BENCH_USER, GATEWAY_PUBLIC_URL, Stack, check_tools
from support.paths import BENCH

DIRECT: Final = "direct to nginx"
NGINX: Final = "nginx proxy_pass"
APACHE: Final = "Apache + mod_auth_openidc"
BARE: Final = "bare aiohttp proxy"
GATEWAY: Final = "msal-gateway"
BODY_NAMES: Final = {"/b100": "100 B", "/b64k": "64 KiB"}
REDIRECT: Final = "302 to sign-in"
NAVIGATION: Final = {"Accept": "text/html,application/xhtml+xml"}
PAUSE_SECONDS: Final = 0.5  # between runs, so one run's closing connections settle
QUICK_PAUSE_SECONDS: Final = 0.1


@dataclass(frozen=True)
class System:
    name: str
    url: str
    process: ManagedProcess  # whose process tree's CPU time is the system's
    cookie: str | None = None  # the session of a signed-in user, for the authenticating proxies

    @property
    def authenticates(self) -> bool:
        return self.cookie is not None


@dataclass
class Row:
    system: str
    body: str
    connections: int
    result: wrk.WrkResult
    not_proxied: int  # wrk successes the upstream never saw (or, for redirects, requests it did)
    proxy_cpu: float  # seconds per request
    redis_cpu: float | None
    command: list[str]

    @property
    def errors(self) -> int:
        return self.result.errors + self.not_proxied

    def error_detail(self) -> str:
        parts = []
        if self.result.socket_errors:
            parts.append(f"socket errors ({self.result.socket_detail})")
        if self.result.bad_status:
            parts.append(f"{self.result.bad_status} responses 4xx/5xx")
        if self.not_proxied:
            if self.body == REDIRECT:
                parts.append(f"{self.not_proxied} requests reached the upstream without a session")
            else:
                parts.append(f"{self.not_proxied} successes never reached the upstream")
        return "; ".join(parts)


@dataclass
class Verdict:
    target: str
    ratio: float | None
    passed: bool | None  # None: not measured in this run
    note: str = ""

    def line(self) -> str:
        if self.passed is None:
            return f"- {self.target}: n/a ({self.note})"
        mark = "PASS" if self.passed else "FAIL"
        ratio = f"{self.ratio:.2f}x" if self.ratio is not None else "?"
        return f"- {self.target}: **{mark}**, measured {ratio}" + (
            f" ({self.note})" if self.note else ""
        )


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM is handled like Ctrl-C, so every `finally` runs and the servers are stopped.
    raise KeyboardInterrupt(f"signal {signum}")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(message)


def _echoed(body: bytes) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in body.decode(errors="replace").splitlines())
    return {name: value for name, value in (p for p in pairs if len(p) == 2)}


async def sign_in_and_verify(stack: Stack) -> tuple[str, str]:
    """Signs in to the gateway and to Apache; checks bodies, headers and redirects through every
    system. Returns the Cookie header values (gateway, Apache)."""
    assert stack.idp is not None and stack.apache is not None and stack.upstream is not None
    assert stack.nginx_proxy is not None
    idp_ssl = ssl.create_default_context(cafile=str(stack.idp_ca))
    idp_base = stack.idp.base_url
    sessions = []
    for name, local, public in (
        (GATEWAY, stack.gateway_url, GATEWAY_PUBLIC_URL),
        (APACHE, stack.apache.url, stack.apache.url),
    ):
        try:
            signed = await sign_in(
                local_url=local,
                public_url=public,
                path="/b100",
                idp_base_url=idp_base,
                idp_ssl=idp_ssl,
                user=BENCH_USER,
            )
        except (SignInFailed, aiohttp.ClientError) as exc:
            raise RuntimeError(f"signing in to {name} failed: {exc}") from exc
        _check(signed.page == nginx.BODIES["/b100"], f"{name}: sign-in did not end on the body")
        sessions.append(signed.cookie_header)
    gateway_cookie, apache_cookie = sessions
    urls = {
        DIRECT: (stack.upstream.url, None),
        NGINX: (stack.nginx_proxy.url, None),
        BARE: (stack.bare_url, None),
        APACHE: (stack.apache.url, apache_cookie),
        GATEWAY: (stack.gateway_url, gateway_cookie),
    }
    for name, (url, cookie) in urls.items():
        headers = {"Cookie": cookie} if cookie else {}
        for path, body in nginx.BODIES.items():
            got = await fetch(url + path, headers)
            _check(
                got.status == 200 and got.body == body,
                f"{name}{path}: expected the {len(body)}-byte body, got {got.status} "
                f"({len(got.body)} bytes)",
            )
    # Both authenticating proxies must send the bearer token and the user's identity upstream.
    gw = _echoed(
        (await fetch(stack.gateway_url + nginx.HEADERS_PATH, {"Cookie": gateway_cookie})).body
    )
    ap = _echoed(
        (await fetch(stack.apache.url + nginx.HEADERS_PATH, {"Cookie": apache_cookie})).body
    )
    _check(gw.get("authorization", "").startswith("Bearer ey"), f"{GATEWAY}: no bearer token: {gw}")
    _check(bool(gw.get("x_ms_client_principal_name")), f"{GATEWAY}: no identity header: {gw}")
    _check(ap.get("authorization", "").startswith("Bearer ey"), f"{APACHE}: no bearer token: {ap}")
    _check(bool(ap.get("oidc_claim_preferred_username")), f"{APACHE}: no claim header: {ap}")
    # Without a session both answer a browser navigation with a redirect to sign-in.
    for name, url, expected in (
        (GATEWAY, stack.gateway_url, "/.auth/login/aad"),
        (APACHE, stack.apache.url, f"{idp_base}/"),
    ):
        got = await fetch(url + "/b100", NAVIGATION)
        _check(
            got.status == 302 and expected in got.location,
            f"{name}: unauthenticated navigation got {got.status} to {got.location!r}",
        )
    return gateway_cookie, apache_cookie


async def _still_signed_in(url: str, cookie: str) -> Fetched:
    return await fetch(url + "/b100", {"Cookie": cookie})


class Measurer:
    """Runs wrk against one system and accounts for what happened around it."""

    def __init__(self, stack: Stack, duration: int, pause: float) -> None:
        assert stack.upstream is not None and stack.redis is not None
        self.stack = stack
        self.upstream = stack.upstream
        self.redis = stack.redis
        self.duration = duration
        self.pause = pause
        self.secrets: dict[str, str] = {}

    def run(self, system: System, path: str, connections: int, *, redirect: bool = False) -> Row:
        headers = dict(NAVIGATION) if redirect else {}
        if system.cookie and not redirect:
            headers["Cookie"] = system.cookie
        time.sleep(self.pause)
        seen_before = nginx.upstream_requests(self.upstream)
        cpu_before, redis_before = system.process.cpu_seconds(), self.redis.cpu_seconds()
        result = wrk.run(
            system.url + path, connections=connections, duration=self.duration, headers=headers
        )
        cpu_after, redis_after = system.process.cpu_seconds(), self.redis.cpu_seconds()
        # The status request itself is counted once more in the second reading.
        seen = nginx.upstream_requests(self.upstream) - seen_before - 1
        # wrk's successes (2xx and 3xx) that the upstream never answered: redirects to sign-in.
        successes = result.requests - result.bad_status
        not_proxied = seen if redirect else max(0, successes - seen)
        requests = max(result.requests, 1)
        return Row(
            system=system.name,
            body=REDIRECT if redirect else BODY_NAMES[path],
            connections=connections,
            result=result,
            not_proxied=not_proxied,
            proxy_cpu=(cpu_after - cpu_before) / requests,
            redis_cpu=(redis_after - redis_before) / requests if system.authenticates else None,
            command=wrk.command(
                system.url + path, connections=connections, duration=self.duration, headers=headers
            ),
        )

    def warm_up(self, system: System, seconds: int) -> None:
        headers = {"Cookie": system.cookie} if system.cookie else {}
        wrk.run(system.url + "/b100", connections=32, duration=seconds, headers=headers)


def _ms(value: float) -> str:
    ms = value * 1000
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms"


def _us(value: float | None) -> str:
    return "—" if value is None else f"{value * 1e6:.0f} µs"


def _ratio(value: float, reference: float | None) -> str:
    return "—" if not reference else f"{value / reference:.2f}x"


def _find(rows: Sequence[Row], system: str, body: str, connections: int) -> Row | None:
    for row in rows:
        if (row.system, row.body, row.connections) == (system, body, connections):
            return row
    return None


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| system | body | conn | req/s | p50 | p99 | errors | vs mod_auth_openidc | vs direct "
        "| proxy CPU/req | Redis CPU/req |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        apache_row = _find(rows, APACHE, row.body, row.connections)
        direct_row = _find(rows, DIRECT, row.body, row.connections)
        rps = row.result.requests_per_second
        errors = f"**{row.errors}**" if row.errors else "0"
        lines.append(
            f"| {row.system} | {row.body} | {row.connections} | {rps:,.0f} | {_ms(row.result.p50)} "
            f"| {_ms(row.result.p99)} | {errors} "
            f"| {_ratio(rps, apache_row.result.requests_per_second if apache_row else None)} "
            f"| {_ratio(rps, direct_row.result.requests_per_second if direct_row else None)} "
            f"| {_us(row.proxy_cpu)} | {_us(row.redis_cpu)} |"
        )
    problems = [
        f"- {r.system}, {r.body}, {r.connections}: {r.error_detail()}" for r in rows if r.errors
    ]
    if problems:
        lines += ["", "Errors:", *problems]
    return "\n".join(lines)


def verdicts(rows: Sequence[Row]) -> list[Verdict]:
    def compare(
        target: str,
        ours: Row | None,
        theirs: Row | None,
        value: Callable[[Row], float],
        passes: Callable[[float], bool],
    ) -> Verdict:
        if ours is None or theirs is None:
            return Verdict(target, None, None, "not measured in this run")
        ratio = value(ours) / value(theirs) if value(theirs) else float("inf")
        notes = []
        if ours.errors:
            notes.append(f"{GATEWAY} had {ours.errors} errors")
        if theirs.errors:
            notes.append(f"{theirs.system} had {theirs.errors} errors")
        return Verdict(target, ratio, passes(ratio) and not ours.errors, "; ".join(notes))

    def rps(row: Row) -> float:
        return row.result.requests_per_second

    def p99(row: Row) -> float:
        return row.result.p99

    gw32 = _find(rows, GATEWAY, "100 B", 32)
    return [
        compare(
            f"authenticated GET, 100 B, 32 connections: {GATEWAY} req/s >= 2x {APACHE}",
            gw32,
            _find(rows, APACHE, "100 B", 32),
            rps,
            lambda r: r >= 2.0,
        ),
        compare(
            f"authenticated GET, 100 B, 32 connections: {GATEWAY} req/s >= 0.8x {BARE}",
            gw32,
            _find(rows, BARE, "100 B", 32),
            rps,
            lambda r: r >= 0.8,
        ),
        compare(
            f"p99 at 128 connections, 100 B: {GATEWAY} <= 0.5x {APACHE}",
            _find(rows, GATEWAY, "100 B", 128),
            _find(rows, APACHE, "100 B", 128),
            p99,
            lambda r: r <= 0.5,
        ),
        compare(
            f"unauthenticated redirect to sign-in: {GATEWAY} req/s >= 2x {APACHE}",
            _find(rows, GATEWAY, REDIRECT, 32),
            _find(rows, APACHE, REDIRECT, 32),
            rps,
            lambda r: r >= 2.0,
        ),
    ]


def _version(argv: Sequence[str], pick: Callable[[str], str]) -> str:
    try:
        result = subprocess.run(  # noqa: S603 - fixed binaries
            list(argv), capture_output=True, text=True, check=False, timeout=10
        )
    except OSError:
        return "unknown"
    return pick(result.stdout + result.stderr).strip() or "unknown"


def versions() -> dict[str, str]:
    return {
        "nginx": _version([nginx.nginx_binary(), "-v"], lambda t: t.split("nginx/")[-1]),
        "Apache": _version(
            [apache.apache_binary(), "-v"], lambda t: t.splitlines()[0].split("Apache/")[-1]
        ),
        "mod_auth_openidc": apache.mod_auth_openidc_version(),
        "redis-server": _version(
            ["redis-server", "--version"], lambda t: t.split(" v=")[-1].split()[0]
        ),
        "wrk": wrk.wrk_version(),
        "Python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "uvloop": _version([sys.executable, "-c", "import uvloop; print(uvloop.__version__)"], str),
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def report(
    rows: Sequence[Row],
    args: argparse.Namespace,
    measurer: Measurer,
    started: datetime.datetime,
    warnings: Sequence[str],
) -> str:
    lines = [
        "# msal-gateway benchmark results",
        "",
    ]
    if args.quick:
        lines += [
            "**Quick smoke run** (1 s per run, no warm-up, 32 connections only): it shows "
            "that the harness works; its figures are not a measurement.",
            "",
        ]
    found = versions()
    lines += [
        f"- date: {started:%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()} CPUs ({cpu_model()}), {platform.system()} "
        f"{platform.release()}; wrk, the upstream, Redis and the proxy under test share them",
        "- versions: " + ", ".join(f"{name} {version}" for name, version in found.items()),
        f"- each run: {measurer.duration} s of wrk with {wrk.THREADS} threads "
        f"({args.warmup} s of warm-up per system first); msal-gateway, the bare proxy and nginx "
        f"proxy_pass each run {args.gateway_workers} worker process(es); Apache mpm_event 2 "
        f"processes x 64 threads; the upstream nginx one worker per CPU",
        f"- access logs: {'on for every system' if args.access_logs else 'off for every system'}",
        "",
        table(rows),
        "",
        *(f"Warning: {w}\n" for w in warnings),
        "Targets (issue 6):",
        "",
        *(v.line() for v in verdicts(rows)),
        "",
        "wrk commands (100 B, 32 connections; session cookies shown by name):",
        "",
        "```",
    ]
    for row in rows:
        if row.connections == 32 and row.body in ("100 B", REDIRECT):
            lines.append(wrk.printable(row.command, measurer.secrets))
    lines += [
        "```",
        "",
        "How to read it: `errors` adds wrk's socket errors, 4xx/5xx answers and successes that "
        "never reached the upstream (counted with nginx stub_status; a 302 to sign-in would "
        "count as a success in wrk). In the redirect rows it counts requests that reached the "
        "upstream without a session. CPU per request is the user+system time of the system's "
        "whole process tree (workers included) during the run, divided by wrk's request count; "
        "Redis CPU is the shared redis-server's. The redirect rows compare each system's first "
        "answer to a browser without a session: the gateway's 302 to its own /.auth/login/aad, "
        "Apache's 302 straight to the identity provider with a state cookie.",
    ]
    return "\n".join(lines) + "\n"


def measure(stack: Stack, args: argparse.Namespace) -> tuple[list[Row], Measurer, list[str]]:
    assert stack.upstream is not None and stack.nginx_proxy is not None
    assert stack.apache is not None and stack.bare is not None and stack.gateway is not None
    gateway_cookie, apache_cookie = asyncio.run(sign_in_and_verify(stack))
    print("signed in to msal-gateway and Apache; one request through every system checked")
    systems = [
        System(DIRECT, stack.upstream.url, stack.upstream.process),
        System(NGINX, stack.nginx_proxy.url, stack.nginx_proxy.process),
        System(APACHE, stack.apache.url, stack.apache.process, apache_cookie),
        System(BARE, stack.bare_url, stack.bare),
        System(GATEWAY, stack.gateway_url, stack.gateway, gateway_cookie),
    ]
    systems = [s for s in systems if not args.only or any(o in s.name for o in args.only)]
    measurer = Measurer(stack, args.duration, QUICK_PAUSE_SECONDS if args.quick else PAUSE_SECONDS)
    measurer.secrets = {gateway_cookie: "<msal-gateway session>", apache_cookie: "<Apache session>"}
    if args.warmup > 0:
        for system in systems:
            measurer.warm_up(system, args.warmup)
    rows = []
    connection_counts = (32,) if args.quick else (32, 128)
    for connections in connection_counts:
        for path in nginx.BODIES:
            for system in systems:
                row = measurer.run(system, path, connections)
                print(_progress(row), flush=True)
                rows.append(row)
    for system in systems:
        if system.authenticates:
            row = measurer.run(system, "/b100", 32, redirect=True)
            print(_progress(row), flush=True)
            rows.append(row)
    # A session that lapsed during the run would have turned its rows into redirects; the
    # upstream count catches that per run, and this says why.
    warnings = []
    for system in systems:
        if system.cookie is not None:
            got = asyncio.run(_still_signed_in(system.url, system.cookie))
            if got.status != 200:
                warnings.append(f"{system.name}: the session no longer worked after the runs")
    return rows, measurer, warnings


def _progress(row: Row) -> str:
    errors = f", {row.errors} errors" if row.errors else ""
    return (
        f"  {row.system:<27} {row.body:<15} c={row.connections:<4} "
        f"{row.result.requests_per_second:>10,.0f} req/s  p99 {_ms(row.result.p99)}{errors}"
    )


def _duration(text: str) -> int:
    """Whole seconds, with or without the `s`: wrk takes no fractions."""
    seconds = int(text.removesuffix("s"))
    if seconds < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return seconds


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark msal-gateway against Apache mod_auth_openidc, nginx and a bare "
        "aiohttp proxy (issue 6); writes bench/RESULTS.md."
    )
    parser.add_argument("--duration", type=_duration, default=10, help="seconds per run (10)")
    parser.add_argument("--warmup", type=_duration, default=None, help="seconds per system (2)")
    parser.add_argument(
        "--gateway-workers",
        type=int,
        default=2,
        help="GATEWAY_WORKERS, also the process count of the bare proxy and nginx (2); "
        "1 sets no variable",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 1 s runs, no warm-up, 32 connections only"
    )
    parser.add_argument(
        "--access-logs", action="store_true", help="access logs on for every system (off)"
    )
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="measure only systems whose name contains NAME"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=BENCH / "RESULTS.md",
        help="where to write the Markdown (bench/RESULTS.md)",
    )
    parser.add_argument(
        "--keep-temp", action="store_true", help="keep configurations and logs for reading"
    )
    parser.add_argument(
        "--gateway-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra GATEWAY_* variable for the gateway, e.g. GATEWAY_EVENT_LOOP=asyncio",
    )
    args = parser.parse_args(argv)
    for setting in args.gateway_setting:
        if not setting.startswith("GATEWAY_") or "=" not in setting:
            parser.error(f"--gateway-setting wants GATEWAY_NAME=VALUE, got {setting!r}")
    if args.quick:
        args.duration = 1
    if args.warmup is None:
        args.warmup = 0 if args.quick else 2
    if args.duration < 1:
        parser.error("--duration must be at least 1 second")
    if args.gateway_workers < 1:
        parser.error("--gateway-workers must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_tools()
    except MissingTool as exc:
        print(f"compare.py: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    started = datetime.datetime.now(datetime.UTC)
    stack = Stack(
        gateway_workers=args.gateway_workers,
        access_logs=args.access_logs,
        keep_temp=args.keep_temp,
        gateway_extra_env=dict(setting.split("=", 1) for setting in args.gateway_setting),
    )
    try:
        print(f"starting the systems in {stack.root} ...", flush=True)
        stack.start()
        rows, measurer, warnings = measure(stack, args)
    except KeyboardInterrupt:
        print("interrupted; stopping every system", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"compare.py: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
    text = report(rows, args, measurer, started, warnings)
    print()
    print(text)
    args.output.write_text(text)
    print(f"written to {args.output}")
    write_chart(args.output, args.output.with_suffix(".svg"))
    print(f"and drawn in {args.output.with_suffix('.svg')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
