"""oauth2-proxy's endpoint paths, for teams moving from it (GATEWAY_PROXY__OAUTH2_PROXY_PATHS):
each is the gateway's own endpoint under the name an nginx configuration, a health check or a
link in the application already uses. Off by default, since the application may own these paths.

/oauth2/start and /oauth2/sign_in start a sign-in, /oauth2/sign_out signs out (both with `rd` for
the return target), /oauth2/auth is forward-auth, /oauth2/userinfo the signed-in user in
oauth2-proxy's JSON shape, /ping liveness and /ready readiness.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlencode

from aiohttp import web

from gateway.auth.identity import authenticate_session
from gateway.endpoints import health, principal
from gateway.keys import SESSIONS, SETTINGS

SIGN_IN: Final = "/.auth/login/aad"
SIGN_OUT: Final = "/.auth/logout"


def _to(path: str, name: str, request: web.Request) -> web.Response:
    """A redirect to the gateway's own endpoint, `rd` passed on under the gateway's name (which
    validates it: only same-origin targets)."""
    target = request.query.get("rd")
    path = request.app[SETTINGS].auth_path(path)
    location = f"{path}?{urlencode({name: target})}" if target else path
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


async def sign_in(request: web.Request) -> web.StreamResponse:
    return _to(SIGN_IN, "post_login_redirect_uri", request)


async def sign_out(request: web.Request) -> web.StreamResponse:
    return _to(SIGN_OUT, "post_logout_redirect_uri", request)


async def userinfo(request: web.Request) -> web.StreamResponse:
    """oauth2-proxy's /oauth2/userinfo: user, email, groups, preferredUsername; 401 signed out."""
    settings = request.app[SETTINGS]
    identity = await authenticate_session(
        request, request.app[SESSIONS], settings.session_cookie_name
    )
    claims = identity.claims
    info: dict[str, object] = {"user": claims.get("oid") or claims.get("sub")}
    if claims.get("email"):
        info["email"] = claims["email"]
    groups = identity.groups if identity.groups is not None else claims.get("groups")
    if groups:
        info["groups"] = list(groups)
    if claims.get("preferred_username"):
        info["preferredUsername"] = claims["preferred_username"]
    return web.json_response(info)


# (method, path, handler): what app.py adds when the setting is on.
ROUTES: Final = (
    ("GET", "/oauth2/start", sign_in),
    ("GET", "/oauth2/sign_in", sign_in),
    ("GET", "/oauth2/sign_out", sign_out),
    ("POST", "/oauth2/sign_out", sign_out),
    ("GET", "/oauth2/auth", principal.verify),
    ("GET", "/oauth2/userinfo", userinfo),
    ("GET", "/ping", health.live),
    ("GET", "/ready", health.ready),
)
