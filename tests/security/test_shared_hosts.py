"""Deployments that share a host or a domain with other applications (issue 16 items 1, 2): what
the gateway tells its application about the host it was reached on, and which gateways' cookies
the application receives. Found in review: a Host header that is not a host name passes the
return-host wildcard, and a gateway under a nested path passes on the session id of the gateway
above it."""

from __future__ import annotations

from typing import Any, Final

import aiohttp
import pytest
from pydantic import ValidationError
from support.browser import API
from support.fixtures import Launch, Running
from support.upstream import upstream_headers

from gateway.config.settings import Settings

DOMAIN: Final = "apps.test"
SUBDOMAINS: Final[dict[str, Any]] = {
    "public_url": f"https://auth.{DOMAIN}",
    "session": {"cookie_domain": DOMAIN},
    "signin": {"return_hosts": f"*.{DOMAIN}"},
    "policy": {"rules": [{"path": "/public/", "allow": "public"}]},
}
# Ends in ".apps.test", so a suffix match takes it for a return host; but an application that
# builds https://<X-Forwarded-Host>/reset-password links (or a cache keyed on it) sends the user to
# evil.example. None of them is a host name.
NOT_HOST_NAMES: Final = (
    f"evil.example?.{DOMAIN}",
    f"evil.example#.{DOMAIN}",
    f"evil.example/.{DOMAIN}",
    f"evil.example/x.{DOMAIN}:443",
    f"evil.example\\.{DOMAIN}",
    f"evil.example@wiki.{DOMAIN}",
    f"evil.example%2f.{DOMAIN}",
)
ID: Final = "A" * 43  # the shape of an id the gateway mints


async def _echoed(running: Running, path: str, headers: dict[str, str]) -> dict[str, list[str]]:
    async with (
        aiohttp.ClientSession() as client,
        client.get(running.url + path, headers={**API, **headers}) as answer,
    ):
        assert answer.status == 200, answer.status
        return upstream_headers(await answer.json())


@pytest.mark.threat("FA-05", "HD-07")
@pytest.mark.parametrize("host", NOT_HOST_NAMES)
async def test_a_host_header_that_is_no_host_name_is_never_named_to_the_app(
    launch: Launch, host: str
) -> None:
    running = await launch(**SUBDOMAINS)
    seen = await _echoed(running, "/public/reset", {"Host": host})
    assert seen["x-forwarded-host"] == [f"auth.{DOMAIN}"], seen["x-forwarded-host"]
    assert seen.get("host", [f"auth.{DOMAIN}"]) != [host]


@pytest.mark.threat("CK-09")
@pytest.mark.parametrize(
    "cookie",
    [
        "__Host-msal-gateway",  # a gateway at the root of the host (Path=/)
        "__Secure-msal-gateway-a",  # a gateway at /a (Path=/a)
        "__Secure-msal-gateway-a-signin",
    ],
)
async def test_a_nested_gateway_never_hands_on_the_session_of_the_one_above(
    launch: Launch, cookie: str
) -> None:
    """docs/configuration.md: nested prefixes such as /a and /a/b "never receive, read or
    overwrite each other's cookies". The browser sends the cookies of /a (and of /) with every
    request under /a/b: the gateway at /a/b must not pass them on to its application."""
    running = await launch(
        public_url="https://app.test/a/b",
        policy={"rules": [{"path": "/a/b/public/", "allow": "public"}]},
    )
    seen = await _echoed(running, "/a/b/public/x", {"Cookie": f"{cookie}={ID}; theme=dark"})
    assert seen["cookie"] == ["theme=dark"], seen["cookie"]


@pytest.mark.threat("RD-11", "RD-19")
@pytest.mark.parametrize(
    "target",
    [f"https://evil.example%2f.{DOMAIN}/", f"https://evil.example%2F.{DOMAIN}/x"],
)
async def test_a_return_host_is_a_host_name_not_an_escaped_one(launch: Launch, target: str) -> None:
    """The wildcard matched a suffix of the netloc as written: "%2f" (a "/" once a browser
    decodes the host) passed, and the gateway sent the browser to that address."""
    running = await launch(**SUBDOMAINS)
    async with (
        aiohttp.ClientSession() as client,
        client.get(
            running.url + "/.auth/login/aad",
            params={"post_login_redirect_uri": target},
            headers={**API, "Host": f"auth.{DOMAIN}"},
            allow_redirects=False,
        ) as answer,
    ):
        assert answer.status == 400, (answer.status, answer.headers.get("Location"))


@pytest.mark.threat("PA-09", "PA-17")
@pytest.mark.parametrize(
    "rule",
    [
        {"path": "/admin/", "groups": "00000000-0000-0000-0000-00000000ad01"},
        {"path": "/admin", "roles": "Admin"},
        {"path": "/closed/", "allow": "deny"},
        {"path": "/pay/", "roles": "Admin"},  # "/pay" is not "/payroll"
    ],
)
def test_a_protective_rule_outside_the_prefix_is_refused(rule: dict[str, str]) -> None:
    """Under GATEWAY_PUBLIC_URL=https://host/payroll rules match the path with the prefix
    (docs/configuration.md). A rule written without it governs nothing the gateway relays, so
    /payroll/admin falls to the default (any signed-in user): less than the rule asked for, and
    with GATEWAY_PROXY__STRIP_PREFIX the application serves it as /admin. A configuration
    mistake: refused with a line naming the setting, never silently weaker."""
    with pytest.raises(ValidationError) as refused:
        Settings(
            upstream="http://127.0.0.1:8080",
            public_url="https://intranet.example.com/payroll",
            client_id="00000000-0000-0000-0000-0000000000c1",
            tenant_id="contoso.onmicrosoft.com",
            client_secret="client-secret-value",
            proxy={"strip_prefix": True},
            policy={"rules": [rule]},
        )
    assert f"GATEWAY_POLICY__RULES[0].path: {rule['path']} is outside" in str(refused.value)
