"""API callers: clients that present their own Entra access token instead of a session cookie.

The token is validated by tokens/bearer.py against the provider's published keys (refetched once,
rate limited, when an unknown key id appears: key rollover) and becomes an ApiCallerIdentity.
The upstream then gets nothing, the caller's own token, or a token for the route's scopes obtained
on behalf of the caller (OBO), cached per caller and scopes because MSAL never caches OBO results.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Final
from urllib.parse import urlsplit

from gateway.auth.identity import ApiCallerIdentity
from gateway.config.settings import Settings
from gateway.errors import IdentityProviderError
from gateway.oidc.msal_client import MsalClient
from gateway.sessions.store import scope_key
from gateway.tokens import bearer, subject
from gateway.tokens.bearer import BearerPolicy, InvalidBearer, UnknownKey

OBO_CACHE_SIZE: Final = 10_000
OBO_MIN_LIFETIME_SECONDS: Final = 300.0
V1_ISSUER: Final = "https://sts.windows.net/{tenantid}/"


class ApiCallerAuthenticator:
    """Implements identity.ApiCallers."""

    def __init__(self, settings: Settings, msal: MsalClient) -> None:
        self._settings = settings
        self._msal = msal
        self._policy: BearerPolicy | None = None
        self._obo: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def _bearer_policy(self) -> BearerPolicy:
        if self._policy is None:
            issuer = self._msal.issuer
            if issuer is None:
                raise IdentityProviderError("the identity provider's metadata is not loaded yet")
            self._policy = BearerPolicy(
                issuers=self._issuers(issuer),
                audiences=frozenset(self._settings.api.audiences),
                allowed_tenants=frozenset(self._settings.allowed_tenants),
                leeway_seconds=self._settings.signin.clock_skew_seconds,
            )
        return self._policy

    def _issuers(self, v2_issuer: str) -> tuple[str, ...]:
        versions = self._settings.api.issuer_versions
        issuers = [] if versions == "v1" else [v2_issuer]
        if versions != "v2":
            # v1.0 tokens name the tenant on sts.windows.net; same tenant as the v2 issuer.
            tenant = urlsplit(v2_issuer).path.strip("/").split("/")[0]
            issuers.append(
                V1_ISSUER if tenant == "{tenantid}" else V1_ISSUER.format(tenantid=tenant)
            )
        return tuple(issuers)

    async def identify(self, token: str) -> ApiCallerIdentity:
        policy = self._bearer_policy()
        try:
            claims = bearer.validate(token, self._msal.cached_key, policy)
        except UnknownKey:
            await self._msal.refetch_keys()
            claims = bearer.validate(token, self._msal.cached_key, policy)
        try:
            user = subject.user_key(claims)
        except ValueError as exc:
            raise InvalidBearer("the token names no subject") from exc
        home = None if self._settings.is_multi_tenant else claims.get("tid")
        return ApiCallerIdentity(
            token=token,
            user_key=user,
            claims=bearer.identity_claims(claims, home_tenant=home),
            scopes=tuple(str(claims.get("scp", "")).split()),
            expires_at=float(claims["exp"]),
        )

    async def upstream_token(
        self, identity: ApiCallerIdentity, scopes: tuple[str, ...]
    ) -> str | None:
        mode = self._settings.api.upstream_token
        if mode == "none":
            return None
        if mode == "pass":
            return identity.token
        if not scopes:
            return None
        key = hashlib.sha256(f"{identity.token}\n{scope_key(scopes)}".encode()).hexdigest()
        cached = self._obo.get(key)
        if cached is not None and cached[1] - time.time() > OBO_MIN_LIFETIME_SECONDS:
            self._obo.move_to_end(key)
            return cached[0]
        token, expires_at = await self._msal.on_behalf_of(identity.token, scopes)
        self._obo[key] = (token, expires_at)
        while len(self._obo) > OBO_CACHE_SIZE:
            self._obo.popitem(last=False)
        return token
