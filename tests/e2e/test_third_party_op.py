"""MSAL against a real third-party OpenID provider, oidc-provider (panva), via ``oidc_authority``.

These tests pin down how the real msal and a standards-compliant provider that we did not write
get along, so that the gateway's assumptions about "other OpenID providers" (DESIGN.md) rest on
observed behaviour:

* sign-in with ``response_mode=form_post`` and PKCE gives an RS256 id_token whose ``iss`` is the
  configured authority and whose signature verifies against the provider's ``jwks_uri``;
* msal always asks for ``offline_access``; this provider grants it (and issues a refresh token)
  only when the sign-in also sent ``prompt=consent``;
* a provider that issues a refresh token without ``offline_access`` answers msal's refresh with
  ``invalid_scope`` (ENTRA.md c.24), unless msal has ``exclude_scopes=["offline_access"]``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import jwt
import msal
import pytest
import requests
from support.third_party_op import (
    DEFAULT_POST_LOGOUT_REDIRECT_URI,
    DEFAULT_REDIRECT_URI,
    ThirdPartyOP,
    ThirdPartyOPError,
    run_third_party_op,
    sign_in,
    sign_out,
    third_party_op,
)

__all__ = ["third_party_op"]  # the session fixture, imported so that pytest finds it here

RESERVED_SCOPES = "offline_access openid profile"  # what msal sends for scopes=[]


class Wire:
    """The form fields of every token request msal sent through one ``requests.Session``."""

    def __init__(self, session: requests.Session) -> None:
        self.token_requests: list[dict[str, str]] = []
        session.hooks["response"].append(self._record)

    def _record(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        body = response.request.body
        if response.request.method == "POST" and isinstance(body, str):
            self.token_requests.append(dict(parse_qsl(body)))


def msal_app(
    op: ThirdPartyOP, http_client: requests.Session, **kwargs: Any
) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        op.client_id,
        client_credential=op.client_secret,
        oidc_authority=op.issuer,
        http_client=http_client,
        http_cache={},
        azure_region=False,
        **kwargs,
    )


@pytest.fixture
def http_client(third_party_op: ThirdPartyOP) -> Iterator[requests.Session]:
    with third_party_op.requests_session() as session:
        yield session


def discovery(op: ThirdPartyOP, http_client: requests.Session) -> dict[str, Any]:
    response = http_client.get(op.discovery_url, timeout=10)
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    return document


async def browser_sign_in(
    op: ThirdPartyOP, authorize_url: str, login: str = "alice"
) -> dict[str, str]:
    """A fresh browser (no provider session yet) signs in as ``login``."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        return await sign_in(browser, authorize_url, login=login, ssl=op.ssl_context())


def test_discovery_document(third_party_op: ThirdPartyOP, http_client: requests.Session) -> None:
    op = third_party_op
    assert op.issuer.startswith("https://127.0.0.1:")
    assert urlsplit(op.issuer).path == "/op"

    document = discovery(op, http_client)

    assert document["issuer"] == op.issuer
    assert {
        name: document[name]
        for name in (
            "authorization_endpoint",
            "token_endpoint",
            "jwks_uri",
            "userinfo_endpoint",
            "end_session_endpoint",
            "registration_endpoint",
        )
    } == {
        "authorization_endpoint": f"{op.issuer}/auth",
        "token_endpoint": f"{op.issuer}/token",
        "jwks_uri": f"{op.issuer}/jwks",
        "userinfo_endpoint": f"{op.issuer}/me",
        "end_session_endpoint": f"{op.issuer}/session/end",
        "registration_endpoint": f"{op.issuer}/reg",
    }
    assert "form_post" in document["response_modes_supported"]
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert "client_secret_post" in document["token_endpoint_auth_methods_supported"]
    assert document["id_token_signing_alg_values_supported"] == ["RS256"]
    assert {"openid", "profile", "email", "offline_access"} <= set(document["scopes_supported"])
    assert {"sub", "name", "preferred_username", "email"} <= set(document["claims_supported"])
    assert document["authorization_response_iss_parameter_supported"] is True


def test_msal_needs_a_path_segment_in_oidc_authority(
    third_party_op: ThirdPartyOP, http_client: requests.Session
) -> None:
    origin = third_party_op.issuer.removesuffix("/op")
    with pytest.raises(ValueError, match="minimum of one segment in a path"):
        msal.ConfidentialClientApplication(
            third_party_op.client_id,
            client_credential=third_party_op.client_secret,
            oidc_authority=origin,
            http_client=http_client,
            http_cache={},
            azure_region=False,
        )


async def test_sign_in_with_prompt_consent_then_refresh(
    third_party_op: ThirdPartyOP, http_client: requests.Session
) -> None:
    op = third_party_op
    wire = Wire(http_client)
    app = msal_app(op, http_client)
    flow = app.initiate_auth_code_flow(
        [], redirect_uri=op.redirect_uri, response_mode="form_post", prompt="consent"
    )

    auth_response = await browser_sign_in(op, flow["auth_uri"])

    assert set(auth_response) == {"code", "state", "iss"}  # RFC 9207 iss, no client_info
    assert auth_response["state"] == flow["state"]
    assert auth_response["iss"] == op.issuer

    result = app.acquire_token_by_auth_code_flow(flow, auth_response)

    assert "error" not in result, result
    assert wire.token_requests[-1]["grant_type"] == "authorization_code"
    assert wire.token_requests[-1]["scope"] == RESERVED_SCOPES
    assert wire.token_requests[-1]["client_secret"] == op.client_secret  # client_secret_post
    assert result["scope"] == RESERVED_SCOPES  # offline_access granted, thanks to prompt=consent
    assert result["refresh_token"]
    assert "client_info" not in result

    document = discovery(op, http_client)
    jwks = http_client.get(document["jwks_uri"], timeout=10).json()
    header = jwt.get_unverified_header(result["id_token"])
    assert header["alg"] == "RS256"
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    claims = jwt.decode(
        result["id_token"],
        key,
        algorithms=["RS256"],
        audience=op.client_id,
        issuer=op.issuer,
        options={"require": ["exp", "iat", "iss", "aud", "sub", "nonce"]},
    )
    assert claims["sub"] == "alice"
    assert claims["iss"] == op.issuer == document["issuer"]
    assert claims["preferred_username"] == "alice@example.test"
    assert claims["email"] == "alice@example.test"
    assert claims["name"] == "Alice"
    assert claims["nonce"] == hashlib.sha256(flow["nonce"].encode()).hexdigest()

    # Without client_info, msal keys the account by sub, in the realm "op" (the token endpoint's
    # first path segment), on the host without its port.
    (account,) = app.get_accounts()
    assert account["home_account_id"] == "alice"
    assert account["username"] == "alice@example.test"
    assert account["local_account_id"] == "alice"
    assert (account["environment"], account["realm"]) == ("127.0.0.1", "op")

    # A cached access token (3600 s) is served without any request ...
    cached = app.acquire_token_silent_with_error([], account)
    assert cached is not None and cached["token_source"] == "cache"
    token_requests = len(wire.token_requests)

    # ... and force_refresh makes msal redeem the refresh token, asking for offline_access again.
    refreshed = app.acquire_token_silent_with_error([], account, force_refresh=True)

    assert refreshed is not None and "error" not in refreshed, refreshed
    assert refreshed["token_source"] == "identity_provider"
    assert len(wire.token_requests) == token_requests + 1
    refresh_request = wire.token_requests[-1]
    assert refresh_request["grant_type"] == "refresh_token"
    assert refresh_request["refresh_token"] == result["refresh_token"]
    assert refresh_request["scope"] == RESERVED_SCOPES
    assert refreshed["scope"] == RESERVED_SCOPES
    assert refreshed["access_token"] != result["access_token"]
    assert refreshed["id_token_claims"]["sub"] == "alice"
    assert refreshed["id_token_claims"]["iss"] == op.issuer


async def test_sign_in_without_prompt_consent_gets_no_refresh_token(
    third_party_op: ThirdPartyOP, http_client: requests.Session
) -> None:
    op = third_party_op
    wire = Wire(http_client)
    app = msal_app(op, http_client)
    flow = app.initiate_auth_code_flow([], redirect_uri=op.redirect_uri, response_mode="form_post")
    assert "offline_access" in flow["auth_uri"]  # msal asks; the provider drops it silently

    result = app.acquire_token_by_auth_code_flow(flow, await browser_sign_in(op, flow["auth_uri"]))

    assert "error" not in result, result
    assert result["scope"] == "openid profile"
    assert "refresh_token" not in result
    assert result["id_token_claims"]["sub"] == "alice"
    (account,) = app.get_accounts()
    token_requests = len(wire.token_requests)
    # No refresh token in the cache: msal reports a miss (None), without any request.
    assert app.acquire_token_silent_with_error([], account, force_refresh=True) is None
    assert len(wire.token_requests) == token_requests


async def test_refresh_token_without_offline_access_is_refused_to_msal() -> None:
    """ENTRA.md c.24 against a real provider, and msal's way out: ``exclude_scopes``."""
    with (
        run_third_party_op(refresh_token_without_offline_access=True) as op,
        op.requests_session() as http_client,
    ):
        wire = Wire(http_client)
        app = msal_app(op, http_client)
        flow = app.initiate_auth_code_flow(
            [], redirect_uri=op.redirect_uri, response_mode="form_post"
        )
        result = app.acquire_token_by_auth_code_flow(
            flow, await browser_sign_in(op, flow["auth_uri"])
        )
        assert result["scope"] == "openid profile"
        assert result["refresh_token"]
        (account,) = app.get_accounts()

        refreshed = app.acquire_token_silent_with_error([], account, force_refresh=True)

        assert wire.token_requests[-1]["scope"] == RESERVED_SCOPES
        assert refreshed == {
            "error": "invalid_scope",
            "error_description": "refresh token missing requested scope",
            "scope": "offline_access",
        }

        # With offline_access excluded, msal neither asks for it at sign-in nor at refresh.
        app = msal_app(op, http_client, exclude_scopes=["offline_access"])
        flow = app.initiate_auth_code_flow(
            [], redirect_uri=op.redirect_uri, response_mode="form_post"
        )
        assert "offline_access" not in flow["auth_uri"]
        result = app.acquire_token_by_auth_code_flow(
            flow, await browser_sign_in(op, flow["auth_uri"], login="bob")
        )
        (account,) = app.get_accounts()

        refreshed = app.acquire_token_silent_with_error([], account, force_refresh=True)

        assert refreshed is not None and "error" not in refreshed, refreshed
        assert wire.token_requests[-1]["grant_type"] == "refresh_token"
        assert wire.token_requests[-1]["scope"] == "openid profile"
        assert refreshed["id_token_claims"]["sub"] == "bob"


async def test_registered_client_with_query_response_mode(
    third_party_op: ThirdPartyOP, http_client: requests.Session
) -> None:
    redirect_uri = "https://gateway.test:8443/.auth/login/aad/callback"
    client = third_party_op.register_client([redirect_uri])
    app = msal.ConfidentialClientApplication(
        client.client_id,
        client_credential=client.client_secret,
        oidc_authority=third_party_op.issuer,
        http_client=http_client,
        http_cache={},
        azure_region=False,
    )
    with pytest.warns(UserWarning, match="response_mode='form_post' is recommended"):
        flow = app.initiate_auth_code_flow([], redirect_uri=redirect_uri, response_mode="query")

    auth_response = await browser_sign_in(third_party_op, flow["auth_uri"], login="carol")

    assert set(auth_response) == {"code", "state", "iss"}
    result = app.acquire_token_by_auth_code_flow(flow, auth_response)
    assert result["id_token_claims"]["sub"] == "carol"
    assert result["id_token_claims"]["aud"] == client.client_id


async def test_sign_out_ends_the_provider_session(
    third_party_op: ThirdPartyOP, http_client: requests.Session
) -> None:
    op = third_party_op
    document = discovery(op, http_client)
    authorize = f"{document['authorization_endpoint']}?" + urlencode(
        {
            "client_id": op.client_id,
            "response_type": "code",
            "redirect_uri": DEFAULT_REDIRECT_URI,
            "scope": "openid profile",
            "response_mode": "form_post",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
        }
    )
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        tls = op.ssl_context()
        assert "code" in await sign_in(browser, authorize, login="alice", ssl=tls)
        # Single sign-on: the provider session answers without a login page, so "bob" is unused.
        assert "code" in await sign_in(browser, authorize, login="bob", ssl=tls)

        end_session = f"{document['end_session_endpoint']}?" + urlencode(
            {
                "client_id": op.client_id,
                "post_logout_redirect_uri": DEFAULT_POST_LOGOUT_REDIRECT_URI,
                "state": "after-logout",
            }
        )
        landing = await sign_out(browser, end_session, ssl=tls)
        assert landing == f"{DEFAULT_POST_LOGOUT_REDIRECT_URI}?state=after-logout"

        # The provider session is gone: the login page is back, and "bob" signs in.
        code = (await sign_in(browser, authorize, login="bob", ssl=tls))["code"]

    token = http_client.post(
        document["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": DEFAULT_REDIRECT_URI,
            "code_verifier": "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            "client_id": op.client_id,
            "client_secret": op.client_secret,
        },
        timeout=10,
    )
    assert jwt.decode(token.json()["id_token"], options={"verify_signature": False})["sub"] == "bob"


async def test_sign_in_explains_a_cookie_jar_that_drops_ip_cookies(
    third_party_op: ThirdPartyOP, http_client: requests.Session
) -> None:
    app = msal_app(third_party_op, http_client)
    flow = app.initiate_auth_code_flow(
        [], redirect_uri=third_party_op.redirect_uri, response_mode="form_post"
    )
    async with aiohttp.ClientSession() as browser:  # the default jar ignores 127.0.0.1 cookies
        with pytest.raises(ThirdPartyOPError, match=r"CookieJar\(unsafe=True\)"):
            await sign_in(browser, flow["auth_uri"], ssl=third_party_op.ssl_context())
