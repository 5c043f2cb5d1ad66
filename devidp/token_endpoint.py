"""The token endpoint (ENTRA.md b.4): authorization_code, refresh_token, client_credentials, OBO.

Each grant checks what Entra checks and raises `OAuthError`, rendered here as Entra's JSON error
(400, or 401 for invalid_client). User grants also apply the directory policies (`policies.py`):
consent per resource, and step-up for refreshes. What goes into a successful response is
`issuance.py`'s job.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Final

from aiohttp import web

from .claims import ClaimsRequest
from .clientauth import AuthenticatedClient, authenticate_client
from .config import User
from .errors import INVALID_GRANT, INVALID_REQUEST, INVALID_SCOPE, OAuthError, missing
from .grants import RefreshGrant
from .issuance import SignIn, app_token_response, user_token_response
from .jwts import verify_own_access_token
from .scopes import parse_scopes
from .signing_keys import b64url
from .state import STATE, DevIdpState

TOKEN_PATH: Final = "oauth2/v2.0/token"  # noqa: S105 - a URL path, not a password
OBO_GRANT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}

Grant = Callable[[DevIdpState, AuthenticatedClient, Mapping[str, str]], dict[str, object]]


async def token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    segment = request.match_info["tenant"]
    try:
        if state.resolve_tenant(segment) is None:
            raise OAuthError("invalid_tenant", 90002, f"Tenant '{segment}' not found.")
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        audiences = dict.fromkeys(
            state.urls.endpoint(t, TOKEN_PATH) for t in (segment, state.config.tenant_id)
        )
        client = authenticate_client(
            state, form, request.headers.get("Authorization"), list(audiences)
        )
        grant_type = form.get("grant_type")
        if not grant_type:
            raise missing("grant_type")
        grant = GRANTS.get(grant_type)
        if grant is None:
            raise OAuthError(
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant_type}'.",
            )
        return web.json_response(grant(state, client, form), headers=NO_STORE)
    except OAuthError as error:
        body = error.body(
            now=state.clock(), correlation_id=request.headers.get("client-request-id")
        )
        return web.json_response(body, status=error.status, headers=NO_STORE)


def _user(state: DevIdpState, oid: object) -> User:
    user = next((u for u in state.users() if u.oid == oid), None)
    if user is None:
        raise OAuthError(INVALID_GRANT, 50034, "The user account does not exist in the directory.")
    return user


def _authorization_code(
    state: DevIdpState, auth: AuthenticatedClient, form: Mapping[str, str]
) -> dict[str, object]:
    code = form.get("code")
    if not code:
        raise missing("code")
    grant = state.grants.redeem_code(code)
    if grant.client_id != auth.client.client_id:
        raise OAuthError(INVALID_GRANT, 70000, "The code was issued to a different client.")
    if form.get("redirect_uri") != grant.redirect_uri:
        raise OAuthError(
            INVALID_GRANT,
            50148,
            "The redirect_uri does not match the redirect URI used to obtain the code.",
        )
    if grant.code_challenge is not None:
        verifier = form.get("code_verifier", "")
        computed = b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
        if not hmac.compare_digest(computed, grant.code_challenge):
            raise OAuthError(
                INVALID_GRANT,
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the "
                "authorization request.",
            )
    scopes = parse_scopes(form["scope"]) if form.get("scope") else grant.scopes
    user = _user(state, grant.user_oid)
    state.policies.check_consent(user.oid, auth.client, scopes.resource)
    # The sign-in satisfied what the authorize request asked for; msal repeats it here.
    claims = ClaimsRequest.parse(grant.claims).merged(ClaimsRequest.parse(form.get("claims")))
    sign_in = SignIn(
        user=user,
        auth_time=grant.auth_time,
        include_auth_time=grant.include_auth_time,
        nonce=grant.nonce,
        claims=claims,
        satisfied_acrs=claims.acrs,
    )
    return user_token_response(
        state, client_id=grant.client_id, azpacr=auth.azpacr, scopes=scopes, sign_in=sign_in
    )


def _refresh_token(
    state: DevIdpState, auth: AuthenticatedClient, form: Mapping[str, str]
) -> dict[str, object]:
    token = form.get("refresh_token")
    if not token:
        raise missing("refresh_token")
    scopes = parse_scopes(form.get("scope"))
    claims = ClaimsRequest.parse(form.get("claims"))

    def allowed(grant: RefreshGrant) -> None:
        state.policies.check_consent(grant.user_oid, auth.client, scopes.resource)
        state.policies.check_refresh(grant.acrs, scopes.resource)

    strict = state.lifetimes.strict_rotation
    grant = state.grants.use_refresh_token(
        token, auth.client.client_id, strict=strict, check=allowed
    )
    sign_in = SignIn(
        user=_user(state, grant.user_oid),
        auth_time=grant.auth_time,
        include_auth_time=grant.include_auth_time,
        claims=claims,
        satisfied_acrs=grant.acrs,
    )
    return user_token_response(
        state, client_id=auth.client.client_id, azpacr=auth.azpacr, scopes=scopes, sign_in=sign_in
    )


def _client_credentials(
    state: DevIdpState, auth: AuthenticatedClient, form: Mapping[str, str]
) -> dict[str, object]:
    if not auth.client.is_confidential:
        raise OAuthError(
            "invalid_client", 7000218, "A public client cannot use the client_credentials grant."
        )
    scopes = parse_scopes(form.get("scope"))
    if scopes.resource is None or scopes.permissions != (".default",) or len(scopes.requested) != 1:
        raise OAuthError(
            INVALID_SCOPE,
            1002012,
            f"The provided value for scope {scopes.text} is not valid. Client credential flows "
            "must have a scope value with /.default suffixed to the resource identifier "
            "(application ID URI).",
        )
    return app_token_response(
        state, client_id=auth.client.client_id, azpacr=auth.azpacr, scopes=scopes
    )


def _on_behalf_of(
    state: DevIdpState, auth: AuthenticatedClient, form: Mapping[str, str]
) -> dict[str, object]:
    if form.get("requested_token_use") != "on_behalf_of":
        raise OAuthError(INVALID_REQUEST, 900144, "requested_token_use must be on_behalf_of.")
    assertion = form.get("assertion")
    if not assertion:
        raise missing("assertion")
    client_id = auth.client.client_id
    claims = verify_own_access_token(
        assertion,
        keys=state.keys,
        issuer=state.urls.issuer,
        audiences=[client_id, f"api://{client_id}"],
    )
    if claims.get("idtyp") == "app" or "scp" not in claims:
        raise OAuthError(INVALID_GRANT, 50013, "The assertion is not a delegated user token.")
    scopes = parse_scopes(form.get("scope"))
    issued = claims.get("iat")  # the original sign-in time is not in an access token
    sign_in = SignIn(
        user=_user(state, claims.get("oid")),
        auth_time=issued if isinstance(issued, int) else int(state.clock()),
        include_auth_time=False,
    )
    return user_token_response(
        state, client_id=client_id, azpacr=auth.azpacr, scopes=scopes, sign_in=sign_in
    )


GRANTS: Final[dict[str, Grant]] = {
    "authorization_code": _authorization_code,
    "refresh_token": _refresh_token,
    "client_credentials": _client_credentials,
    OBO_GRANT: _on_behalf_of,
}
