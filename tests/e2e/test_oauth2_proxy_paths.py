"""oauth2-proxy's paths for teams moving from it (issue 16 item 7): off by default (the app's own
/ping stays the app's), and when on, each is the gateway's endpoint under oauth2-proxy's name."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from support.browser import API
from support.fixtures import Launch, signed_in


async def test_off_by_default_the_paths_are_the_apps(launch: Launch) -> None:
    running = await launch(proxy={"public_paths": "/ping"})
    echoed = await (await running.browser.get("/ping", headers=API)).json()
    assert echoed["path"] == "/ping"  # the application answered


async def test_the_paths_map_to_the_gateways_endpoints(launch: Launch) -> None:
    running = await launch(proxy={"oauth2_proxy_paths": True})
    assert (await (await running.browser.get("/ping", headers=API)).json()) == {"status": "ok"}
    ready = await running.browser.get("/ready", headers=API)
    assert (await ready.json())["status"] == "ready"
    assert (await running.browser.get("/oauth2/auth", headers=API)).status == 401
    assert (await running.browser.get("/oauth2/userinfo", headers=API)).status == 401
    start = await running.browser.get("/oauth2/start?rd=/reports", headers=API)
    assert start.status == 302
    location = urlsplit(start.headers["Location"])
    assert location.path == "/.auth/login/aad"
    assert parse_qs(location.query) == {"post_login_redirect_uri": ["/reports"]}
    await signed_in(running, user="alice")
    info = await (await running.browser.get("/oauth2/userinfo", headers=API)).json()
    assert info == {
        "user": "0b7e2c1d-4a5f-4e3b-8c9d-1e2f3a4b5c6d",
        "email": "alice@contoso.example",
        "groups": info["groups"],
        "preferredUsername": "alice@contoso.example",
    }
    assert info["groups"]
    verified = await running.browser.get("/oauth2/auth", headers=API)
    assert verified.status == 200
    assert verified.headers["X-Forwarded-User"] == info["user"]
    out = await running.browser.get("/oauth2/sign_out?rd=/bye", headers=API)
    assert out.headers["Location"] == "/.auth/logout?post_logout_redirect_uri=%2Fbye"
    # A foreign return target is passed on, and refused there like any other.
    foreign = await running.browser.get("/oauth2/start?rd=https://evil.example/", headers=API)
    assert (await running.browser.get(foreign.headers["Location"], headers=API)).status == 400
