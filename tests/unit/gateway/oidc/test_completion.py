"""Completing a sign-in without the gateway's HTTP (gateway/oidc/completion.py): the real MSAL
client and the development identity provider produce an authorization response, and the
completer turns it into a stored session, token cache and index entries; a refusal from the
provider and a code used twice create nothing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, Final

import pytest
from support.browser import Browser
from support.gateway import PUBLIC_URL, idp_ssl, settings_for
from support.threaded import ThreadedServer

from gateway.errors import BadRequest, IdentityProviderError, SignInNotCompleted
from gateway.oidc.completion import SignInCompleter, same_issuer
from gateway.oidc.msal_client import MsalClient
from gateway.sessions.flows import PendingSignIn
from gateway.sessions.index import MAX_SESSIONS_PER_ENTRY, SessionIndex
from gateway.sessions.sealing import Sealer
from gateway.sessions.store import SessionStore
from gateway.sessions.token_cache import TokenCacheStore
from gateway.store.memory import MemoryStorage
from gateway.tokens.subject import revocation_names

SCOPE: Final = "api://upstream/read"
ALICE_OID: Final = "0b7e2c1d-4a5f-4e3b-8c9d-1e2f3a4b5c6d"


class Rig:
    def __init__(self, idp: Any, upstream: ThreadedServer) -> None:
        self.settings = settings_for(idp, upstream.url, scopes=SCOPE)
        self.msal = MsalClient(self.settings)
        sealer = Sealer(b"k" * 32)
        self.storage = MemoryStorage()
        self.sessions = SessionStore(self.storage, sealer, 3600.0, time.time)
        self.token_caches = TokenCacheStore(self.storage, sealer)
        self.index = SessionIndex(self.storage, sealer)
        self.completer = SignInCompleter(
            settings=self.settings,
            msal=self.msal,
            sessions=self.sessions,
            token_caches=self.token_caches,
            index=self.index,
        )
        # Only the provider is visited: nothing listens at the gateway's address.
        self.browser = Browser("http://127.0.0.1:9", PUBLIC_URL, idp_ssl(idp.ca_path))

    async def pending(self, user: str = "alice") -> tuple[PendingSignIn, dict[str, str]]:
        """A started sign-in and the provider's answer to it, as the callback would get them."""
        flow = await self.msal.begin(scopes=(SCOPE,), prompt=None, domain_hint=None)
        answer = await self.browser.authorize(flow["auth_uri"], user)
        pending = PendingSignIn(
            msal_flow={k: v for k, v in flow.items() if k != "auth_uri"},
            return_to="/",
            browser_binding="not checked here",
            scopes=(SCOPE,),
        )
        return pending, answer.fields


@pytest.fixture
async def rig(idp: Any, upstream: ThreadedServer) -> AsyncIterator[Rig]:
    made = Rig(idp, upstream)
    await made.msal.start()
    yield made
    await made.browser.close()
    await made.msal.close()


async def test_a_completed_sign_in_is_stored_under_the_users_key(rig: Rig) -> None:
    pending, answer = await rig.pending("alice")
    record = await rig.completer.complete(pending, answer, session_id="s-1", now=time.time())
    assert record.user_key.startswith(f"{ALICE_OID}.")
    assert record.claims["oid"] == ALICE_OID
    token = record.token((SCOPE,))
    assert token is not None and token.access_token
    assert await rig.sessions.load("s-1") == record
    assert await rig.token_caches.load("s-1") is not None
    # Revocation finds the session by the user key and by the object id operators see.
    assert await rig.index.take_user(record.user_key) == ["s-1"]
    assert await rig.index.take_user(ALICE_OID) == ["s-1"]


async def test_a_refusal_or_a_reused_code_creates_nothing(rig: Rig) -> None:
    pending, answer = await rig.pending("alice")
    refused = {"state": answer["state"], "error": "server_error", "error_description": "no"}
    with pytest.raises(IdentityProviderError, match=r"refused the sign-in \(server_error\)"):
        await rig.completer.complete(pending, refused, session_id="s-2", now=time.time())
    for choice in ("access_denied", "consent_required", "interaction_required", "login_required"):
        declined = {"state": answer["state"], "error": choice}
        with pytest.raises(SignInNotCompleted, match=rf"\({choice}\)"):
            await rig.completer.complete(pending, declined, session_id="s-2", now=time.time())
    odd = {"state": answer["state"], "error": "<script>"}
    with pytest.raises(IdentityProviderError, match=r"\(error\)"):
        await rig.completer.complete(pending, odd, session_id="s-2", now=time.time())
    await rig.completer.complete(pending, answer, session_id="s-3", now=time.time())
    with pytest.raises((BadRequest, IdentityProviderError)):
        await rig.completer.complete(pending, answer, session_id="s-4", now=time.time())
    assert await rig.sessions.load("s-2") is None
    assert await rig.sessions.load("s-4") is None
    assert await rig.token_caches.load("s-4") is None


async def test_an_answer_naming_another_issuer_is_refused(rig: Rig) -> None:
    """RFC 9207 with a provider that does not advertise the parameter (as Entra): an `iss` that is
    present must still be this provider's."""
    assert not rig.msal.iss_parameter_supported
    pending, answer = await rig.pending("alice")
    with pytest.raises(BadRequest, match="another identity provider"):
        await rig.completer.complete(
            pending, {**answer, "iss": "https://attacker.example/v2.0"}, session_id="s-5", now=0.0
        )
    assert await rig.sessions.load("s-5") is None
    issuer = rig.msal.issuer
    assert issuer is not None
    record = await rig.completer.complete(
        pending, {**answer, "iss": issuer}, session_id="s-6", now=time.time()
    )
    assert record.claims["oid"] == ALICE_OID


TEMPLATE: Final = "https://login.microsoftonline.com/{tenantid}/v2.0"
TENANT: Final = "72f988bf-86f1-41af-91ab-2d7cd011db47"


@pytest.mark.parametrize(
    ("named", "issuer", "same"),
    [
        ("https://login.example/t/v2.0", "https://login.example/t/v2.0", True),
        ("https://login.example/t/v2.0/", "https://login.example/t/v2.0", False),  # exact
        ("https://LOGIN.example/t/v2.0", "https://login.example/t/v2.0", False),
        (f"https://login.microsoftonline.com/{TENANT}/v2.0", TEMPLATE, True),
        ("https://login.microsoftonline.com/common/v2.0", TEMPLATE, False),
        (f"https://login.microsoftonline.com/{TENANT}/x/v2.0", TEMPLATE, False),
        (f"https://evil.example/{TENANT}/v2.0", TEMPLATE, False),
        (TEMPLATE, TEMPLATE, False),
    ],
)
def test_issuer_comparison(named: str, issuer: str, same: bool) -> None:
    assert same_issuer(named, issuer) is same


async def test_past_the_per_user_cap_the_oldest_session_ends(rig: Rig) -> None:
    """Issue 14 item 4: the index holds at most MAX_SESSIONS_PER_ENTRY sessions per user; the
    sign-in beyond that ends the oldest instead of leaving it running where revocation cannot
    find it."""
    pending, answer = await rig.pending("alice")
    first = await rig.completer.complete(pending, answer, session_id="old-0", now=time.time())
    for n in range(1, MAX_SESSIONS_PER_ENTRY):  # the rest of the cap, straight into the index
        await rig.sessions.save(f"old-{n}", first)
        evicted = await rig.index.add(
            f"old-{n}", users=revocation_names(first.claims), sid=None, ttl=3600.0
        )
        assert evicted == set()
    pending, answer = await rig.pending("alice")
    await rig.completer.complete(pending, answer, session_id="newest", now=time.time())
    assert await rig.sessions.load("old-0") is None  # ended, not forgotten
    assert await rig.token_caches.load("old-0") is None
    assert await rig.sessions.load("old-1") is not None
    revoked = await rig.index.take_user(ALICE_OID)
    assert len(revoked) == MAX_SESSIONS_PER_ENTRY
    assert "newest" in revoked and "old-0" not in revoked
