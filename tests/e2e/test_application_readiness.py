"""The application's readiness (issue 16 item 6): with GATEWAY_PROXY__UPSTREAM_READY_PATH set,
/.auth/readyz is ready only while the application answers that path with 2xx/3xx, asked at most
every 2 s; unset, readiness does not depend on the application."""

from __future__ import annotations

import asyncio

from aiohttp import web
from support.fixtures import Launch
from support.threaded import ThreadedServer


def flaky_app(state: dict[str, int]) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        state["asked"] += 1
        return web.Response(status=state["status"])

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    return app


async def test_readiness_follows_the_applications_answer(launch: Launch) -> None:
    state = {"status": 503, "asked": 0}
    server = ThreadedServer(lambda: flaky_app(state)).start()
    try:
        running = await launch(
            wait_ready=False, upstream=server.url, proxy={"upstream_ready_path": "/healthz"}
        )
        first = await running.browser.get("/.auth/readyz")
        assert first.status == 503
        assert (await first.json())["checks"]["application"] == "answered 503"
        for _ in range(5):  # cached: the application is asked once for these
            await running.browser.get("/.auth/readyz")
        assert state["asked"] == 1
        state["status"] = 200
        await asyncio.sleep(2.1)
        ready = await running.browser.get("/.auth/readyz")
        assert ready.status == 200
        assert (await ready.json())["checks"]["application"] == "ok"
    finally:
        server.stop()
    await asyncio.sleep(2.1)
    gone = await running.browser.get("/.auth/readyz")
    assert gone.status == 503
    assert (await gone.json())["checks"]["application"] == "unreachable"


async def test_without_the_setting_the_application_is_not_asked(launch: Launch) -> None:
    running = await launch()
    answer = await (await running.browser.get("/.auth/readyz")).json()
    assert "application" not in answer["checks"]
