"""The authorize endpoint and the account picker behind it (ENTRA.md b.3).

`GET /{tenant}/oauth2/v2.0/authorize` validates the request, then either answers at once (tests
name the user in the `X-DevIdp-User` header) or shows the account picker, which posts back to
`POST /{tenant}/login`. Problems with the client or redirect URI are a 400 page; every later
problem goes back to the redirect URI as `error`/`error_description`, like Entra. Issuing a code
is also where the user consents to the resources the request's `scope` names.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlencode

from aiohttp import web

from .claims import ClaimsRequest
from .config import Client, User
from .errors import INVALID_REQUEST, OAuthError, missing, unknown_client
from .grants import CodeGrant
from .jwts import client_info
from .pages import error_page, form_post_page, html_response, sign_in_page
from .scopes import Scopes, parse_authorize_scopes
from .state import STATE, DevIdpState

USER_HEADER: Final = "X-DevIdp-User"
RESPONSE_MODES: Final = frozenset({"query", "form_post", "fragment"})
PROMPTS: Final = frozenset({"login", "none", "consent", "select_account", "create"})
_PICKER_FIELDS: Final = frozenset({"devidp_user", "devidp_cancel"})


@dataclass(frozen=True, slots=True)
class Reply:
    """Where and how answers to a validated client and redirect URI go."""

    redirect_uri: str
    response_mode: str
    state: str | None

    def send(self, fields: Mapping[str, str]) -> web.Response:
        if self.state is not None:
            fields = {**fields, "state": self.state}
        if self.response_mode == "form_post":
            return html_response(form_post_page(self.redirect_uri, fields))
        if self.response_mode == "fragment":
            location = f"{self.redirect_uri}#{urlencode(fields)}"
        else:
            separator = "&" if "?" in self.redirect_uri else "?"
            location = f"{self.redirect_uri}{separator}{urlencode(fields)}"
        return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})

    def error(self, error: OAuthError) -> web.Response:
        return self.send({"error": error.error, "error_description": error.description})


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    tenant: str
    client: Client
    reply: Reply
    scopes: Scopes
    resources: tuple[str, ...]  # every resource named: the user consents to all of them
    claims: ClaimsRequest
    params: Mapping[str, str]

    @property
    def prompt(self) -> str | None:
        return self.params.get("prompt")


class _Page(Exception):
    """A problem that must not be sent to an unvalidated redirect URI."""

    def __init__(self, error: OAuthError) -> None:
        super().__init__(error.description)
        self.error = error


async def authorize(request: web.Request) -> web.Response:
    params = dict(request.query) if request.method == "GET" else _strings(await request.post())
    selector = request.headers.get(USER_HEADER)
    return _answer(request.app[STATE], request.match_info["tenant"], params, selector)


async def login(request: web.Request) -> web.Response:
    """The account picker's POST: the original authorize parameters plus the chosen user."""
    form = _strings(await request.post())
    params = {k: v for k, v in form.items() if k not in _PICKER_FIELDS}
    if form.get("devidp_cancel"):
        return _answer(request.app[STATE], request.match_info["tenant"], params, None, True)
    selector = form.get("devidp_user", "")
    return _answer(request.app[STATE], request.match_info["tenant"], params, selector)


def _strings(form: Mapping[str, object]) -> dict[str, str]:
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _answer(
    state: DevIdpState,
    tenant_segment: str,
    params: dict[str, str],
    selector: str | None,
    cancelled: bool = False,
) -> web.Response:
    try:
        client, reply = _reply(state, tenant_segment, params)
    except _Page as page:
        return html_response(error_page("Sign-in error", page.error.description), status=400)
    try:
        req = _validate(client, tenant_segment, params, reply)
        if cancelled:
            raise OAuthError("access_denied", 65004, "User declined to consent to access the app.")
        if (fault := state.take_authorize_error()) is not None:
            return reply.send({"error": fault.error, "error_description": fault.description})
        if selector is None:
            return _picker(state, req)
        user = state.find_user(selector)
        if user is None:
            message = f"AADSTS50034: The test user {selector!r} does not exist."
            return html_response(error_page("Unknown user", message), status=400)
        return reply.send(_issue(state, req, user))
    except OAuthError as error:
        return reply.error(error)


def _reply(
    state: DevIdpState, tenant_segment: str, params: Mapping[str, str]
) -> tuple[Client, Reply]:
    """The client and where to answer it; raises _Page when neither can be trusted."""
    if state.resolve_tenant(tenant_segment) is None:
        raise _Page(OAuthError("invalid_tenant", 90002, f"Tenant '{tenant_segment}' not found."))
    client_id = params.get("client_id")
    if not client_id:
        raise _Page(missing("client_id"))
    client = state.client(client_id)
    if client is None:
        raise _Page(unknown_client(client_id, state.config.tenant_id))
    redirect_uri = params.get("redirect_uri")
    if not redirect_uri:
        raise _Page(missing("redirect_uri"))
    if not client.accepts_redirect_uri(redirect_uri):
        raise _Page(
            OAuthError(
                INVALID_REQUEST,
                50011,
                f"The redirect URI '{redirect_uri}' specified in the request does not match "
                f"the redirect URIs configured for the application '{client_id}'.",
            )
        )
    mode = params.get("response_mode") or "query"
    reply = Reply(redirect_uri, mode if mode in RESPONSE_MODES else "query", params.get("state"))
    return client, reply


def _validate(
    client: Client, tenant_segment: str, params: Mapping[str, str], reply: Reply
) -> AuthorizeRequest:
    if (params.get("response_mode") or "query") not in RESPONSE_MODES:
        raise OAuthError(INVALID_REQUEST, 900144, "The response_mode parameter is not valid.")
    if params.get("response_type") != "code":
        raise OAuthError(
            "unsupported_response_type",
            700054,
            f"response_type '{params.get('response_type', '')}' is not enabled for the app.",
        )
    challenge = params.get("code_challenge")
    if challenge is not None:
        if params.get("code_challenge_method") != "S256":
            raise OAuthError(INVALID_REQUEST, 501491, "code_challenge_method must be S256.")
        if not 43 <= len(challenge) <= 128:  # RFC 7636 4.2
            raise OAuthError(INVALID_REQUEST, 501491, "Invalid size of Code_Challenge parameter.")
    scopes, resources = parse_authorize_scopes(params.get("scope"))
    claims = ClaimsRequest.parse(params["claims"]) if "claims" in params else ClaimsRequest()
    if "max_age" in params and not params["max_age"].isdigit():
        raise OAuthError(INVALID_REQUEST, 50033, "The max_age parameter must be a number.")
    prompt = params.get("prompt")
    if prompt is not None and prompt not in PROMPTS:
        raise OAuthError(INVALID_REQUEST, 90023, f"Invalid prompt value '{prompt}'.")
    return AuthorizeRequest(tenant_segment, client, reply, scopes, resources, claims, params)


def _picker(state: DevIdpState, req: AuthorizeRequest) -> web.Response:
    if req.prompt == "none":  # there is no emulated browser session to sign in silently with
        raise OAuthError(
            "login_required", 50058, "A silent sign-in request was sent but no user is signed in."
        )
    hint = req.params.get("login_hint")
    page = sign_in_page(
        action=f"/{req.tenant}/login",
        params=req.params,
        users=state.users(),
        hint=state.find_user(hint) if hint else None,
        app_name=req.client.display_name,
    )
    return html_response(page)


def _issue(state: DevIdpState, req: AuthorizeRequest, user: User) -> dict[str, str]:
    """Record a code for `user` and the user's consent to every resource the request named
    (prompt=login/consent need nothing more) and return the fields."""
    now = state.clock()
    wants_auth_time = "max_age" in req.params or req.claims.mentions_auth_time
    state.policies.record_consent(user.oid, req.client.client_id, req.resources)
    code = state.grants.issue_code(
        CodeGrant(
            client_id=req.client.client_id,
            redirect_uri=req.reply.redirect_uri,
            scopes=req.scopes,
            nonce=req.params.get("nonce"),
            code_challenge=req.params.get("code_challenge"),
            user_oid=user.oid,
            auth_time=int(now),
            include_auth_time=wants_auth_time,
            claims=req.params.get("claims"),
            issued_at=now,
        )
    )
    fields = {"code": code}
    if req.params.get("client_info") == "1":
        fields["client_info"] = client_info(user.oid, state.config.tenant_id)
    fields["session_state"] = str(uuid.uuid4())
    return fields
