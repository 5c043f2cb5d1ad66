"""MsalClient: the asynchronous face of MSAL, and the only module that calls it.

MSAL is synchronous and does network I/O in its constructor and token calls (ENTRA.md a.1), so every
call runs in a dedicated thread pool, bounded by a semaphore, never on the event loop. Sign-in steps
(starting a flow, redeeming a code) have a pool of their own, entered by turns that wait a bounded
time (`signin_turn`): a sign-in storm neither takes the threads signed-in users' refreshes need
nor piles up waiting callbacks; past the wait it is a 503 with Retry-After. Each call
builds a short-lived ConfidentialClientApplication around one session's token cache (ENTRA.md d.2).
Discovery responses are shared through a seed `http_cache` copied per call, so token-endpoint
throttling entries never leak from one user's call into another's (ENTRA.md c.22). MSAL's result
dicts and exceptions are translated here into the gateway's errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import importlib.util
import json
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import jwt
import msal
import requests

from gateway.config.settings import Settings
from gateway.errors import (
    BadRequest,
    IdentityProviderError,
    RenewalRefused,
    SignInQueueFull,
    SignInRequired,
    StepUpRequired,
)
from gateway.oidc import credentials
from gateway.oidc.credential_files import Expiry, LiveCredential
from gateway.oidc.discovery import Provider
from gateway.oidc.graph import GraphError, transitive_group_ids
from gateway.oidc.turns import Step, Turns
from gateway.tokens import id_tokens
from gateway.tokens.id_tokens import IdTokenPolicy

log = logging.getLogger(__name__)

T = TypeVar("T")
FAILED_REFRESH_RETRY_SECONDS: Final = 30.0
SEED_MAX_AGE_SECONDS: Final = 12 * 3600.0
# Errors after which the session's refresh token is useless: the session is over.
INTERACTION_ERRORS: Final = frozenset({"invalid_grant"})
# Errors (or suberrors) after which only these scopes or claims need the user; the session stays.
STEP_UP_ERRORS: Final = frozenset({"interaction_required", "consent_required"})


@dataclass(frozen=True, slots=True)
class Tokens:
    """What a redemption or refresh produced for the session record."""

    access_token: str
    expires_at: float
    refresh_at: float
    id_token: str | None
    claims: dict[str, Any] | None  # verified id_token claims, when a new id_token came back
    home_account_id: str | None
    cache: str | None  # the serialized token cache, when it changed


_JWT_LIKE: Final = re.compile(r"eyJ[\w-]*\.[\w-]*\.?[\w-]*")
_ERROR_CODE: Final = re.compile(r"^[a-z_]{1,64}$")


def _describe(result: Mapping[str, Any]) -> str:
    """For the log: the error and the first line of its description, without anything that looks
    like a token, and bounded."""
    error = str(result.get("error", "unknown_error"))[:64]
    description = str(result.get("error_description", "")).split("\r\n")[0].split("\n")[0]
    text = f"{error}: {description}" if description else error
    return _JWT_LIKE.sub("[redacted]", text)[:300]


def _refused(what: str, result: Mapping[str, Any]) -> IdentityProviderError:
    """The error users see: the OAuth error code and the correlation id, never the description
    (it can carry internals); the description goes to the log."""
    log.warning("%s: %s", what, _describe(result))
    error = str(result.get("error", ""))
    code = error if _ERROR_CODE.match(error) else "error"
    correlation = str(result.get("correlation_id", ""))[:64]
    suffix = f", correlation id {correlation}" if re.fullmatch(r"[\w-]+", correlation) else ""
    return IdentityProviderError(f"{what} ({code}{suffix})")


def _skip_absent_extension_probe() -> None:
    """MSAL's constructor tries `import msal_extensions` every time (to check its version). When
    it is not installed, each try searches sys.path under the import lock: a fifth of the MSAL
    threads' busy time in a sign-in storm, serialized. A None in sys.modules makes the import fail
    at once, which MSAL takes as "not installed", as it is; an installed one is left alone."""
    if "msal_extensions" not in sys.modules and importlib.util.find_spec("msal_extensions") is None:
        sys.modules["msal_extensions"] = None  # type: ignore[assignment]


class MsalClient:
    """Sign-in and token operations against one authority, for one client registration."""

    def __init__(
        self, settings: Settings, *, observe_expiry: Callable[[Expiry], None] | None = None
    ) -> None:
        self._settings = settings
        self._executor = ThreadPoolExecutor(
            max_workers=settings.msal.worker_threads, thread_name_prefix="msal"
        )
        self._slots = asyncio.Semaphore(settings.msal.worker_threads)
        # Sign-in steps: one thread per turn, so a step that has its turn never queues for one.
        self._signin_executor = ThreadPoolExecutor(
            max_workers=settings.signin.max_concurrent, thread_name_prefix="msal-signin"
        )
        self._signin_turns = Turns(settings.signin.max_concurrent)
        _skip_absent_extension_probe()
        self._http = credentials.http_session(settings)
        self._credential = LiveCredential(settings, self._http, observe_expiry)
        self._seed_cache: dict[str, Any] = {}
        self._seeded_at = time.monotonic()
        self._starter: tuple[float, msal.ConfidentialClientApplication] | None = None
        self._provider: Provider | None = None
        self._loaded = asyncio.Event()
        self._policy: IdTokenPolicy | None = None

    def _application(
        self, cache: msal.SerializableTokenCache, http_cache: dict[str, Any] | None = None
    ) -> msal.ConfidentialClientApplication:
        settings = self._settings
        where: dict[str, Any] = (
            {"oidc_authority": settings.oidc_authority}
            if settings.oidc_authority
            else {"authority": settings.authority_url}
        )
        return msal.ConfidentialClientApplication(
            settings.client_id,
            client_credential=self._credential.current(),
            token_cache=cache,
            http_client=self._http,
            # A private copy: throttling of one call must not refuse another user's (c.22).
            http_cache=self._seed_copy() if http_cache is None else http_cache,
            instance_discovery=False,
            azure_region=False,
            client_capabilities=list(settings.tokens.client_capabilities) or None,
            **where,
        )

    def _flow_starter(self) -> msal.ConfidentialClientApplication:
        """The application every sign-in start uses. Starting a flow reads only the authority's
        endpoints and the registration's settings (no credential, token cache or network), so one
        application serves them all, without a construction and a copy of the discovery seed per
        start; it is rebuilt with the seed, so that renewed endpoints reach it."""
        starter = self._starter
        if (
            starter is None
            or starter[0] != self._seeded_at
            or time.monotonic() - self._seeded_at > SEED_MAX_AGE_SECONDS
        ):
            app = self._application(msal.SerializableTokenCache())  # renews an old seed first
            starter = self._starter = (self._seeded_at, app)
        return starter[1]

    def _seed_copy(self) -> dict[str, Any]:
        """A copy of the discovery cache. MSAL keeps discovery for 24 h; the seed is renewed
        after 12, so calls never fall back to a discovery request each."""
        if time.monotonic() - self._seeded_at > SEED_MAX_AGE_SECONDS:
            fresh: dict[str, Any] = {}
            try:
                self._application(msal.SerializableTokenCache(), http_cache=fresh)
            except (requests.RequestException, ValueError, KeyError, msal.exceptions.MsalError):
                log.warning("could not renew the discovery cache; using the previous one")
            else:
                self._seed_cache = fresh
            self._seeded_at = time.monotonic()
        return copy.deepcopy(self._seed_cache)

    async def _run(self, func: Callable[[], T]) -> T:
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(self._executor, func)

    @contextlib.asynccontextmanager
    async def signin_turn(self, step: Step) -> AsyncIterator[None]:
        """A turn for one sign-in step (a start, or a callback from before its pending sign-in is
        taken until its session is written); waiting callbacks go before waiting starts
        (oidc/turns.py). SignInQueueFull (503, Retry-After) when none comes free within
        GATEWAY_SIGNIN__QUEUE_SECONDS: waiting steps never pile up unbounded."""
        try:
            async with asyncio.timeout(self._settings.signin.queue_seconds):
                await self._signin_turns.take(step)
        except TimeoutError:
            log.warning(
                "sign-in %s refused: all GATEWAY_SIGNIN__MAX_CONCURRENT sign-in turns stayed busy "
                "for GATEWAY_SIGNIN__QUEUE_SECONDS",
                step.value,
                extra={"event": "sign_in_queue_full"},
            )
            raise SignInQueueFull("too many sign-ins are in progress; try again shortly") from None
        try:
            yield
        finally:
            self._signin_turns.give_back()

    async def _run_signin_step(self, func: Callable[[], T]) -> T:
        """`func` on the sign-in pool; the caller holds a `signin_turn`."""
        return await asyncio.get_running_loop().run_in_executor(self._signin_executor, func)

    def _credential_renewed(self, result: Mapping[str, Any] | None) -> bool:
        """After an `invalid_client`: whether the credential files hold a new credential now, so
        the call is worth one retry (the secret may have been rotated at the provider first)."""
        if result is None or result.get("error") != "invalid_client":
            return False
        if not self._credential.reread():
            return False
        log.info("the provider refused the client credential; retrying with the one just read")
        return True

    def _check_credential(self, result: Mapping[str, Any]) -> None:
        """Tell the operator which setting to fix when the provider rejects our credential."""
        if result.get("error") == "invalid_client":
            log.error(
                "the identity provider rejected the client credential configured by %s: %s",
                credentials.credential_setting(self._settings),
                _describe(result),
            )

    # ---- start-up ----

    @property
    def ready(self) -> bool:
        return self._provider is not None

    @property
    def issuer(self) -> str | None:
        """The provider's published issuer (possibly an Entra {tenantid} template)."""
        return self._provider.issuer if self._provider else None

    @property
    def iss_parameter_supported(self) -> bool:
        """Whether the provider's authorization responses carry `iss` (RFC 9207)."""
        return self._provider.iss_parameter_supported if self._provider else False

    def cached_key(self, kid: str | None) -> jwt.PyJWK | None:
        return self._provider.cached_key(kid) if self._provider else None

    async def refetch_keys(self) -> None:
        """Fetch the provider's keys again (at most once a minute), off the event loop."""
        if self._provider is not None:
            await self._run(self._provider.refetch_keys)

    async def on_behalf_of(self, assertion: str, scopes: tuple[str, ...]) -> tuple[str, float]:
        """A token for `scopes` on behalf of the caller whose access token is `assertion`, with
        its expiry. MSAL never serves OBO from its cache (ENTRA.md a.6): the caller caches.
        StepUpRequired when only the user can consent; IdentityProviderError otherwise."""
        return await self._run(functools.partial(self._on_behalf_of, assertion, scopes))

    def _on_behalf_of(self, assertion: str, scopes: tuple[str, ...]) -> tuple[str, float]:
        for attempt in (1, 2):
            try:
                app = self._application(msal.SerializableTokenCache())
                result = app.acquire_token_on_behalf_of(assertion, list(scopes))
            except (requests.RequestException, msal.exceptions.MsalError) as exc:
                raise IdentityProviderError("the identity provider could not be reached") from exc
            except (ValueError, KeyError) as exc:
                raise IdentityProviderError(
                    "the identity provider sent a malformed answer"
                ) from exc
            if attempt == 2 or not self._credential_renewed(result):
                break
        if "error" in result:
            self._check_credential(result)
            if result.get("suberror") in STEP_UP_ERRORS or result.get("error") in STEP_UP_ERRORS:
                raise StepUpRequired(
                    "on-behalf-of needs the user's consent", scopes=scopes, claims=None
                )
            raise _refused("on-behalf-of failed", result)
        return str(result["access_token"]), time.time() + float(result.get("expires_in", 0))

    @property
    def end_session_endpoint(self) -> str | None:
        return self._provider.end_session_endpoint if self._provider else None

    async def start(self) -> None:
        """Load the provider's metadata and keys and warm MSAL's discovery cache.

        Raises IdentityProviderError naming what failed; the caller decides whether that is fatal.
        """
        await self._run(self._warm_up)
        self._loaded.set()

    async def loaded(self) -> None:
        """Until the provider's metadata and keys are loaded (start() succeeded)."""
        await self._loaded.wait()

    def _warm_up(self) -> None:
        settings = self._settings
        seed: dict[str, Any] = {}
        try:
            self._application(msal.SerializableTokenCache(), http_cache=seed)
        except (requests.RequestException, ValueError, KeyError, msal.exceptions.MsalError) as exc:
            raise IdentityProviderError(
                f"MSAL cannot use the authority {settings.authority_url}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if settings.oidc_authority:
            discovery = settings.oidc_authority + "/.well-known/openid-configuration"
        else:
            discovery = settings.authority_url + "/v2.0/.well-known/openid-configuration"
        provider = Provider.load(self._http, discovery, exact_issuer=settings.oidc_authority)
        if settings.oidc_authority and settings.signin.prompt != "consent":
            log.warning(
                "MSAL always asks for offline_access; some OpenID providers grant it (and a "
                "refresh token) only with prompt=consent. If sessions cannot refresh, set "
                "GATEWAY_SIGNIN__PROMPT=consent or let the provider grant offline_access."
            )
        self._seed_cache = seed
        self._seeded_at = time.monotonic()
        self._policy = IdTokenPolicy(
            issuer=provider.issuer,
            audience=settings.client_id,
            allowed_tenants=frozenset(settings.allowed_tenants),
            leeway_seconds=settings.signin.clock_skew_seconds,
        )
        self._provider = provider

    def _verified_claims(self, id_token: str) -> dict[str, Any]:
        assert self._provider is not None and self._policy is not None
        key = self._provider.signing_key(id_tokens.key_id(id_token))
        return id_tokens.validate(id_token, key, self._policy)

    # ---- sign-in ----

    async def begin(
        self,
        *,
        scopes: tuple[str, ...],
        prompt: str | None,
        domain_hint: str | None,
        claims: str | None = None,
    ) -> dict[str, Any]:
        """A new auth-code flow (state, PKCE verifier, nonce, auth_uri) asking for `scopes` and,
        if given, a claims challenge. No network I/O."""
        settings = self._settings
        if not self.ready:
            raise IdentityProviderError("the identity provider's metadata is not loaded yet")

        def initiate() -> dict[str, Any]:
            flow: dict[str, Any] = self._flow_starter().initiate_auth_code_flow(
                list(scopes),
                redirect_uri=settings.redirect_uri,
                response_mode=settings.response_mode,
                prompt=prompt,
                domain_hint=domain_hint,
                claims_challenge=claims,
            )
            return flow

        try:
            async with self.signin_turn(Step.START):
                return await self._run_signin_step(initiate)
        except (requests.RequestException, ValueError, msal.exceptions.MsalError) as exc:
            raise IdentityProviderError("the identity provider is unavailable") from exc

    async def redeem(self, flow: dict[str, Any], auth_response: dict[str, str]) -> Tokens:
        """Redeem the code and apply the id_token policy. BadRequest for a callback that does not
        match its flow (state, nonce, PKCE, policy); IdentityProviderError when the provider says
        no or cannot be reached. The caller holds a `signin_turn`."""
        return await self._run_signin_step(functools.partial(self._redeem, flow, auth_response))

    def _redeem(self, flow: dict[str, Any], auth_response: dict[str, str]) -> Tokens:
        for attempt in (1, 2):
            try:
                cache, result = self._redeem_once(flow, auth_response)
            except (requests.RequestException, msal.exceptions.MsalError) as exc:
                raise IdentityProviderError("the identity provider could not be reached") from exc
            if attempt == 2 or not self._credential_renewed(result):
                break
        if "error" in result:
            self._check_credential(result)
            raise _refused("the identity provider refused the sign-in", result)
        if "refresh_token" not in result:
            log.warning(
                "the identity provider issued no refresh token, so sessions cannot renew tokens "
                "silently; providers such as node oidc-provider grant offline_access only with "
                "GATEWAY_SIGNIN__PROMPT=consent"
            )
        id_token = result.get("id_token")
        if not isinstance(id_token, str):
            # Without an id_token MSAL skipped the nonce check, and we cannot know the user.
            raise BadRequest("the identity provider returned no id_token")
        claims = self._verified_claims(id_token)
        return self._tokens(result, claims, cache, home_account_id=self._home_account_id(cache))

    def _redeem_once(
        self, flow: dict[str, Any], auth_response: dict[str, str]
    ) -> tuple[msal.SerializableTokenCache, dict[str, Any]]:
        """One redemption with a fresh cache; the flow is copied, since MSAL changes it."""
        cache = msal.SerializableTokenCache()
        try:
            app = self._application(cache)
            result = app.acquire_token_by_auth_code_flow(dict(flow), auth_response)
        except json.JSONDecodeError as exc:  # a ValueError too: the provider sent no JSON
            raise IdentityProviderError("the identity provider sent a malformed answer") from exc
        except ValueError as exc:  # state mismatch, malformed response
            raise BadRequest("the sign-in response does not match the sign-in request") from exc
        except RuntimeError as exc:
            # Nonce or max_age failure, raised after MSAL already filled the cache (ENTRA.md c.9):
            # the cache is dropped with this frame and never persisted.
            raise BadRequest("the sign-in response failed verification (nonce)") from exc
        return cache, result

    @staticmethod
    def _home_account_id(cache: msal.SerializableTokenCache) -> str | None:
        accounts = list(cache.search(msal.TokenCache.CredentialType.ACCOUNT))
        if accounts:
            return str(accounts[0]["home_account_id"])
        id_tokens_found = list(cache.search(msal.TokenCache.CredentialType.ID_TOKEN))
        return str(id_tokens_found[0]["home_account_id"]) if id_tokens_found else None

    def _tokens(
        self,
        result: Mapping[str, Any],
        claims: dict[str, Any] | None,
        cache: msal.SerializableTokenCache,
        *,
        home_account_id: str | None,
    ) -> Tokens:
        now = time.time()
        expires_at = now + float(result.get("expires_in", 0) or 0)
        refresh_at = expires_at - self._settings.tokens.refresh_skew_seconds
        if result.get("refresh_on"):
            refresh_at = min(refresh_at, float(result["refresh_on"]))
        if result.get("token_source") == "cache" and refresh_at <= now:
            # MSAL fell back to the still-valid cached token because the refresh failed: retry
            # later, not on every request (the hot path must not call the provider each time).
            refresh_at = min(now + FAILED_REFRESH_RETRY_SECONDS, expires_at - 300)
        return Tokens(
            access_token=str(result.get("access_token", "")),
            expires_at=expires_at,
            refresh_at=max(now, refresh_at),
            id_token=result.get("id_token") if isinstance(result.get("id_token"), str) else None,
            claims=claims,
            home_account_id=home_account_id,
            cache=cache.serialize() if cache.has_state_changed else None,
        )

    # ---- refresh ----

    async def refresh(
        self,
        serialized_cache: str,
        home_account_id: str,
        scopes: tuple[str, ...],
        *,
        force: bool,
        claims: str | None = None,
    ) -> Tokens:
        """A token for `scopes` (and a claims challenge) from the session's cache: from the
        cache when still good, else through the refresh token.

        SignInRequired when the session can no longer get tokens (no account, revoked or
        expired refresh token); StepUpRequired when only the user can provide what these scopes
        or claims need (consent, Conditional Access); IdentityProviderError when the provider
        cannot be reached or fails.
        """
        return await self._run(
            functools.partial(
                self._refresh, serialized_cache, home_account_id, scopes, force, claims
            )
        )

    def _refresh(
        self,
        serialized_cache: str,
        home_account_id: str,
        scopes: tuple[str, ...],
        force: bool,
        claims: str | None,
    ) -> Tokens:
        for attempt in (1, 2):
            cache, result = self._refresh_once(
                serialized_cache, home_account_id, scopes, force, claims
            )
            if attempt == 2 or not self._credential_renewed(result):
                break
        if result is None:
            raise SignInRequired("the session's tokens cannot be renewed")
        if "error" in result:
            self._check_credential(result)
            self._raise_for(result, scopes, claims)
        id_claims = None
        id_token = result.get("id_token")
        if isinstance(id_token, str) and result.get("token_source") != "cache":
            id_claims = self._verified_claims(id_token)
        return self._tokens(result, id_claims, cache, home_account_id=home_account_id)

    def _refresh_once(
        self,
        serialized_cache: str,
        home_account_id: str,
        scopes: tuple[str, ...],
        force: bool,
        claims: str | None,
    ) -> tuple[msal.SerializableTokenCache, dict[str, Any] | None]:
        """One silent acquisition on a fresh copy of the stored cache."""
        cache = msal.SerializableTokenCache()
        cache.deserialize(serialized_cache)
        skew = self._settings.tokens.refresh_skew_seconds
        try:
            app = self._application(cache)
            account = next(
                (a for a in app.get_accounts() if a.get("home_account_id") == home_account_id),
                None,
            )
            if account is None:
                raise SignInRequired("the session holds no tokens")
            result = app.acquire_token_silent_with_error(
                list(scopes), account, force_refresh=force, claims_challenge=claims
            )
            if (
                result is not None
                and "error" not in result
                and result.get("token_source") == "cache"
                and float(result.get("expires_in", 0)) < skew
            ):
                # MSAL reuses tokens with more than 5 minutes left; a larger skew must force it.
                result = app.acquire_token_silent_with_error(
                    list(scopes), account, force_refresh=True
                )
        except (requests.RequestException, msal.exceptions.MsalError) as exc:
            raise IdentityProviderError("the identity provider could not be reached") from exc
        except (ValueError, KeyError) as exc:  # a non-JSON or malformed answer
            raise IdentityProviderError("the identity provider sent a malformed answer") from exc
        return cache, result

    @staticmethod
    def _raise_for(result: Mapping[str, Any], scopes: tuple[str, ...], claims: str | None) -> None:
        error = result.get("error")
        log.info("token refresh refused: %s", _describe(result))
        if (
            error in STEP_UP_ERRORS
            or result.get("suberror") in STEP_UP_ERRORS
            or (error == "invalid_grant" and claims is not None)
        ):
            raise StepUpRequired(
                "the identity provider needs the user for this",
                scopes=scopes,
                claims=result.get("claims") or claims,
            )
        if error in INTERACTION_ERRORS:
            raise RenewalRefused("please sign in again")
        raise _refused("token refresh failed", result)

    # ---- group overage ----

    async def resolve_groups(
        self, serialized_cache: str, home_account_id: str
    ) -> tuple[tuple[str, ...], str | None]:
        """The user's transitive group ids from Microsoft Graph, with a Graph token from the
        session's cache, and the cache if that changed it. IdentityProviderError otherwise."""
        return await self._run(
            functools.partial(self._resolve_groups, serialized_cache, home_account_id)
        )

    def _resolve_groups(
        self, serialized_cache: str, home_account_id: str
    ) -> tuple[tuple[str, ...], str | None]:
        settings = self._settings.groups
        cache = msal.SerializableTokenCache()
        cache.deserialize(serialized_cache)
        try:
            app = self._application(cache)
            account = next(
                (a for a in app.get_accounts() if a.get("home_account_id") == home_account_id),
                None,
            )
            result = (
                app.acquire_token_silent_with_error(list(settings.graph_scopes), account)
                if account
                else None
            )
        except (requests.RequestException, msal.exceptions.MsalError) as exc:
            raise IdentityProviderError("the identity provider could not be reached") from exc
        except (ValueError, KeyError) as exc:
            raise IdentityProviderError("the identity provider sent a malformed answer") from exc
        if not result or "error" in result:
            if not result:
                raise IdentityProviderError("cannot get a Graph token to read groups (no token)")
            raise _refused("cannot get a Graph token to read groups", result)
        try:
            groups = transitive_group_ids(
                self._http, settings.graph_url, result["access_token"], settings.graph_page_size
            )
        except GraphError as exc:
            raise IdentityProviderError(f"cannot read group membership: {exc}") from exc
        return tuple(groups), cache.serialize() if cache.has_state_changed else None

    async def close(self) -> None:
        """Wait for MSAL calls in flight (bounded by the timeouts), then close the connections:
        closing first would let a finishing call open a connection nobody closes."""
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        await asyncio.to_thread(self._signin_executor.shutdown, wait=True, cancel_futures=True)
        self._http.close()
