"""Completing a sign-in: from the identity provider's authorization response to a stored session.

The callback handler (endpoints/signin.py) owns the HTTP part: finding the pending sign-in by
`state`, checking that the browser which started it is the one finishing it, the cookie and the
redirect. Everything after that is here, callable without HTTP: the issuer the answer names
(RFC 9207), the provider's error answer, the code redeemed (MSAL checks state, nonce and PKCE;
tokens/id_tokens.py the id token policy), the session record built under the user's key
(tokens/subject.py), groups resolved through Graph on overage, and the token cache, the session
index and the record written, in that order: a session is never visible before its tokens are, nor
before revocation can find it. Sessions the index no longer holds (past the per-user cap) end.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final

from gateway.config.settings import Settings
from gateway.errors import BadRequest, GatewayError, IdentityProviderError, SignInNotCompleted
from gateway.oidc.graph import has_group_overage
from gateway.oidc.msal_client import MsalClient
from gateway.sessions.ending import end_session
from gateway.sessions.flows import PendingSignIn
from gateway.sessions.index import MAX_SESSIONS_PER_ENTRY, SessionIndex
from gateway.sessions.store import SessionRecord, SessionStore, UpstreamToken, session_claims
from gateway.sessions.token_cache import TokenCacheStore
from gateway.tokens import subject

log = logging.getLogger(__name__)
audit = logging.getLogger("gateway.audit")

_OAUTH_ERROR: Final = re.compile(r"^[a-z_]{1,64}$")
# Answers that are the person's doing (Cancel, declined consent, an interaction the provider
# needs), not a fault of the provider or of this configuration: 4xx, logged at info.
USER_OUTCOMES: Final = frozenset(
    {
        "access_denied",
        "consent_required",
        "interaction_required",
        "login_required",
        "account_selection_required",
    }
)
_TENANT: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True, slots=True)
class SignInCompleter:
    """What completing a sign-in needs, built once by the composition root."""

    settings: Settings
    msal: MsalClient
    sessions: SessionStore
    token_caches: TokenCacheStore
    index: SessionIndex

    async def complete(
        self,
        pending: PendingSignIn,
        auth_response: Mapping[str, str],
        *,
        session_id: str,
        now: float,
    ) -> SessionRecord:
        """Create session `session_id` for the user the response signs in, and return its record.

        IdentityProviderError when the provider refused the sign-in (only a well-formed OAuth
        error code is shown; the description goes to the log) or cannot be reached; BadRequest
        when the response does not match its flow."""
        self._check_issuer(auth_response)
        if "error" in auth_response:
            error = auth_response["error"]
            code = error if _OAUTH_ERROR.match(error) else "error"
            description = auth_response.get("error_description", "")[:300]
            if code in USER_OUTCOMES:
                log.info("sign-in not completed: error=%r description=%r", code, description)
                raise SignInNotCompleted(
                    "you did not finish signing in. You can try again, perhaps with another "
                    f"account ({code})"
                )
            log.warning(
                "identity provider refused the sign-in: error=%r description=%r",
                error[:64],
                description,
            )
            raise IdentityProviderError(f"the identity provider refused the sign-in ({code})")
        tokens = await self.msal.redeem(pending.msal_flow, dict(auth_response))
        if tokens.claims is None:  # redeem checks the id token; never trust an assert for it
            raise IdentityProviderError("the identity provider sent no id token")
        try:
            user_key = subject.user_key(tokens.claims)
            names = subject.revocation_names(tokens.claims)
        except ValueError as exc:
            raise IdentityProviderError("the identity provider's id token names no user") from exc
        ttl = self.settings.session.absolute_ttl_seconds
        scopes = tuple(pending.scopes)
        record = SessionRecord(
            user_key=user_key,
            home_account_id=tokens.home_account_id or "",
            claims=session_claims(tokens.claims),
            created_at=now,
            expires_at=now + ttl,
            id_token=tokens.id_token or "",
        ).with_token(
            scopes,
            UpstreamToken(tokens.access_token, tokens.expires_at, tokens.refresh_at)
            if scopes
            else None,
        )
        cache = tokens.cache
        if self.settings.groups.resolve_overage and has_group_overage(tokens.claims) and cache:
            groups, changed = await self.msal.resolve_groups(cache, record.home_account_id)
            record = replace(record, groups=groups)
            cache = changed or cache
        if cache is not None:
            await self.token_caches.save(session_id, cache, ttl)
        sid = tokens.claims.get("sid")
        try:
            # Indexed before it exists: a session revocation cannot find must never start.
            evicted = await self.index.add(
                session_id, users=names, sid=sid if isinstance(sid, str) else None, ttl=ttl
            )
        except GatewayError:
            await self.token_caches.delete(session_id)
            raise
        for old in evicted:
            await end_session(self.sessions, self.token_caches, old)
        if evicted:
            audit.warning(
                "ended %d oldest session(s) of %s: at most %d per user",
                len(evicted),
                user_key,
                MAX_SESSIONS_PER_ENTRY,
                extra={"event": "session_cap", "user": user_key, "sessions": len(evicted)},
            )
        await self.sessions.save(session_id, record)
        return record

    def _check_issuer(self, auth_response: Mapping[str, str]) -> None:
        """RFC 9207 (the mix-up defence of RFC 9700 4.4): a response naming another issuer than
        the provider this sign-in was sent to is refused; so is one naming none when the provider
        says its responses always do."""
        issuer = self.msal.issuer
        named = auth_response.get("iss")
        if named is None:
            if self.msal.iss_parameter_supported:
                log.warning("authorization response without iss from a provider that sends it")
                raise BadRequest("the sign-in response does not name its issuer")
            return
        if issuer is None or not same_issuer(named, issuer):
            log.warning("authorization response from issuer %r, expected %r", named[:200], issuer)
            raise BadRequest("the sign-in response comes from another identity provider")


def same_issuer(named: str, issuer: str) -> bool:
    """Exact comparison (RFC 9207 2.4), where an Entra multi-tenant template issuer stands for
    any tenant id in its place."""
    if "{tenantid}" not in issuer:
        return named == issuer
    head, _, tail = issuer.partition("{tenantid}")
    tenant = named.removeprefix(head).removesuffix(tail)
    return named.startswith(head) and named.endswith(tail) and _TENANT.fullmatch(tenant) is not None
