"""The gateway's own pages as a running gateway serves them: a branded, hardened error page on a
proxied path, an unreachable application, the signed-out page, and an identity provider's
refusal, each with the next action it offers."""

from __future__ import annotations

from typing import Any, Final

from support.browser import NAVIGATE
from support.fixtures import Launch

from gateway.errors import Forbidden, IdentityProviderError, UpstreamTimeout
from gateway.web.pages import (
    PAGE_CSP,
    content_security_policy,
)

# ---- through a running gateway ----

LOGO: Final = "https://cdn.example/logo.png"


async def test_an_error_page_on_a_proxied_path_is_branded_and_hardened(launch: Launch) -> None:
    running = await launch(
        policy={"rules": [{"path": "/closed/", "allow": "deny"}]},
        pages={"title": "Contoso", "logo_url": LOGO},
    )
    await running.browser.sign_in("/")
    response = await running.browser.get("/closed/x")
    html = await response.text()
    assert response.status == 403
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.headers["Content-Security-Policy"] == content_security_policy(
        running.settings.pages
    )
    assert "img-src https://cdn.example;" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Request-Id"] in html
    assert f"<h1>{Forbidden.title}</h1>" in html and "Sign out to use another account" in html


async def test_an_unreachable_application_offers_to_try_again(launch: Launch) -> None:
    running = await launch(upstream="http://127.0.0.1:9", proxy={"public_paths": "/open/"})
    response = await running.browser.get("/open/")
    html = await response.text()
    assert response.status == 502, html
    assert 'class="primary" href="">Try again</a>' in html
    assert UpstreamTimeout.status == 504  # the same page, for a timeout


async def test_sign_out_ends_on_the_signed_out_page(launch: Launch) -> None:
    running = await launch(pages={"title": "Contoso"})
    browser = running.browser
    await browser.sign_in("/")
    response = await browser.get("/.auth/logout")
    location = response.headers["Location"]
    assert "post_logout_redirect_uri=https%3A%2F%2Fapp.test%2F.auth%2Flogout%2Fcomplete" in location
    # The identity provider sends the browser back: a cross-site navigation, without the cookie.
    back = await browser.get(
        "/.auth/logout/complete", headers={**NAVIGATE, "Sec-Fetch-Site": "cross-site"}
    )
    html = await back.text()
    assert back.status == 200
    assert "<h1>You have signed out</h1>" in html and "Contoso" in html
    assert back.headers["X-Request-Id"] in html
    assert back.headers["Content-Security-Policy"] == PAGE_CSP


async def test_the_signed_out_page_is_never_shown_to_a_signed_in_browser(launch: Launch) -> None:
    running = await launch()
    browser = running.browser
    await browser.sign_in("/")
    cross = {**NAVIGATE, "Sec-Fetch-Site": "cross-site"}
    response = await browser.get("/.auth/logout/complete", headers=cross)
    assert response.status == 302  # a link from elsewhere neither signs out nor claims it did
    assert response.headers["Location"] == "/"
    assert browser.cookie(running.settings.session_cookie_name) is not None


async def test_an_identity_provider_error_offers_to_sign_in_again(launch: Launch, idp: Any) -> None:
    running = await launch()
    browser = running.browser
    auth = await browser.authorize(await browser.start_sign_in("/"))
    idp.fail("token", 500, {"error": "server_error"})
    response = await browser.deliver(auth)
    html = await response.text()
    assert response.status == IdentityProviderError.status
    assert 'href="/.auth/login/aad">Try signing in again</a>' in html
