"""A bounded soak of msal-gateway: two gateway processes sharing Redis behind Sentinel (a master
and two replicas, configured as docs/operations.md asks), simulated users sending mixed traffic
through both for a fixed time, and one Sentinel failover at the midpoint (SENTINEL FAILOVER, or
kill -9 of the master with --fault kill). This script owns the load, the checks and the verdict;
every server it starts is the test suite's own (tests/support), on loopback.

    .venv/bin/python bench/soak.py [--minutes 10] [--users 20] [--fault failover]

Develop with `--minutes 1 --users 5`; run the full soak on an otherwise idle machine.

Each user signs in through the real flow (browser redirects, development identity provider) and
then, until time is up, sends one request at a time to either gateway at random: authenticated
GETs, POSTs with bodies, 1 MiB streamed responses, WebSocket echo round trips, /.auth/me and
anonymous requests; on average every --sign-out-seconds it signs out (both gateways must then
refuse the old cookie) and in again. Access tokens are due for refresh every --refresh-seconds,
so refreshes run all along. Every outcome is checked, status and body, and is either expected or
unexpected. A clean 503 (store_unavailable or busy) is expected only inside the failover window:
from the failover request until FAILOVER_GRACE_SECONDS after the old master has been demoted
(the sentinels reconfigure a live old master some seconds after they name the new one; a killed
one is gone once the new one is named). In that window a sign-out may also reach the other
gateway late, but never later than the session cache's stated bound (CACHE_BOUND_SECONDS): the
old cookie is tried again after it. Every request has a deadline (REQUEST_TIMEOUT_SECONDS): one
that passes it is unexpected and reported, so the script cannot hang on a stuck gateway.

Prints Markdown tables: requests by kind, the verdict (unexpected outcomes with the first
examples, the failover window, sessions lost, refresh grants at the identity provider, each
gateway's RSS after warm-up and at the end, its CPU, its exit on SIGTERM and its log), then exits
0 only when nothing unexpected happened, no session was lost, the failover completed and both
gateways exited 0 with no Traceback in their stderr.

The gateways' stderr is read while they run (StderrDrain): an unread pipe stalls a gateway after
a few hundred requests, which is what stopped the first version of this script (d00f047).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import hashlib
import json
import random  # traffic shapes and bodies, not secrets
import secrets
import ssl
import subprocess
import sys
import threading
import time
from array import array
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import redis
from support.browser import NAVIGATE, Browser
from support.failover import OPERATOR_NODE_ARGS
from support.gateway import PUBLIC_URL, SESSION_COOKIE, GatewayProcess, idp_ssl, settings_for
from support.idp import ThreadedDevIdp
from support.procfs import cpu_seconds, rss_kib
from support.redis_sentinel import SentinelSet
from support.threaded import ThreadedServer
from support.upstream import make_upstream_app

from devidp.config import DevIdpConfig

SCOPE: Final = "api://upstream/read"  # so every proxied request carries a bearer token
# The default development users without a group overage (carol needs Graph at sign-in, which is
# not what this soak is about).
USERS: Final = ("alice", "bob", "jose")
API: Final = {"Accept": "application/json"}
REQUEST_TIMEOUT_SECONDS: Final = 30.0
# The gateways look at the sentinels once a second, and the demotion drops the connections still
# on the old master (the notice feed among them): a few seconds for everything to settle.
FAILOVER_GRACE_SECONDS: Final = 5.0
DEMOTION_TIMEOUT_SECONDS: Final = 60.0
# The documented bound for a sign-out to reach another replica's session cache is "milliseconds
# while the notice feed is up", not "before the sign-out response": the check waits this long.
SIGNED_OUT_SETTLE_SECONDS: Final = 0.1
# GATEWAY_SESSION__CACHE_SECONDS (the default): the stated bound for a sign-out to reach every
# replica when its notice is lost, as it can be while the sentinels move the master.
CACHE_BOUND_SECONDS: Final = 5.0
SHUTDOWN_SECONDS: Final = 30.0
STREAM_BYTES: Final = 1 << 20
MAX_UPLOAD_BYTES: Final = 256 * 1024
CLEAN_503_CODES: Final = frozenset({"store_unavailable", "busy"})
CLEAN_503_TITLE: Final = "Temporarily unavailable"  # the HTML page of both codes
EXAMPLES: Final = 12
EXAMPLES_PER_KIND: Final = 3
# Relative weight of each kind of request a signed-in user sends next. Sign-outs are timed
# instead (--sign-out-seconds): per request they would end sessions before any refresh was due.
MIX: Final = {
    "get": 50.0,
    "post": 12.0,
    "me": 10.0,
    "websocket": 6.0,
    "stream 1 MiB": 2.0,
    "anonymous": 12.0,
}

Action = Callable[[], Awaitable[tuple[int, str | None]]]


def usage(pid: int) -> tuple[int | None, float | None]:
    """A gateway's resident memory (KiB) and CPU time so far; None for both once it has exited."""
    try:
        return rss_kib(pid), cpu_seconds(pid)
    except FileNotFoundError:
        return None, None


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def token_claims(bearer: str) -> dict[str, Any]:
    """The payload of a JWT, unverified: only compared with what the gateway says it sent."""
    try:
        payload = bearer.removeprefix("Bearer ").split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


async def unclean_503(response: aiohttp.ClientResponse) -> str | None:
    """None unless `response` is a 503 that is not the gateway's own answer to a store outage or
    a lock it could not get (JSON code for API requests, the page for navigations)."""
    if response.status != 503:
        return None
    text = await response.text()
    if response.content_type == "application/json":
        try:
            code = json.loads(text).get("error")
        except (ValueError, AttributeError):
            code = None
        return None if code in CLEAN_503_CODES else f"503 with error {code!r}"
    return None if CLEAN_503_TITLE in text else "503 that is not the gateway's page"


class StderrDrain:
    """Reads a gateway's stderr while it runs and keeps a summary.

    GatewayProcess pipes stderr and reads it only in stop(). A pipe nobody reads holds 64 KiB on
    Linux, a few hundred access-log lines; then the gateway's next log write blocks its event
    loop and every request to it hangs. That was the earlier soak attempt's stall. A thread,
    not the script's event loop, so that a busy loop here cannot stall the gateway either.
    """

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        self._stream = process.stderr
        self.lines = 0
        self.levels: collections.Counter[str] = collections.Counter()
        self.notable: collections.Counter[str] = collections.Counter()  # warnings and errors
        self.tracebacks = 0
        self.traceback_examples: list[str] = []
        self._thread = threading.Thread(target=self._run, name="stderr-drain", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for raw in self._stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines += 1
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if isinstance(entry, dict):
                level, message = str(entry.get("level", "?")), str(entry.get("message", ""))
            else:
                level, message = "not json", line
            self.levels[level] += 1
            if "Traceback" in line:
                self.tracebacks += 1
                if len(self.traceback_examples) < 3:
                    self.traceback_examples.append(line[:400])
            key = message[:200]
            # Bounded: at most 50 distinct messages are kept.
            if level not in ("info", "debug") and (key in self.notable or len(self.notable) < 50):
                self.notable[key] += 1

    def join(self, seconds: float) -> None:
        self._thread.join(seconds)


@dataclass
class Failover:
    """When the failover was asked for, when every sentinel named the new master, when the old
    master was demoted (`settled`), and when 503s were seen (seconds on the soak's clock)."""

    requested: float | None = None
    promoted: float | None = None
    settled: float | None = None
    first_503: float | None = None
    last_503: float | None = None
    count_503: int = 0
    error: str | None = None
    old_master: str = ""
    new_master: str = ""

    def allows_503(self, at: float) -> bool:
        if self.requested is None or at < self.requested:
            return False
        return self.settled is None or at <= self.settled + FAILOVER_GRACE_SECONDS

    def saw_503(self, at: float) -> None:
        self.count_503 += 1
        self.first_503 = at if self.first_503 is None else min(self.first_503, at)
        self.last_503 = at if self.last_503 is None else max(self.last_503, at)


@dataclass
class KindStats:
    requests: int = 0
    unexpected: int = 0
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    seconds: array[float] = field(default_factory=lambda: array("d"))


@dataclass(frozen=True)
class Example:
    at: float
    kind: str
    method: str
    path: str
    gateway: int
    outcome: str


@dataclass
class User:
    number: int
    username: str
    cookie: str | None = None
    sign_out_at: float = 0.0
    sign_ins: int = 0
    sign_outs: int = 0
    lost: int = 0
    sent: int = 0

    @property
    def principal(self) -> str:
        return f"{self.username}@contoso.example"

    def next_path(self, prefix: str) -> str:
        self.sent += 1
        return f"/soak/{self.number}/{prefix}/{self.sent}"

    def headers(self, base: dict[str, str]) -> dict[str, str]:
        assert self.cookie is not None
        return {**base, "Cookie": f"{SESSION_COOKIE}={self.cookie}"}


def echo_problem(seen: Any, user: User, method: str, path: str) -> str | None:
    """What is wrong with the upstream's echo of an authenticated request, if anything."""
    if not isinstance(seen, dict):
        return "not the upstream's echo"
    if seen.get("method") != method or seen.get("path") != path:
        return f"echo of {seen.get('method')} {seen.get('path')}"
    headers = {str(name).lower(): str(value) for name, value in seen.get("headers", [])}
    if headers.get("x-ms-client-principal-name") != user.principal:
        return f"principal {headers.get('x-ms-client-principal-name')!r}, not {user.principal}"
    bearer = headers.get("authorization", "")
    if not bearer.startswith("Bearer "):
        return "no bearer token forwarded"
    if token_claims(bearer).get("oid") != headers.get("x-ms-client-principal-id"):
        return "a bearer token of another user"
    if SESSION_COOKIE in headers.get("cookie", ""):
        return "the session cookie reached the upstream"
    return None


class Soak:
    """What the simulated users do, and the ledger of what they saw. One event loop; each user is
    one task sending one request at a time."""

    def __init__(
        self,
        gateways: Sequence[GatewayProcess],
        client: aiohttp.ClientSession,
        idp_context: ssl.SSLContext,
        think_seconds: float,
        sign_out_seconds: float,
    ) -> None:
        self.gateways = gateways
        self.client = client
        self.idp_context = idp_context
        self.think_seconds = think_seconds
        self.sign_out_seconds = sign_out_seconds
        self.failover = Failover()
        self.stats: dict[str, KindStats] = collections.defaultdict(KindStats)
        self.by_gateway: collections.Counter[int] = collections.Counter()
        self.unexpected = 0
        self.late_sign_outs = 0  # during the failover: refused only within the cache's bound
        self.examples: list[Example] = []
        self.t0 = time.monotonic()
        self._actions: dict[str, Callable[[User], Awaitable[None]]] = {
            "get": self.get,
            "post": self.post,
            "me": self.me,
            "websocket": self.websocket,
            "stream 1 MiB": self.stream,
            "anonymous": self.anonymous,
        }

    def now(self) -> float:
        return time.monotonic() - self.t0

    def total(self) -> int:
        return sum(stats.requests for stats in self.stats.values())

    def url(self, gateway: int, path: str) -> str:
        return self.gateways[gateway].url + path

    def pick(self) -> int:
        return random.randrange(len(self.gateways))

    # ---- one request, bounded and classified ----

    async def call(
        self,
        kind: str,
        method: str,
        gateway: int,
        path: str,
        action: Action,
        expect: Collection[int],
        *,
        may_503: bool = True,
    ) -> int | None:
        """Run `action` (which answers a status and what was wrong with the answer) under the
        request deadline, and record the outcome. Returns the status, None if there was none."""
        started = time.monotonic()
        sent_at = self.now()
        status: int | None = None
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                status, problem = await action()
        except TimeoutError:
            label = outcome = f"timeout ({REQUEST_TIMEOUT_SECONDS:.0f} s)"
            ok = False
        except (aiohttp.ClientError, OSError) as exc:
            label, outcome = type(exc).__name__, f"{type(exc).__name__}: {exc}"[:200]
            ok = False
        else:
            at = self.now()
            if status == 503 and problem is None:
                self.failover.saw_503(at)
                ok = may_503 and self.failover.allows_503(at)
                label = outcome = "503" if ok else "503 outside the failover window"
            else:
                ok = status in expect and problem is None
                label = str(status) if problem is None else f"{status} wrong answer"
                outcome = str(status) if problem is None else f"{status}: {problem}"[:200]
        stats = self.stats[kind]
        stats.requests += 1
        stats.outcomes[label] += 1
        stats.seconds.append(time.monotonic() - started)
        self.by_gateway[gateway] += 1
        if not ok:
            stats.unexpected += 1
            self.unexpected += 1
            shown = sum(1 for e in self.examples if e.kind == kind)
            if len(self.examples) < EXAMPLES and shown < EXAMPLES_PER_KIND:
                self.examples.append(Example(sent_at, kind, method, path, gateway, outcome))
        return status

    def lost(self, user: User, status: int | None) -> None:
        """A 401 for a live session: it stopped working although the user never signed out."""
        if status == 401:
            user.lost += 1
            user.cookie = None  # sign in again, so the soak goes on

    # ---- what users do ----

    async def sign_in(self, user: User) -> bool:
        gateway = self.pick()
        browser = Browser(self.gateways[gateway].url, PUBLIC_URL, self.idp_context)

        async def flow() -> tuple[int, str | None]:
            start = await browser.get(f"/soak/{user.number}/home")
            if start.status != 302:
                return start.status, await unclean_503(start)
            login = start.headers.get("Location", "")
            if "/.auth/login/aad" not in login:
                return 302, "redirected elsewhere than sign-in"
            step = await browser.get(login)
            if step.status != 302:
                return step.status, await unclean_503(step)
            try:
                auth = await browser.authorize(step.headers["Location"], user.username)
            except (AssertionError, KeyError) as exc:
                return step.status, f"at the identity provider: {exc!r}"
            done = await browser.deliver(auth)
            if done.status != 302:
                return done.status, await unclean_503(done)
            cookie = browser.cookie(SESSION_COOKIE)
            if cookie is None:
                return 302, "no session cookie"
            user.cookie = cookie
            return 302, None

        try:
            status = await self.call("sign-in", "GET", gateway, "/.auth/login/aad", flow, {302})
        finally:
            await browser.close()
        if user.cookie is not None:
            user.sign_ins += 1
            user.sign_out_at = self.now() + random.expovariate(1 / self.sign_out_seconds)
            return True
        # A 503 in the failover window is retried soon; anything else more slowly.
        await asyncio.sleep(0.3 if status == 503 else 1.0)
        return False

    async def get(self, user: User) -> None:
        gateway, path = self.pick(), user.next_path("get")

        async def action() -> tuple[int, str | None]:
            async with self.client.get(self.url(gateway, path), headers=user.headers(API)) as r:
                if r.status != 200:
                    return r.status, await unclean_503(r)
                return 200, echo_problem(await r.json(), user, "GET", path)

        self.lost(user, await self.call("get", "GET", gateway, path, action, {200}))

    async def post(self, user: User) -> None:
        gateway, path = self.pick(), user.next_path("post")
        body = random.randbytes(random.randint(1, MAX_UPLOAD_BYTES))
        headers = user.headers({**API, "Content-Type": "application/octet-stream"})

        async def action() -> tuple[int, str | None]:
            async with self.client.post(self.url(gateway, path), data=body, headers=headers) as r:
                if r.status != 200:
                    return r.status, await unclean_503(r)
                seen = await r.json()
                problem = echo_problem(seen, user, "POST", path)
                if problem is None and (
                    seen.get("body_length") != len(body)
                    or seen.get("body_sha256") != hashlib.sha256(body).hexdigest()
                ):
                    problem = "the upstream received another body"
                return 200, problem

        self.lost(user, await self.call("post", "POST", gateway, path, action, {200}))

    async def stream(self, user: User) -> None:
        gateway, path = self.pick(), f"/_bytes?n={STREAM_BYTES}"

        async def action() -> tuple[int, str | None]:
            async with self.client.get(self.url(gateway, path), headers=user.headers(API)) as r:
                if r.status != 200:
                    return r.status, await unclean_503(r)
                received, wrong = 0, False
                async for chunk in r.content.iter_chunked(64 * 1024):
                    received += len(chunk)
                    wrong = wrong or chunk.count(b"x") != len(chunk)
            if wrong or received != STREAM_BYTES:
                return 200, f"{received} bytes{' (not all x)' if wrong else ''}"
            return 200, None

        self.lost(user, await self.call("stream 1 MiB", "GET", gateway, path, action, {200}))

    async def websocket(self, user: User) -> None:
        gateway, path = self.pick(), "/_ws"

        async def action() -> tuple[int, str | None]:
            try:
                ws = await self.client.ws_connect(
                    self.url(gateway, path), protocols=("echo.v1",), headers=user.headers({})
                )
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status, None  # no body to inspect: a 503 here counts as clean
            async with ws:
                if ws.protocol != "echo.v1":
                    return 101, f"subprotocol {ws.protocol!r}"
                hello = await ws.receive_json()
                if hello != {"user": user.principal}:
                    return 101, f"greeted as {hello!r}"
                text = secrets.token_hex(8)
                await ws.send_str(text)
                if (await ws.receive_str()) != "echo:" + text:
                    return 101, "wrong text echo"
                data = random.randbytes(64)
                await ws.send_bytes(data)
                if (await ws.receive_bytes()) != data[::-1]:
                    return 101, "wrong binary echo"
            return 101, None

        self.lost(user, await self.call("websocket", "GET", gateway, path, action, {101}))

    async def me(self, user: User) -> None:
        gateway, path = self.pick(), "/.auth/me"

        async def action() -> tuple[int, str | None]:
            async with self.client.get(self.url(gateway, path), headers=user.headers(API)) as r:
                if r.status != 200:
                    return r.status, await unclean_503(r)
                seen = await r.json()
            if not (isinstance(seen, list) and seen and seen[0].get("user_id") == user.principal):
                return 200, "another principal"
            return 200, None

        self.lost(user, await self.call("me", "GET", gateway, path, action, {200}))

    async def anonymous(self, user: User) -> None:
        """No cookie (an API call: 401; a navigation: 302 to sign-in), or a cookie that was never
        issued (401 after a store lookup, so a 503 in the failover window is fine)."""
        gateway, path = self.pick(), user.next_path("anonymous")
        variant = random.choice(("api", "navigation", "unknown cookie"))
        headers = dict(NAVIGATE if variant == "navigation" else API)
        if variant == "unknown cookie":
            headers["Cookie"] = f"{SESSION_COOKIE}={secrets.token_urlsafe(32)}"

        async def action() -> tuple[int, str | None]:
            async with self.client.get(
                self.url(gateway, path), headers=headers, allow_redirects=False
            ) as r:
                body = await r.read()
                if r.status == 302:
                    where = r.headers.get("Location", "")
                    return 302, None if "/.auth/login/aad" in where else f"to {where[:80]}"
                if r.status == 401:
                    signed_out = b"sign_in_required" in body or b"session_expired" in body
                    return 401, None if signed_out else "not a sign-in challenge"
                return r.status, await unclean_503(r)

        expect = {302} if variant == "navigation" else {401}
        await self.call(
            "anonymous", "GET", gateway, path, action, expect, may_503=variant == "unknown cookie"
        )

    async def sign_out(self, user: User) -> None:
        gateway, path = self.pick(), "/.auth/logout"
        old = user.headers(NAVIGATE)

        async def action() -> tuple[int, str | None]:
            async with self.client.get(
                self.url(gateway, path), headers=old, allow_redirects=False
            ) as r:
                await r.read()
                return r.status, await unclean_503(r)

        status = await self.call("sign-out", "GET", gateway, path, action, {302})
        cookie, user.cookie = user.cookie, None  # signed out, or unknown: sign in again
        if status != 302:
            return
        user.sign_outs += 1
        await asyncio.sleep(SIGNED_OUT_SETTLE_SECONDS)
        headers = {**API, "Cookie": f"{SESSION_COOKIE}={cookie}"}
        for other in range(len(self.gateways)):
            check = user.next_path("signed-out")

            async def probe(other: int = other, check: str = check) -> tuple[int, str | None]:
                async with self.client.get(self.url(other, check), headers=headers) as r:
                    await r.read()
                    if r.status == 200:
                        return 200, "the signed-out session still works"
                    return r.status, await unclean_503(r)

            async def refused(probe: Action = probe) -> tuple[int, str | None]:
                status, problem = await probe()
                if status == 200 and self.failover.allows_503(self.now()):
                    # During a failover a replica may read the old master, and the notice may
                    # be lost: the stated bound is then the cache's. Hold the gateway to it.
                    await asyncio.sleep(CACHE_BOUND_SECONDS + 0.5)
                    status, problem = await probe()
                    if status == 200:
                        problem = f"still works {CACHE_BOUND_SECONDS:.0f} s after the sign-out"
                    else:
                        self.late_sign_outs += 1
                return status, problem

            where = "same gateway" if other == gateway else "other gateway"
            await self.call(f"after sign-out, {where}", "GET", other, check, refused, {401})

    async def act(self, user: User) -> None:
        kind = random.choices(list(MIX), weights=list(MIX.values()))[0]
        await self._actions[kind](user)

    # ---- phases ----

    async def warm_up(self, user: User) -> None:
        """Signed in, and one request of each kind: what steady traffic will hold in memory."""
        for _ in range(5):
            if await self.sign_in(user):
                break
        if user.cookie is None:
            return
        for kind in ("get", "post", "me", "websocket", "stream 1 MiB", "anonymous"):
            if user.cookie is not None:
                await self._actions[kind](user)

    async def traffic(self, user: User, until: float) -> None:
        while self.now() < until:
            if user.cookie is None:
                await self.sign_in(user)
            elif self.now() >= user.sign_out_at:
                await self.sign_out(user)
            else:
                await self.act(user)
                await asyncio.sleep(random.uniform(0, 2 * self.think_seconds))

    async def fail_over(self, at: float, sentinels: SentinelSet, fault: str) -> None:
        await asyncio.sleep(max(0.0, at - self.now()))
        old = await asyncio.to_thread(sentinels.master_address)
        self.failover.old_master = "{}:{}".format(*old)
        self.failover.requested = self.now()
        try:
            if fault == "kill":
                sentinels.node_at(old).kill()
            else:
                await asyncio.to_thread(sentinels.failover)
            await asyncio.to_thread(sentinels.wait_for_master_other_than, old)
            self.failover.promoted = self.now()
            self.failover.new_master = "{}:{}".format(
                *await asyncio.to_thread(sentinels.master_address)
            )
            if fault != "kill":  # a killed master is not demoted: it is gone
                await asyncio.to_thread(wait_for_demotion, sentinels, old)
        except Exception as exc:  # reported, and fails the soak
            self.failover.error = f"{type(exc).__name__}: {exc}"
        self.failover.settled = self.now()


def wait_for_demotion(sentinels: SentinelSet, old: tuple[str, int]) -> None:
    """Until the old master answers ROLE as a replica: the end of the failover."""
    deadline = time.monotonic() + DEMOTION_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            with sentinels.node_client(old) as node:
                answer: Any = node.execute_command("ROLE")
            if answer[0] == b"slave":
                return
        time.sleep(0.1)
    raise TimeoutError(f"the old master was not demoted within {DEMOTION_TIMEOUT_SECONDS:.0f} s")


@dataclass
class GatewayReport:
    rss_start: int | None = None
    rss_end: int | None = None
    cpu_start: float | None = None
    cpu_end: float | None = None
    exit_code: int | None = None
    killed: bool = False


def shut_down(gateway: GatewayProcess, drain: StderrDrain, report: GatewayReport) -> None:
    """SIGTERM and wait for the exit; stderr was read all along, so no communicate()."""
    gateway.terminate()
    try:
        report.exit_code = gateway.process.wait(SHUTDOWN_SECONDS)
    except subprocess.TimeoutExpired:
        report.killed = True
        gateway.process.kill()
        gateway.process.wait()
    drain.join(10)


def kib(value: int | None) -> str:
    return "?" if value is None else f"{value / 1024:.1f} MiB"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def report(
    soak: Soak,
    users: Sequence[User],
    *,
    traffic: tuple[float, float],
    before_traffic: int,
    own_cpu: float,
    refreshes: tuple[int, int],
    gateways: Sequence[GatewayReport],
    drains: Sequence[StderrDrain],
) -> int:
    """Print the tables; return the exit status."""
    began, ended = traffic
    duration = ended - began
    total = soak.total()
    print(f"\n## Soak: {duration:.0f} s of traffic, {len(users)} users, 2 gateways\n")
    print("| kind | requests | unexpected | outcomes | median | p99 |")
    print("|---|---:|---:|---|---:|---:|")
    for kind, stats in sorted(soak.stats.items()):
        outcomes = ", ".join(f"{label} x{n}" for label, n in stats.outcomes.most_common())
        print(
            f"| {kind} | {stats.requests} | {stats.unexpected} | {outcomes} "
            f"| {percentile(stats.seconds, 0.5) * 1000:.1f} ms "
            f"| {percentile(stats.seconds, 0.99) * 1000:.1f} ms |"
        )
    print(f"| **all** | **{total}** | **{soak.unexpected}** | | | |")

    fo = soak.failover
    lost_users = sum(1 for u in users if u.lost)
    lost_events = sum(u.lost for u in users)
    shares = ", ".join(f"gateway {i + 1}: {soak.by_gateway[i]}" for i in range(len(gateways)))
    print("\n| measure | value |")
    print("|---|---|")
    print(f"| traffic phase | t={began:.1f} s to t={ended:.1f} s ({duration:.1f} s) |")
    print(f"| requests (incl. sign-in and warm-up) | {total} ({shares}) |")
    during = total - before_traffic
    print(f"| requests during the traffic phase | {during} ({during / duration:.0f}/s) |")
    print(f"| expected / unexpected | {total - soak.unexpected} / {soak.unexpected} |")
    if fo.requested is None:
        print("| failover | not reached |")
    else:
        promoted = seconds(None if fo.promoted is None else fo.promoted - fo.requested)
        demoted = seconds(None if fo.settled is None else fo.settled - fo.requested)
        print(
            f"| failover | asked at t={fo.requested:.1f} s; every sentinel named the new master "
            f"{promoted} later, the old one was demoted (or, killed, gone) {demoted} later "
            f"({fo.old_master} -> {fo.new_master or '?'}); 503s allowed until "
            f"{FAILOVER_GRACE_SECONDS:.0f} s after the demotion |"
        )
        if fo.error:
            print(f"| failover error | {fo.error} |")
    if fo.first_503 is None or fo.last_503 is None:
        print("| 503 window | no 503 seen |")
    else:
        print(
            f"| 503 window (first to last 503) | t={fo.first_503:.1f} s to t={fo.last_503:.1f} s "
            f"({fo.last_503 - fo.first_503:.2f} s, {fo.count_503} responses) |"
        )
    print(f"| sessions lost | {lost_users} users ({lost_events} times) |")
    print(
        f"| sign-outs that reached the other gateway only within the cache's bound "
        f"({CACHE_BOUND_SECONDS:.0f} s), during the failover | {soak.late_sign_outs} |"
    )
    print(
        f"| sign-ins / sign-outs | {sum(u.sign_ins for u in users)} / "
        f"{sum(u.sign_outs for u in users)} |"
    )
    print(
        f"| refresh_token grants at the identity provider | {refreshes[1]} during traffic "
        f"({refreshes[0]} before it) |"
    )
    print(
        f"| this script's CPU during traffic (with the upstream and identity provider threads) "
        f"| {own_cpu:.1f} s ({own_cpu / duration:.0%}) |"
    )
    clean = True
    for i, (g, drain) in enumerate(zip(gateways, drains, strict=True)):
        delta = (
            ""
            if g.rss_start is None or g.rss_end is None
            else f" ({g.rss_end - g.rss_start:+d} KiB)"
        )
        rss = f"{kib(g.rss_start)} -> {kib(g.rss_end)}{delta}"
        print(f"| gateway {i + 1} RSS after warm-up -> end | {rss} |")
        if g.cpu_start is not None and g.cpu_end is not None:
            cpu = g.cpu_end - g.cpu_start
            print(f"| gateway {i + 1} CPU during traffic | {cpu:.1f} s ({cpu / duration:.0%}) |")
        exited = f"killed after {SHUTDOWN_SECONDS:.0f} s" if g.killed else f"exit {g.exit_code}"
        tracebacks = (
            "no Traceback" if not drain.tracebacks else f"{drain.tracebacks} Traceback lines"
        )
        print(f"| gateway {i + 1} on SIGTERM | {exited}, {tracebacks} in stderr |")
        levels = ", ".join(f"{level} {n}" for level, n in drain.levels.most_common())
        print(f"| gateway {i + 1} log lines | {drain.lines} ({levels}) |")
        clean = clean and g.exit_code == 0 and not drain.tracebacks

    if soak.examples:
        print(f"\nFirst {len(soak.examples)} unexpected outcomes:\n")
        print("| sent at | kind | request | gateway | outcome |")
        print("|---:|---|---|---:|---|")
        for e in soak.examples:
            print(
                f"| {e.at:.1f} s | {e.kind} | {e.method} {e.path} | {e.gateway + 1} | {e.outcome} |"
            )
    for i, drain in enumerate(drains):
        if drain.notable:
            print(f"\nGateway {i + 1} warnings and errors (message x count):")
            for message, n in drain.notable.most_common(8):
                print(f"- {message} x{n}")
        for line in drain.traceback_examples:
            print(f"- gateway {i + 1} Traceback: {line}")
    passed = (
        soak.unexpected == 0
        and lost_events == 0
        and clean
        and fo.settled is not None
        and fo.error is None
    )
    print(f"\n**{'PASS' if passed else 'FAIL'}**")
    return 0 if passed else 1


async def run(args: argparse.Namespace) -> int:
    duration = args.minutes * 60
    idp_runner = ThreadedDevIdp(DevIdpConfig(port=0, strict_rotation=args.strict_rotation))
    idp = idp_runner.start()
    upstream: ThreadedServer | None = None
    sentinels: SentinelSet | None = None
    gateways: list[GatewayProcess] = []
    drains: list[StderrDrain] = []
    try:
        upstream = ThreadedServer(make_upstream_app).start()
        sentinels = SentinelSet(replicas=args.replicas, node_args=OPERATOR_NODE_ARGS).start()
        settings = settings_for(
            idp,
            upstream.url,
            session_store="redis",
            cookie_secret=secrets.token_urlsafe(32),
            scopes=SCOPE,
            redis={"sentinels": sentinels.addresses},
            # Every simulated user comes from 127.0.0.1, where real ones have addresses of their
            # own: the per-address limit on sign-in starts would throttle the soak, not a client.
            signin={"max_starts_per_minute": 100_000},
        )
        for _ in range(2):
            gateways.append(GatewayProcess(settings))
            drains.append(StderrDrain(gateways[-1].process))
        for gateway in gateways:
            await gateway.ready()
        # Every token the provider issues from now on is due this soon: refreshes all along.
        idp.set_lifetimes(refresh_in=args.refresh_seconds)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
        connector = aiohttp.TCPConnector(limit=max(100, 2 * args.users))
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
        ) as client:
            soak = Soak(
                gateways,
                client,
                idp_ssl(idp.ca_path),
                args.think_ms / 1000,
                args.sign_out_seconds,
            )
            users = [User(n, USERS[n % len(USERS)]) for n in range(args.users)]
            await asyncio.gather(*(soak.warm_up(user) for user in users))
            reports = []
            for gateway in gateways:
                rss, cpu = usage(gateway.process.pid)
                reports.append(GatewayReport(rss_start=rss, cpu_start=cpu))
            own_cpu = time.process_time()
            before = len(idp.token_requests("refresh_token"))
            before_traffic = soak.total()
            began = soak.now()
            until = began + duration
            failover = asyncio.create_task(
                soak.fail_over(began + duration / 2, sentinels, args.fault)
            )
            await asyncio.gather(*(soak.traffic(user, until) for user in users))
            await failover
            ended = soak.now()
            during = len(idp.token_requests("refresh_token")) - before
            for gateway, gateway_report in zip(gateways, reports, strict=True):
                gateway_report.rss_end, gateway_report.cpu_end = usage(gateway.process.pid)
            own_cpu = time.process_time() - own_cpu
        await asyncio.gather(
            *(
                asyncio.to_thread(shut_down, g, d, r)
                for g, d, r in zip(gateways, drains, reports, strict=True)
            )
        )
        return report(
            soak,
            users,
            traffic=(began, ended),
            before_traffic=before_traffic,
            own_cpu=own_cpu,
            refreshes=(before, during),
            gateways=reports,
            drains=drains,
        )
    finally:
        for gateway in gateways:
            if gateway.process.poll() is None:
                gateway.process.kill()
                gateway.process.wait()
        if sentinels is not None:
            sentinels.cleanup()
        if upstream is not None:
            upstream.stop()
        idp_runner.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="traffic phase length")
    parser.add_argument("--users", type=int, default=20, help="simulated users")
    parser.add_argument(
        "--think-ms", type=float, default=50.0, help="mean pause between a user's requests"
    )
    parser.add_argument(
        "--sign-out-seconds",
        type=float,
        default=120.0,
        help="mean time from a user's sign-in to their sign-out",
    )
    parser.add_argument(
        "--refresh-seconds", type=int, default=30, help="refresh_in of every issued token"
    )
    parser.add_argument(
        "--fault",
        choices=("failover", "kill"),
        default="failover",
        help="at the midpoint: SENTINEL FAILOVER, or kill -9 of the master",
    )
    parser.add_argument("--replicas", type=int, default=2, help="Redis replicas of the master")
    parser.add_argument(
        "--strict-rotation",
        action="store_true",
        help="a refresh token works once (stricter than Entra, which keeps the old one valid)",
    )
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
