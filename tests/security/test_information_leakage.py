"""Information leakage (THREATS.md A10: LK-01, LK-03): /.auth/me never shows the refresh token
(and other tokens only when configured), answers no hostile origin's CORS request, and the
identity provider's errors reach the browser as a request id, never as their description or a
token; end to end against in-process gateways and the development identity provider's faults."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import pytest
from support.browser import API, NAVIGATE
from support.fixtures import Launch, Running, signed_in
from support.gateway import SESSION_COOKIE
from support.jwts import FAKE_JWT, JWT_MARK
from support.upstream import upstream_headers

# ---- A10 / LK-01: /.auth/me ----


@pytest.mark.threat("LK-01")
async def test_me_has_no_tokens_and_is_json_with_nosniff(launch: Launch) -> None:
    running = await launch(scopes="api://upstream/read")
    await signed_in(running)
    bearer = upstream_headers(await (await running.browser.get("/x", headers=API)).json())
    [authorization] = bearer["authorization"]
    access_token = authorization.removeprefix("Bearer ")
    response = await running.browser.get("/.auth/me", headers=API)
    assert response.status == 200
    text = await response.text()
    assert access_token not in text
    assert JWT_MARK not in text  # no id, access or refresh token in any field
    [entry] = json.loads(text)
    assert not {"access_token", "id_token", "refresh_token"} & set(entry)
    assert response.headers["Content-Type"].split(";")[0] == "application/json"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.threat("LK-01")
async def test_tokens_in_me_when_enabled_but_never_the_refresh_token(launch: Launch) -> None:
    running = await launch(scopes="api://upstream/read", tokens={"expose_in_me": True})
    await signed_in(running)
    [entry] = await (await running.browser.get("/.auth/me", headers=API)).json()
    assert entry["access_token"].startswith(JWT_MARK) and entry["id_token"].startswith(JWT_MARK)
    assert not [key for key in entry if "refresh" in key.lower()]
    assert not [
        v
        for k, v in entry.items()
        if k not in ("access_token", "id_token") and JWT_MARK in json.dumps(v)
    ]


HOSTILE_ORIGINS: Final = ["https://evil.example", "null", "https://app.test.evil.example"]


@pytest.mark.threat("LK-01")
@pytest.mark.parametrize("origin", HOSTILE_ORIGINS)
@pytest.mark.parametrize(
    ("method", "path", "extra"),
    [
        ("GET", "/.auth/me", {}),
        ("GET", "/.auth/verify", {}),
        ("POST", "/.auth/refresh", {}),
        ("OPTIONS", "/.auth/me", {"Access-Control-Request-Method": "GET"}),
        ("OPTIONS", "/.auth/refresh", {"Access-Control-Request-Method": "POST"}),
    ],
    ids=["me", "verify", "refresh", "preflight-me", "preflight-refresh"],
)
async def test_no_cors_for_a_hostile_origin(
    gateway: Running, origin: str, method: str, path: str, extra: dict[str, str]
) -> None:
    await signed_in(gateway)
    response = await gateway.browser.session.request(
        method,
        gateway.url + path,
        headers={**API, "Origin": origin, "Sec-Fetch-Site": "cross-site", **extra},
        allow_redirects=False,
    )
    body = await response.read()
    assert response.status < 500
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]
    if path == "/.auth/me" and response.status == 200:
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    if path == "/.auth/refresh":
        assert response.status == 403 or method == "OPTIONS"  # not started from another site
    assert JWT_MARK.encode() not in body


# ---- A10 / LK-03: identity-provider errors show a request id, no description or token ----


@dataclass(frozen=True)
class ProviderError:
    id: str
    status: int
    body: str | dict[str, Any]
    leaks: tuple[str, ...]  # text that must not appear in what the browser gets
    content_type: str | None = None


PROVIDER_ERRORS: Final = [
    ProviderError(
        "invalid-grant-aadsts",
        400,
        {"error": "invalid_grant", "error_description": "AADSTS70008: secret details"},
        ("secret details", "AADSTS70008: secret"),
    ),
    ProviderError(
        "invalid-grant-with-token-in-description",
        400,
        {
            "error": "invalid_grant",
            "error_description": f"AADSTS50173: grant revoked. Token: {FAKE_JWT} Trace ID: 0f1e",
            "error_codes": [50173],
            "trace_id": "0f1e-trace",
            "correlation_id": "c0ffee-correlation",
        },
        (FAKE_JWT, JWT_MARK, "grant revoked", "Trace ID"),
    ),
    ProviderError(
        "invalid-client-secret",
        401,
        {
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the "
            "secret being sent is the client secret value, not the client secret ID.",
        },
        ("Invalid client secret provided", "client secret value"),
    ),
    ProviderError(
        "html-server-error",
        500,
        "<html><body><h1>Server Error</h1><pre>at Microsoft.IdentityServer secret details "
        f"{FAKE_JWT}</pre></body></html>",
        ("secret details", "Microsoft.IdentityServer", JWT_MARK, "<pre>"),
        "text/html",
    ),
    ProviderError(
        "markup-in-error-code",
        400,
        {"error": "<img src=x onerror=alert(1)>", "error_description": "secret details"},
        ("<img", "secret details"),
    ),
]


@pytest.mark.threat("LK-03")
@pytest.mark.parametrize("accept", ["html", "json"])
@pytest.mark.parametrize("case", PROVIDER_ERRORS, ids=[c.id for c in PROVIDER_ERRORS])
async def test_sign_in_errors_show_a_request_id_only(
    gateway: Running, idp: Any, case: ProviderError, accept: str
) -> None:
    browser = gateway.browser
    auth = await browser.authorize(await browser.start_sign_in("/"))
    idp.fail("token", case.status, case.body, content_type=case.content_type)
    response = await browser.session.post(
        browser.local(auth.url),
        data=auth.fields,
        headers=NAVIGATE if accept == "html" else API,
        allow_redirects=False,
    )
    text = await response.text()
    assert response.status == 502, text[:300]
    assert len(idp.token_requests()) == 1  # the provider really was asked, and refused
    request_id = response.headers["X-Request-Id"]
    assert request_id in text
    if accept == "json":
        assert json.loads(text)["request_id"] == request_id
    else:
        assert response.headers["Content-Type"].startswith("text/html")
    leaked = [leak for leak in case.leaks if leak in text]
    assert leaked == [], f"the error page shows {leaked}: {text[-600:]}"
    assert "Traceback" not in text
    assert browser.cookie(SESSION_COOKIE) is None


REFRESH_ERRORS: Final = [
    ProviderError(
        "invalid-grant",
        400,
        {"error": "invalid_grant", "error_description": "AADSTS70008: secret details"},
        ("secret details", "AADSTS70008: secret"),
    ),
    ProviderError(
        "interaction-required",
        400,
        {
            "error": "interaction_required",
            "error_description": "AADSTS50076: secret details about the policy",
            "suberror": "basic_action",
        },
        ("secret details", "about the policy"),
    ),
    ProviderError(
        "server-error",
        500,
        {"error": "server_error", "error_description": f"AADSTS90012: secret {FAKE_JWT}"},
        ("secret", JWT_MARK),
    ),
]


@pytest.mark.threat("LK-03")
@pytest.mark.parametrize("case", REFRESH_ERRORS, ids=[c.id for c in REFRESH_ERRORS])
async def test_refresh_errors_show_a_request_id_only(
    launch: Launch, idp: Any, case: ProviderError
) -> None:
    running = await launch(scopes="api://upstream/read")
    await signed_in(running)
    idp.fail("token", case.status, case.body, times=None)
    try:
        response = await running.browser.session.post(
            running.url + "/.auth/refresh", headers=API, allow_redirects=False
        )
        text = await response.text()
    finally:
        idp.clear_faults()
    assert response.status in (401, 502, 503), text
    assert json.loads(text)["request_id"] == response.headers["X-Request-Id"]
    leaked = [leak for leak in case.leaks if leak in text]
    assert leaked == [], f"the error shows {leaked}: {text}"


@pytest.mark.threat("LK-03")
async def test_identity_provider_error_is_shown_escaped(gateway: Running, idp: Any) -> None:
    for error, status in (("access_denied", 403), ("server_error", 502)):
        idp.fail_authorize(error, "<script>alert(1)</script> user said no")
        response = await gateway.browser.sign_in("/")
        assert response.status == status
        text = await response.text()
        assert "<script>" not in text
        assert "user said no" not in text  # the description is logged, never shown
        assert error in text
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Frame-Options"] == "DENY"
