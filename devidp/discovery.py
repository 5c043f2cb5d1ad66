"""OpenID Connect discovery and JWKS (ENTRA.md b.2, b.7), in Entra's shape.

For the tenant's GUID or domain the document names the GUID everywhere; for `organizations` and
`common` the endpoints keep the alias and the issuer is the `{tenantid}` template, as Entra does.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from .errors import OAuthError
from .state import STATE, TENANT_ALIASES

CLAIMS_SUPPORTED: Final = [
    "sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
    "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username",
    "name", "tid", "ver", "at_hash", "c_hash", "email",
]  # fmt: skip


def _unknown_tenant(segment: str, now: float) -> web.Response:
    error = OAuthError("invalid_tenant", 90002, f"Tenant '{segment}' not found.")
    return web.json_response(error.body(now=now, correlation_id=None), status=400)


async def openid_configuration(request: web.Request) -> web.Response:
    state = request.app[STATE]
    segment = request.match_info["tenant"]
    tenant = state.resolve_tenant(segment)
    if tenant is None:
        return _unknown_tenant(segment, state.clock())
    urls = state.urls
    in_path = tenant  # an alias stays an alias, a domain becomes the GUID
    issuer = f"{urls.base_url}/{{tenantid}}/v2.0" if tenant in TENANT_ALIASES else urls.issuer
    document = {
        "token_endpoint": urls.endpoint(in_path, "oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": [
            "client_secret_post",
            "private_key_jwt",
            "client_secret_basic",
        ],
        "jwks_uri": urls.endpoint(in_path, "discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": issuer,
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{urls.base_url}/oidc/userinfo",
        "authorization_endpoint": urls.browser_endpoint(in_path, "oauth2/v2.0/authorize"),
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": urls.browser_endpoint(in_path, "oauth2/v2.0/logout"),
        "claims_supported": CLAIMS_SUPPORTED,
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }
    return web.json_response(document)


async def jwks(request: web.Request) -> web.Response:
    state = request.app[STATE]
    segment = request.match_info["tenant"]
    tenant = state.resolve_tenant(segment)
    if tenant is None:
        return _unknown_tenant(segment, state.clock())
    issuer = state.urls.issuer
    if tenant in TENANT_ALIASES:
        issuer = f"{state.urls.base_url}/{{tenantid}}/v2.0"
    keys = [key.public_jwk(issuer) for key in state.keys.published]
    return web.json_response({"keys": keys})
