"""The sign-in path: /.auth/login/aad, its callback, /.auth/logout and /.auth/refresh.

Rare and allowed to be slow. A started sign-in is kept server-side by `state` (any replica can
finish it), used once, and bound to the starting browser by the sign-in cookie. A successful
callback always mints a brand-new session id, and the previous one, if any, is deleted (no session
fixation).
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web

from gateway.auth.challenges import MAX_CLAIMS_LENGTH
from gateway.auth.cookies import clear_cookie, mint_id, read_id, set_cookie
from gateway.auth.identity import audit, authenticate_session
from gateway.auth.scopes import scope_sets
from gateway.config.settings import Settings
from gateway.endpoints.bodies import form_fields, json_object, query_fields
from gateway.endpoints.redirects import absolute_target, safe_return_path
from gateway.errors import (
    BadRequest,
    CorruptRecordError,
    Forbidden,
    GatewayError,
    NotFound,
    SignInRequired,
    StoreUnavailable,
)
from gateway.keys import (
    ADMIN_TOKEN,
    CLIENT_ADDRESS,
    FLOWS,
    METRICS,
    MSAL,
    REFRESHER,
    REQUEST_ID,
    SEALER,
    SESSION_INDEX,
    SESSIONS,
    SETTINGS,
    SIGN_IN,
    SIGNIN_LIMITS,
    TOKEN_CACHES,
)
from gateway.oidc.turns import Step
from gateway.sessions.ending import end_session
from gateway.sessions.flows import PendingSignIn
from gateway.telemetry.logs import user_var
from gateway.tokens import subject
from gateway.web.pages import content_security_policy, signed_out_page

log = logging.getLogger(__name__)


_OAUTH_ERROR: Final = re.compile(r"^[a-z_]{1,64}$")
# Where a sign-out ends by default: the signed-out page (Easy Auth's address for it).
SIGNED_OUT_PATH: Final = "/.auth/logout/complete"


class SignInExpired(BadRequest):
    code = "sign_in_expired"


def redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


async def start(request: web.Request) -> web.StreamResponse:
    """Start the auth-code flow and send the browser to the identity provider."""
    settings = request.app[SETTINGS]
    # Each start stores a pending sign-in for minutes: an anonymous flood must not fill it.
    request.app[SIGNIN_LIMITS].admit(request[CLIENT_ADDRESS])
    return_to = return_target(request.query.get("post_login_redirect_uri"), settings)
    scopes = _requested_scopes(request.query.get("scope"), settings)
    claims = _requested_claims(request.query.get("claims"))
    flow = await request.app[MSAL].begin(
        scopes=scopes,
        prompt=settings.signin.prompt,
        domain_hint=settings.signin.domain_hint,
        claims=claims,
    )
    # One binding value per browser, reused across tabs so parallel sign-ins do not clobber it.
    binding = read_id(request, settings.signin_cookie_name) or mint_id()
    pending = PendingSignIn(
        msal_flow={k: v for k, v in flow.items() if k != "auth_uri"},
        return_to=return_to,
        browser_binding=request.app[SEALER].binding(binding),
        scopes=scopes,
    )
    await request.app[FLOWS].save(flow["state"], pending)
    response = redirect(flow["auth_uri"])
    set_cookie(
        response,
        settings.signin_cookie,
        binding,
        max_age=settings.signin.flow_ttl_seconds,
        # The form_post callback is a cross-site POST: only SameSite=None cookies ride along.
        same_site="None" if settings.response_mode == "form_post" else "Lax",
    )
    return response


def return_target(requested: str | None, settings: Settings) -> str:
    """A browser-supplied return target, checked: inside the application's path, or on one of
    the return hosts under the shared cookie domain."""
    return safe_return_path(
        requested,
        settings.public_origin,
        prefix=settings.path_prefix,
        other_host=settings.is_return_host if settings.signin.return_hosts else None,
    )


def _requested_scopes(requested: str | None, settings: Settings) -> tuple[str, ...]:
    """The scopes to sign in for: the default ones, or another configured set (a route's scopes
    that need consent). Anything else is refused: the parameter comes from the browser."""
    if not requested:
        return settings.scopes
    if requested not in scope_sets(settings.tokens.routes, settings.scopes):
        raise BadRequest("these scopes are not configured for this application")
    return tuple(requested.split())


def _requested_claims(requested: str | None) -> str | None:
    """A claims challenge to pass to the identity provider (JSON object), or None. It can only
    ask for more (stronger sign-in), so a tampered value hurts no one but the tamperer."""
    if not requested:
        return None
    if len(requested) > MAX_CLAIMS_LENGTH:
        raise BadRequest("the claims request is too long")
    try:
        document = json.loads(requested)
    except ValueError as exc:
        raise BadRequest("the claims request is not JSON") from exc
    if not isinstance(document, dict):
        raise BadRequest("the claims request is not a JSON object")
    return json.dumps(document, separators=(",", ":"))


async def _auth_response(request: web.Request) -> dict[str, str]:
    if request.method == "POST":
        return await form_fields(request)
    return query_fields(request)


async def finish(request: web.Request) -> web.StreamResponse:
    """The redirect URI: redeem the code, check the id_token, create a fresh session."""
    try:
        # A turn before the pending sign-in is taken: a callback refused for want of one (503,
        # Retry-After) leaves its sign-in pending, and sending it again completes it.
        async with request.app[MSAL].signin_turn(Step.CALLBACK):
            response = await _finish(request)
    except GatewayError as error:
        request.app[METRICS].signins.labels(error.code).inc()
        raise
    request.app[METRICS].signins.labels("success").inc()
    return response


async def _finish(request: web.Request) -> web.StreamResponse:
    settings, app = request.app[SETTINGS], request.app
    auth_response = await _auth_response(request)
    state = auth_response.get("state")
    if not state:
        raise BadRequest("the sign-in response has no state")
    try:
        pending = await app[FLOWS].take(state)
    except CorruptRecordError as exc:
        raise BadRequest("the sign-in could not be verified") from exc
    if pending is None:
        raise SignInExpired("this sign-in has expired or was already used; please sign in again")
    binding = read_id(request, settings.signin_cookie_name)
    if binding is None or not app[SEALER].binds(binding, pending.browser_binding):
        log.warning("sign-in callback from a browser that did not start it")
        raise BadRequest("this sign-in was started in another browser; please sign in again")
    session_id = mint_id()
    record = await app[SIGN_IN].complete(
        pending, auth_response, session_id=session_id, now=time.time()
    )
    previous = read_id(request, settings.session_cookie_name)
    if previous is not None:
        await _delete_session(request, previous)
    user_var.set(record.user_key)
    audit.info("signed in %s", record.user_key, extra={"event": "sign_in", "user": record.user_key})
    response = redirect(pending.return_to)
    set_cookie(
        response,
        settings.session_cookie,
        session_id,
        max_age=settings.session.absolute_ttl_seconds,
    )
    # The sign-in cookie is left to expire: other tabs may be signing in with it right now.
    return response


async def _delete_session(request: web.Request, session_id: str) -> None:
    await end_session(request.app[SESSIONS], request.app[TOKEN_CACHES], session_id)


async def signed_out(request: web.Request) -> web.StreamResponse:
    """GET /.auth/logout/complete: the page a sign-out ends on (the identity provider sends the
    browser here, a cross-site navigation). Shown only without a session cookie, so that it
    never claims a sign-out that did not happen; a browser still signed in goes to the start."""
    settings = request.app[SETTINGS]
    if read_id(request, settings.session_cookie_name) is not None:
        return redirect(settings.path_prefix + "/")
    body = signed_out_page(
        branding=settings.pages, request_id=request[REQUEST_ID], prefix=settings.path_prefix
    )
    page = web.Response(
        text=body,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": content_security_policy(settings.pages),
        },
    )
    _end_application_session(page, settings)
    return page


def _end_application_session(response: web.StreamResponse, settings: Settings) -> None:
    """The application's own session ends with the gateway's (an app such as pgAdmin keeps one):
    Clear-Site-Data and expired cookies, as configured. On the sign-out answer and again on the
    signed-out page, since browsers differ on honouring the header on a redirect."""
    kinds = settings.session.sign_out_clear_site_data
    if kinds:
        response.headers["Clear-Site-Data"] = ", ".join(f'"{kind}"' for kind in kinds)
    # Under a path prefix the application may have scoped its cookies to the prefix, with or
    # without a trailing slash (browsers keep one cookie per name and path): expire each.
    prefix = settings.path_prefix
    paths = ("/", prefix, prefix + "/") if prefix else ("/",)
    secure = "; Secure" if settings.cookie_secure else ""
    for name in settings.session.sign_out_app_cookies:
        for path in paths:
            response.headers.add("Set-Cookie", f"{name}=; Max-Age=0; Path={path}{secure}")


async def sign_out(request: web.Request) -> web.StreamResponse:
    """End the session here (record and token cache), then at the identity provider, which
    sends the browser back to the signed-out page unless another return target was asked for."""
    settings = request.app[SETTINGS]
    if from_another_site(request, settings):
        # Another site must not be able to sign the user out (logout CSRF); the identity
        # provider's own sign-out reaches us through the front-channel logout URL instead.
        raise Forbidden("sign-out cannot be started from another site")
    query: dict[str, Any] = query_fields(request)
    if request.method == "POST":
        form = await form_fields(request)
        if not query.keys().isdisjoint(form):
            raise BadRequest("a field is sent both in the query and in the form")
        query.update(form)
    requested = query.get("post_logout_redirect_uri")
    target = (
        return_target(requested, settings) if requested else settings.auth_path(SIGNED_OUT_PATH)
    )
    session_id = read_id(request, settings.session_cookie_name)
    id_token = ""
    if session_id is not None:
        try:
            record = await request.app[SESSIONS].load(session_id)
            await _delete_session(request, session_id)
        except StoreUnavailable as exc:
            # The record may outlive this outage; the browser must at least forget the cookie.
            raise StoreUnavailable(
                "sign-out could not finish; please try again",
                clear_cookies=(settings.session_cookie_name,),
            ) from exc
        id_token = record.id_token if record else ""
        user = record.user_key if record else None
        audit.info("signed out %s", user, extra={"event": "sign_out", "user": user})
    response = redirect(_end_session_url(request, settings, target, id_token))
    clear_cookie(response, settings.session_cookie)
    _end_application_session(response, settings)
    return response


def from_another_site(request: web.Request, settings: Settings) -> bool:
    """Whether the browser says another site started this request: Fetch Metadata other than
    same-origin or none (a user's own navigation), or, for browsers without it, an Origin other
    than ours ("null" from sandboxes and redirects included). A request with neither is not
    from a browser."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return True  # cross-site, and same-site too: a sibling host is another site's page
    origin = request.headers.get("Origin")
    if origin is None or origin == settings.public_origin:
        return False
    # A return host under the shared cookie domain is its own origin, and may sign out there.
    host = settings.sibling_host(request.headers.get("Host", ""))
    return not (host is not None and origin == f"https://{host}")


def _end_session_url(request: web.Request, settings: Settings, target: str, id_token: str) -> str:
    endpoint = request.app[MSAL].end_session_endpoint
    if not endpoint:
        return target
    params = {
        "post_logout_redirect_uri": absolute_target(target, settings.public_origin),
        "client_id": settings.client_id,
    }
    if settings.oidc_authority and id_token:
        # Generic OpenID providers want the id_token to accept the redirect (RP-Initiated Logout).
        params["id_token_hint"] = id_token
    separator = "&" if "?" in endpoint else "?"
    return f"{endpoint}{separator}{urlencode(params)}"


async def refresh(request: web.Request) -> web.StreamResponse:
    """Renew every token the session holds now (Easy Auth's /.auth/refresh); with none, renew
    the id_token. 401 when the session can no longer be renewed."""
    settings = request.app[SETTINGS]
    if from_another_site(request, settings):
        # Renewing tokens is the user's business, not another site's (login CSRF's cousin).
        raise Forbidden("token refresh cannot be started from another site")
    identity = await authenticate_session(
        request, request.app[SESSIONS], settings.session_cookie_name
    )
    scope_lists = [tuple(key.split()) for key in identity.record.tokens] or [()]
    for scopes in scope_lists:
        identity = await request.app[REFRESHER].refresh(identity, scopes, force=True)
    record = identity.record
    return web.json_response(
        {
            "status": "refreshed",
            "tokens": [
                {"scopes": key, "expires_on": int(token.expires_at)}
                for key, token in record.tokens.items()
            ],
        }
    )


async def front_channel_logout(request: web.Request) -> web.StreamResponse:
    """Entra's front-channel logout URL: it loads this (with the sign-in session's `sid`) when the
    user signs out elsewhere; every gateway session of that `sid` ends, on every replica."""
    sid = request.query.get("sid", "")
    ended = 0
    if 0 < len(sid) <= 256:
        for session_id in await request.app[SESSION_INDEX].take_sid(sid):
            await _delete_session(request, session_id)
            ended += 1
    audit.info(
        "front-channel logout ended %d session(s)",
        ended,
        extra={"event": "front_channel_logout", "sessions": ended},
    )
    return web.Response(text="Signed out.", content_type="text/plain")


async def revoke(request: web.Request) -> web.StreamResponse:
    """POST /.auth/admin/revoke {"user": "<oid>"}: end every session of a user on every replica
    (the user may also be named by `<oid>.<tid>` or the UPN /.auth/me shows: tokens/subject.py).
    Only with GATEWAY_ADMIN__TOKEN (or _FILE) set, and only for a caller presenting it."""
    expected = request.app.get(ADMIN_TOKEN)
    if expected is None:
        raise NotFound("there is nothing at this address")
    presented = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if not expected.matches(presented):
        raise SignInRequired("the admin token is missing or wrong")
    body = await json_object(request)
    user = body.get("user")
    if not isinstance(user, str) or not 0 < len(user) <= 512:
        raise BadRequest('expected JSON {"user": "<object id>"}')
    entra = request.app[SETTINGS].oidc_authority is None
    try:
        user = subject.revocation_name(user, entra=entra)
    except subject.UnknownUserForm as exc:
        raise BadRequest(str(exc)) from exc
    sessions = await request.app[SESSION_INDEX].take_user(user)
    for session_id in sessions:
        await _delete_session(request, session_id)
    audit.warning(
        "revoked %d session(s) of user %s",
        len(sessions),
        user[:64],
        extra={"event": "revocation", "user": user[:64], "sessions": len(sessions)},
    )
    return web.json_response({"revoked": len(sessions)})
