"""The access decision: who is asking, whether they may reach a request target, and which token
their request carries. One function, used by the proxy for every request it forwards and by
forward-auth (/.auth/verify) for the request a proxy asks about, so that the two cannot drift.

The steps, in order: the rule for (method, raw target) (auth/policy.py; an ambiguous target is
refused here), the caller's identity (a session cookie or an API caller's bearer token), the
rule's verdict (admit), the bearer scopes of the route (auth/scopes.py), and a renewal of the
session's token for those scopes when it is due (through the Refresher: never MSAL directly).

The callers differ on purpose, and only through the arguments:
- `identify_public`: on a public path the proxy still reads a session, so that a signed-in user's
  identity reaches the app; forward-auth answers 200 without reading the store (the proxy in front
  forwards no identity headers for public paths, and a store outage does not close them).
- The headers each builds from the decision (auth/headers.py `vouched_headers`): forward-auth
  includes the access token only with GATEWAY_TOKENS__EXPOSE_IN_VERIFY, and leaves out the Easy
  Auth token headers, which only the proxy adds, and X-Gateway-Assertion, which it adds only in
  forward-auth mode (GATEWAY_MODE), where the assertion is for the applications behind the proxy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web

from gateway.auth.identity import (
    ApiCallers,
    Identity,
    Refresher,
    SessionIdentity,
    admit,
    authenticate,
    authenticate_optional,
    refresh_due,
)
from gateway.auth.policy import Policy
from gateway.auth.scopes import bearer_scopes
from gateway.config.access import TokenRoute
from gateway.sessions.store import SessionStore
from gateway.telemetry import tracing
from gateway.telemetry.logs import user_var


def is_preflight(request: web.Request, method: str) -> bool:
    """A CORS preflight: OPTIONS naming the method and origin of the request to come."""
    headers = request.headers
    return (
        method == "OPTIONS" and "Access-Control-Request-Method" in headers and "Origin" in headers
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """The caller may pass: as `identity` (None: anonymous, on a public path), with a token for
    `scopes` (empty: no bearer token upstream)."""

    identity: Identity | None
    scopes: tuple[str, ...]


class AccessControl:
    def __init__(
        self,
        *,
        policy: Policy,
        sessions: SessionStore,
        cookie_name: str,
        refresher: Refresher,
        api_callers: ApiCallers | None,
        token_routes: tuple[TokenRoute, ...],
        default_scopes: tuple[str, ...],
        multi_tenant: bool,
        pass_preflights: bool = False,
    ) -> None:
        self._policy = policy
        self._sessions = sessions
        self._cookie = cookie_name
        self._refresher = refresher
        self._api = api_callers
        self._routes = token_routes
        self._default_scopes = default_scopes
        self._multi_tenant = multi_tenant
        self._pass_preflights = pass_preflights

    @property
    def depends_on_target(self) -> bool:
        """Whether the request target can change a decision (route rules or per-route tokens);
        without either, every target needs the same: a signed-in user, the default token."""
        return self._policy.active or bool(self._routes)

    async def decide(
        self, request: web.Request, method: str, target: str, *, identify_public: bool
    ) -> Decision:
        """The decision for `method` and the raw `target` (path and query, as the upstream will
        receive them). Raises SignInRequired (401), Forbidden (403), AmbiguousPath (400), or the
        store's and provider's errors: every refusal and every failure raises, so a caller never
        mistakes an error for a pass."""
        rule = self._policy.rule_for(method, target)
        if (
            self._pass_preflights
            and is_preflight(request, method)
            and (rule is None or rule.allow != "deny")
        ):
            # Browsers send preflights without credentials: nobody to identify, nothing to vouch
            # for. The application answers them (GATEWAY_PROXY__CORS_PREFLIGHT=pass); a path no
            # one may reach stays closed to them too.
            return Decision(None, ())
        public = rule is not None and rule.allow == "public"
        identity: Identity | None = None
        async with tracing.span(request, "session"):
            if not public:
                identity = await authenticate(request, self._sessions, self._cookie, self._api)
            elif identify_public:
                identity = await authenticate_optional(
                    request, self._sessions, self._cookie, self._api
                )
        if identity is not None:
            user_var.set(identity.user_key)  # the access line names who it was
        if rule is not None and not public:
            assert identity is not None  # authenticate never returns None
            admit(rule, identity, multi_tenant=self._multi_tenant)
        path = target.split("?", 1)[0]
        scopes = bearer_scopes(method, path, self._routes, self._default_scopes)
        if isinstance(identity, SessionIdentity) and refresh_due(
            identity.record, scopes, time.time()
        ):
            async with tracing.span(request, "refresh"):
                identity = await self._refresher.refresh(identity, scopes)
        return Decision(identity, scopes)
