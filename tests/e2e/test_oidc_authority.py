"""The same sign-in against a third-party, standards-compliant OpenID provider (node
oidc-provider, installed from npm) through GATEWAY_OIDC_AUTHORITY and the real MSAL."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from urllib.parse import parse_qs, urlsplit

import pytest
from support.browser import API, AuthResponse, Browser
from support.gateway import PUBLIC_URL, in_process
from support.third_party_op import ThirdPartyOP, sign_in, third_party_op
from support.threaded import ThreadedServer
from support.upstream import upstream_headers

from gateway.config.settings import Settings

__all__ = ["third_party_op"]


@pytest.fixture
async def browser(third_party_op: ThirdPartyOP, upstream: ThreadedServer) -> AsyncIterator[Browser]:
    settings = Settings(
        upstream=upstream.url,
        public_url=PUBLIC_URL,
        oidc_authority=third_party_op.issuer,
        client_id=third_party_op.client_id,
        client_secret=third_party_op.client_secret,
        ca_bundle=third_party_op.ca_path,
        signin={"prompt": "consent"},  # this provider grants offline_access only with consent
    )
    async with AsyncExitStack() as stack:
        url, _ = await stack.enter_async_context(in_process(settings))
        browser = Browser(url, PUBLIC_URL, third_party_op.ssl_context())
        stack.push_async_callback(browser.close)
        yield browser


async def test_sign_in_refresh_and_sign_out_with_a_third_party_provider(
    browser: Browser, third_party_op: ThirdPartyOP
) -> None:
    authorize_url = await browser.start_sign_in("/dashboard")
    assert authorize_url.startswith(third_party_op.issuer)
    fields = await sign_in(
        browser.session, authorize_url, login="alice", ssl=third_party_op.ssl_context()
    )
    response = await browser.deliver(AuthResponse("post", third_party_op.redirect_uri, fields))
    assert response.status == 302, await response.text()
    assert response.headers["Location"] == "/dashboard"

    seen = upstream_headers(await (await browser.get("/dashboard", headers=API)).json())
    assert seen["x-ms-client-principal-id"] == ["alice"]  # `sub`: there is no `oid`
    assert seen["x-forwarded-user"] == ["alice"]
    assert seen["x-ms-client-principal-name"] == ["alice@example.test"]
    principal = json.loads(base64.b64decode(seen["x-ms-client-principal"][0]))
    assert {"typ": "iss", "val": third_party_op.issuer} in principal["claims"]

    refreshed = await browser.session.post(browser.gateway_url + "/.auth/refresh", headers=API)
    assert refreshed.status == 200, await refreshed.text()
    assert (await browser.get("/dashboard", headers=API)).status == 200

    logout = await browser.get("/.auth/logout?post_logout_redirect_uri=/")
    assert logout.status == 302
    location = urlsplit(logout.headers["Location"])
    assert logout.headers["Location"].startswith(third_party_op.issuer)
    query = parse_qs(location.query)
    assert query["post_logout_redirect_uri"] == [PUBLIC_URL + "/"]
    assert query["client_id"] == [third_party_op.client_id]
    assert query["id_token_hint"][0].count(".") == 2
    assert (await browser.get("/dashboard", headers=API)).status == 401


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"iss": "https://attacker.example/op"}, 400),  # mix-up: another provider's answer
        ({"iss": ""}, 400),
        ({"iss": None}, 400),  # removed: this provider always sends it
    ],
    ids=["other-issuer", "empty", "missing"],
)
async def test_the_callback_checks_the_issuer_the_provider_names(
    browser: Browser, third_party_op: ThirdPartyOP, change: dict[str, str | None], status: int
) -> None:
    """RFC 9207: the provider advertises authorization_response_iss_parameter_supported, so every
    answer must name it; the untouched answer passes (the test above)."""
    authorize_url = await browser.start_sign_in("/dashboard")
    fields = await sign_in(
        browser.session, authorize_url, login="alice", ssl=third_party_op.ssl_context()
    )
    assert fields["iss"] == third_party_op.issuer
    for name, value in change.items():
        if value is None:
            del fields[name]
        else:
            fields[name] = value
    response = await browser.deliver(AuthResponse("post", third_party_op.redirect_uri, fields))
    assert response.status == status
    assert browser.cookie("__Host-msal-gateway") is None
