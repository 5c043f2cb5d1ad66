"""Memory per session, measured: what one real signed-in session occupies in Redis, what 10,000
such sessions occupy in the in-memory store, and what 10,000 decoded copies in the in-process
session cache cost (issue 6, scope 3).

    .venv/bin/python bench/memory.py [--sessions 10000]

It signs in for real (development identity provider, a gateway process on a real redis-server,
a bearer token for an API scope, so the session holds an access token and its MSAL token cache a
refresh token), reads every key that sign-in wrote with STRLEN and MEMORY USAGE, then stores that
many copies of the same sealed values in a MemoryStorage in this process and reports the growth of
this process's resident memory (and what tracemalloc counts, which excludes allocator slack).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import secrets
import time
import tracemalloc

from redis import Redis
from support.browser import Browser
from support.gateway import PUBLIC_URL, SESSION_COOKIE, GatewayProcess, idp_ssl, settings_for
from support.idp import ThreadedDevIdp
from support.procfs import rss_kib
from support.redis_server import RedisServer
from support.threaded import ThreadedServer
from support.upstream import make_upstream_app

from devidp.config import DevIdpConfig
from gateway.auth.headers import vouched_headers
from gateway.auth.identity import SessionIdentity
from gateway.config.settings import Settings
from gateway.sessions.cache import SessionCache
from gateway.sessions.sealing import Sealer
from gateway.sessions.store import SessionRecord
from gateway.store.memory import MemoryStorage

SCOPE = "api://upstream/read"


def one_real_session(redis: RedisServer) -> tuple[dict[str, bytes], dict[str, int], str]:
    """Sign in once through a gateway; the keys it wrote, their Redis memory, the cookie secret."""

    async def sign_in(secret: str) -> None:
        idp_thread = ThreadedDevIdp(DevIdpConfig(port=0))
        idp = idp_thread.start()
        upstream = ThreadedServer(make_upstream_app).start()
        settings = settings_for(
            idp,
            upstream.url,
            session_store="redis",
            redis_url=redis.url,
            cookie_secret=secret,
            scopes=SCOPE,
        )
        gateway = GatewayProcess(settings)
        try:
            await gateway.ready()
            browser = Browser(gateway.url, PUBLIC_URL, idp_ssl(idp.ca_path))
            await browser.sign_in("/")
            assert browser.cookie(SESSION_COOKIE), "sign-in failed"
            answer = await browser.get("/x", headers={"Accept": "application/json"})
            assert answer.status == 200, answer.status
            await browser.close()
        finally:
            gateway.stop()
            upstream.stop()
            idp_thread.stop()

    secret = secrets.token_urlsafe(32)
    asyncio.run(sign_in(secret))
    with Redis.from_url(redis.url) as client:
        keys = [key.decode() for key in client.keys("gw:*")]
        values = {key: client.get(key) or b"" for key in keys}
        usage = {key: int(client.memory_usage(key) or 0) for key in keys}
    return values, usage, secret


def measure_memory_store(values: dict[str, bytes], sessions: int) -> tuple[int, int, MemoryStorage]:
    """(RSS growth, traced bytes, the store) for `sessions` copies of one session's records; the
    store is returned so that it stays alive while the next measurement runs."""

    async def fill(storage: MemoryStorage) -> None:
        for index in range(sessions):
            for key, value in values.items():
                # A distinct key and a distinct copy of the bytes, as real sessions would have.
                await storage.set(f"{key}:{index:06d}", bytes(bytearray(value)), 86_400)

    storage = MemoryStorage()
    gc.collect()
    before_rss = rss_kib()
    tracemalloc.start()
    asyncio.run(fill(storage))
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gc.collect()
    return (rss_kib() - before_rss) * 1024, traced, storage


def measure_session_cache(
    record_bytes: bytes, sessions: int
) -> tuple[int, int, SessionCache[SessionRecord]]:
    """(RSS growth, traced bytes) for `sessions` decoded records held by a SessionCache, each
    with the identity headers the proxy derives once per record."""
    template = SessionRecord.decode(record_bytes)
    settings = Settings(
        upstream="http://127.0.0.1:8080",
        public_url=PUBLIC_URL,
        client_id="bench",
        client_secret="bench",  # noqa: S106 (never used: nothing signs in here)
        authority="https://login.microsoftonline.com/contoso.onmicrosoft.com",
        scopes=SCOPE,
    )
    cache: SessionCache[SessionRecord] = SessionCache(60.0, sessions + 1)
    cache.feed_changed(True)
    gc.collect()
    before_rss = rss_kib()
    tracemalloc.start()
    for index in range(sessions):
        # Decoding each copy gives every entry its own objects, as reads from the store do.
        record = SessionRecord.decode(template.encode())
        record.derived["identity-headers"] = vouched_headers(
            SessionIdentity(f"{index:064d}", record),
            (SCOPE,),
            settings,
            with_token=True,
            with_token_store=True,
        )
        cache.put(f"gw:session:{index:064d}", record, cache.generation())
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gc.collect()
    assert len(cache) == sessions
    return (rss_kib() - before_rss) * 1024, traced, cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    args = parser.parse_args()
    redis = RedisServer().start()
    try:
        values, usage, secret = one_real_session(redis)
    finally:
        redis.cleanup()
    session_key = next(key for key in values if key.startswith("gw:session:"))
    sealer = Sealer(secret.encode())
    record_bytes = sealer.open(session_key, values[session_key])
    store_rss, store_traced, kept_store = measure_memory_store(values, args.sessions)
    cache_rss, cache_traced, kept_cache = measure_session_cache(record_bytes, args.sessions)
    n = args.sessions
    print("| key written by one sign-in | value bytes | Redis MEMORY USAGE |")
    print("|---|---:|---:|")
    for key in sorted(values):
        kind = key.split(":")[1]
        print(f"| `gw:{kind}:…` | {len(values[key]):,} | {usage[key]:,} |")
    total_value = sum(len(v) for v in values.values())
    print(f"| **per session** | **{total_value:,}** | **{sum(usage.values()):,}** |")
    print()
    print(f"| {n:,} sessions | resident memory growth | per session | traced by Python |")
    print("|---|---:|---:|---:|")
    print(
        f"| in-memory store (all records) | {store_rss / 2**20:.1f} MiB | "
        f"{store_rss / n:,.0f} B | {store_traced / n:,.0f} B |"
    )
    print(
        f"| in-process session cache (decoded) | {cache_rss / 2**20:.1f} MiB | "
        f"{cache_rss / n:,.0f} B | {cache_traced / n:,.0f} B |"
    )
    print(f"\n(measured {time.strftime('%Y-%m-%d')}, sealed record of {len(record_bytes)} B)")
    assert len(kept_store) and len(kept_cache)  # both were alive for both measurements


if __name__ == "__main__":
    main()
