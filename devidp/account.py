"""End-session (RP-initiated logout) and a minimal userinfo endpoint.

Logout redirects only to a `post_logout_redirect_uri` on an origin the client registered (or,
for a client without a list, one the development rule accepts); otherwise it shows a "signed
out" page. It never follows an unvalidated URL. The emulator keeps no browser session, so there
is nothing else to end.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

import jwt
from aiohttp import web

from .config import Client, is_development_redirect_uri, origin_of
from .errors import OAuthError
from .jwts import verify_own_access_token
from .pages import html_response, signed_out_page
from .state import STATE, DevIdpState


def _hinted_client_id(id_token_hint: str | None) -> str | None:
    if not id_token_hint:
        return None
    try:
        aud = jwt.decode(id_token_hint, options={"verify_signature": False}).get("aud")
    except jwt.PyJWTError:
        return None
    return aud if isinstance(aud, str) else None


def _allowed(client: Client, uri: str) -> bool:
    origins = client.redirect_origins()
    if origins is None:
        return is_development_redirect_uri(uri)
    return origin_of(uri) in origins


def _candidates(state: DevIdpState, client_id: str | None) -> tuple[Client, ...]:
    if client_id is None:
        return state.clients()
    client = state.client(client_id)
    return () if client is None else (client,)


async def logout(request: web.Request) -> web.Response:
    state = request.app[STATE]
    params = dict(request.query)
    if request.method == "POST":
        params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
    target = params.get("post_logout_redirect_uri")
    client_id = params.get("client_id") or _hinted_client_id(params.get("id_token_hint"))
    if target:
        parts = urlsplit(target)
        well_formed = parts.scheme in {"http", "https"} and parts.netloc and not parts.fragment
        if well_formed and any(_allowed(c, target) for c in _candidates(state, client_id)):
            if "state" in params:  # OpenID Connect RP-Initiated Logout 1.0, section 3
                separator = "&" if "?" in target else "?"
                target = f"{target}{separator}{urlencode({'state': params['state']})}"
            return web.Response(status=302, headers={"Location": target})
    return html_response(signed_out_page())


async def userinfo(request: web.Request) -> web.Response:
    state = request.app[STATE]
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    try:
        if scheme.lower() != "bearer" or not token:
            raise OAuthError("invalid_token", 50058, "No bearer token was presented.")
        claims = verify_own_access_token(
            token.strip(), keys=state.keys, issuer=state.urls.issuer, audiences=None
        )
        user = next((u for u in state.users() if u.oid == claims.get("oid")), None)
        if user is None:
            raise OAuthError("invalid_token", 50034, "The token is not for a user.")
    except OAuthError as error:
        quoted = error.description.replace('"', "'").replace("\n", " ")
        challenge = f'Bearer error="invalid_token", error_description="{quoted}"'
        return web.json_response(
            {"error": "invalid_token", "error_description": error.description},
            status=401,
            headers={"WWW-Authenticate": challenge},
        )
    info: dict[str, object] = {"sub": claims.get("sub"), "name": user.name}
    if user.email:
        info["email"] = user.email
    return web.json_response(info)
