"""An application under a path (issue 16 item 1): GATEWAY_PUBLIC_URL=https://app.test/payroll puts
the gateway's endpoints, its cookies and every return target under /payroll, and nothing outside
it is answered but the probes. Scripted browsers against in-process gateways; the two-gateways-
behind-one-nginx case in a real Chromium is tests/e2e/test_sub_paths_browser.py."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from support.browser import API, NAVIGATE
from support.fixtures import Launch, Running
from support.raw_http import raw_request

PREFIX = "/payroll"
PUBLIC = "https://app.test" + PREFIX


def echoed_headers(body: dict[str, Any]) -> dict[str, str]:
    return {name.lower(): value for name, value in body["headers"]}


async def signed_in_under_prefix(running: Running, path: str = PREFIX + "/reports") -> None:
    response = await running.browser.sign_in(path)
    assert response.status == 302, await response.text()
    assert response.headers["Location"] == path


async def test_sign_in_runs_under_the_prefix_and_comes_back_inside_it(launch: Launch) -> None:
    running = await launch(public_url=PUBLIC)
    first = await running.browser.get(PREFIX + "/reports?month=5")
    assert first.status == 302
    location = urlsplit(first.headers["Location"])
    assert location.path == PREFIX + "/.auth/login/aad"
    assert parse_qs(location.query) == {"post_login_redirect_uri": [PREFIX + "/reports?month=5"]}
    start = await running.browser.get(first.headers["Location"])
    authorize = parse_qs(urlsplit(start.headers["Location"]).query)
    assert authorize["redirect_uri"] == [PUBLIC + "/.auth/login/aad/callback"]
    binding = start.headers["Set-Cookie"]
    assert binding.startswith("__Secure-msal-gateway-payroll-signin=")
    assert "Path=/payroll;" in binding + ";" and "Domain" not in binding
    auth = await running.browser.authorize(start.headers["Location"])
    done = await running.browser.deliver(auth)
    assert done.status == 302 and done.headers["Location"] == PREFIX + "/reports?month=5"
    session = done.headers["Set-Cookie"]
    assert session.startswith("__Secure-msal-gateway-payroll=")
    assert "Path=/payroll;" in session + ";" and "Domain" not in session

    echoed = await (await running.browser.get(PREFIX + "/reports", headers=API)).json()
    assert echoed["raw_path"] == PREFIX + "/reports"  # kept: the application knows its base
    headers = echoed_headers(echoed)
    assert "x-forwarded-prefix" not in headers
    assert "msal-gateway" not in headers.get("cookie", "")
    me = await running.browser.get(PREFIX + "/.auth/me", headers=API)
    assert me.status == 200
    # The bare prefix is the application's too.
    assert (await running.browser.get(PREFIX, headers=API)).status == 200


async def test_nothing_outside_the_prefix_is_answered_but_the_probes(launch: Launch) -> None:
    running = await launch(public_url=PUBLIC)
    await signed_in_under_prefix(running)
    # The session cookie is scoped to the prefix, so send it by hand to show that it is not
    # what refuses these: the paths are not this gateway's.
    cookie = running.settings.session_cookie_name
    value = running.browser.cookie(cookie)
    assert value is not None
    for path in ("/", "/reports", "/payrollx/", "/other/payroll/", "/.auth/me", "/.auth/login/aad"):
        for headers in (API, NAVIGATE):
            answer = await running.browser.get(
                path, headers={**headers, "Cookie": f"{cookie}={value}"}
            )
            assert answer.status == 404, (path, answer.status)
    for probe in ("/.auth/healthz", "/.auth/readyz", PREFIX + "/.auth/healthz"):
        assert (await running.browser.get(probe, headers=API)).status == 200, probe
    # Routed on the decoded path, but not the prefix as browsers send it: refused too, signed in
    # or not (sent byte for byte: client libraries would normalise the %72).
    session = f"Cookie: {cookie}={value}\r\n"
    for target in ("/pay%72oll/reports", "/%70ayroll/", "/payroll%2Freports"):
        for extra in ("", session):
            status, _ = await raw_request(running.url, target, extra)
            assert status == 404, (target, status)


@pytest.mark.parametrize(
    "target",
    [
        "/reports",  # outside the prefix
        "/payrollx/reports",
        "/payroll/../admin",
        "/payroll/%2e%2e/admin",
        "/payroll%2F..%2Fadmin",
        "/payroll/.auth/me",
        "https://app.test/reports",
        "https://evil.example/payroll/",
    ],
)
async def test_return_targets_stay_inside_the_prefix(launch: Launch, target: str) -> None:
    running = await launch(public_url=PUBLIC)
    for endpoint, name in (
        ("/.auth/login/aad", "post_login_redirect_uri"),
        ("/.auth/logout", "post_logout_redirect_uri"),
    ):
        answer = await running.browser.get(PREFIX + endpoint, headers=API, params={name: target})
        assert answer.status == 400, (endpoint, target, answer.status)


async def test_sign_out_ends_under_the_prefix(launch: Launch) -> None:
    running = await launch(public_url=PUBLIC)
    await signed_in_under_prefix(running)
    out = await running.browser.get(PREFIX + "/.auth/logout")
    assert out.status == 302
    cleared = out.headers["Set-Cookie"]
    assert cleared.startswith("__Secure-msal-gateway-payroll=") and "Max-Age=0" in cleared
    assert "Path=/payroll" in cleared
    logout = parse_qs(urlsplit(out.headers["Location"]).query)
    assert logout["post_logout_redirect_uri"] == [PUBLIC + "/.auth/logout/complete"]
    page = await running.browser.get(PREFIX + "/.auth/logout/complete")
    assert page.status == 200
    assert 'href="/payroll/.auth/login/aad"' in await page.text()
    again = await running.browser.get(PREFIX + "/reports")
    assert again.status == 302


async def test_a_stripped_prefix_reaches_the_app_as_x_forwarded_prefix(launch: Launch) -> None:
    running = await launch(public_url=PUBLIC, proxy={"strip_prefix": True})
    await signed_in_under_prefix(running)
    for path, upstream_path in (
        (PREFIX + "/reports?month=5", "/reports"),
        (PREFIX + "/", "/"),
        (PREFIX, "/"),
        (PREFIX + "?x=1", "/"),
    ):
        echoed = await (
            await running.browser.get(
                path, headers={**API, "X-Forwarded-Prefix": "/evil", "x-forwarded-prefix": "/x"}
            )
        ).json()
        assert echoed["path"] == upstream_path, path
        headers = [(k.lower(), v) for k, v in echoed["headers"]]
        assert [v for k, v in headers if k == "x-forwarded-prefix"] == [PREFIX]


async def test_the_bare_prefix_with_a_query_comes_back_after_sign_in(launch: Launch) -> None:
    running = await launch(public_url=PUBLIC)
    done = await running.browser.sign_in(PREFIX + "?tab=2")
    assert done.status == 302 and done.headers["Location"] == PREFIX + "?tab=2"
