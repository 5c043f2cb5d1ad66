"""Typed keys for application and request state. Only app.py writes app state; handlers read it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from aiohttp import ClientSession, web
from yarl import URL

from gateway.auth.access import AccessControl
from gateway.auth.identity import ApiCallers, Refresher
from gateway.auth.peers import Network
from gateway.auth.policy import Policy
from gateway.auth.ratelimit import SignInLimits
from gateway.auth.sockets import SocketRegistry
from gateway.config.settings import Settings
from gateway.sessions.flows import FlowStore
from gateway.sessions.index import SessionIndex
from gateway.sessions.sealing import Sealer
from gateway.sessions.store import SessionStore
from gateway.store.storage import Storage
from gateway.telemetry.metrics import TIMING_KEY, Metrics
from gateway.tokens.assertion import AssertionSigner
from gateway.upstream.client import UpstreamPool
from gateway.upstream.pacing import Pace
from gateway.upstream.readiness import ApplicationReadiness
from gateway.upstream.shares import SlotShares

if TYPE_CHECKING:  # The sign-in path's types stay out of the hot path's imports.
    from gateway.endpoints.admin_token import AdminToken  # noqa: F401
    from gateway.oidc.completion import SignInCompleter  # noqa: F401
    from gateway.oidc.msal_client import MsalClient  # noqa: F401
    from gateway.sessions.token_cache import TokenCacheStore  # noqa: F401

SETTINGS: Final = web.AppKey("settings", Settings)
UPSTREAM: Final = web.AppKey("upstream", ClientSession)
UPSTREAM_BASE: Final = web.AppKey("upstream_base", URL)
UPSTREAM_POOL: Final = web.AppKey("upstream_pool", UpstreamPool)
# How fast clients must send bodies and read answers, and their share of the pool's connections.
CLIENT_PACE: Final = web.AppKey("client_pace", Pace)
SLOT_SHARES: Final = web.AppKey("slot_shares", SlotShares)
# GATEWAY_PROXY__UPSTREAM_HEADERS and _HEADER_FILES (read once, at start): (name, value) pairs.
STATIC_HEADERS: Final = web.AppKey("static_headers", tuple[tuple[str, str], ...])
# Every header name the operator configured (fixed and claim headers), folded: removed from
# clients' requests in every spelling.
CONFIGURED_HEADER_NAMES: Final = web.AppKey("configured_header_names", frozenset[str])
# The path of GATEWAY_UPSTREAM without its final "/": put before every proxied path.
UPSTREAM_PREFIX: Final = web.AppKey("upstream_prefix", str)
# The public URL's path prefix when the application receives paths without it, else "".
STRIPPED_PREFIX: Final = web.AppKey("stripped_prefix", str)
STORAGE: Final = web.AppKey[Storage]("storage")
SEALER: Final = web.AppKey("sealer", Sealer)
SESSIONS: Final = web.AppKey("sessions", SessionStore)
FLOWS: Final = web.AppKey("flows", FlowStore)
SESSION_INDEX: Final = web.AppKey("session_index", SessionIndex)
TOKEN_CACHES: Final = web.AppKey["TokenCacheStore"]("token_caches")
MSAL: Final = web.AppKey["MsalClient"]("msal")
SIGN_IN: Final = web.AppKey["SignInCompleter"]("sign_in")
POLICY: Final = web.AppKey("policy", Policy)
SIGNIN_LIMITS: Final = web.AppKey("signin_limits", SignInLimits)
DRAINING: Final = web.AppKey("draining", asyncio.Event)  # set on SIGTERM: readiness goes false
# Absent unless GATEWAY_PROXY__UPSTREAM_READY_PATH: the application's readiness, cached.
APPLICATION_READINESS: Final = web.AppKey("application_readiness", ApplicationReadiness)
OPEN_WEBSOCKETS: Final = web.AppKey("open_websockets", set[web.WebSocketResponse])
# Every relayed WebSocket's lease, by session and user: ending a session closes its sockets.
SOCKETS: Final = web.AppKey("sockets", SocketRegistry)
ASSERTION: Final = web.AppKey("assertion", AssertionSigner)  # absent unless enabled
# Absent unless GATEWAY_ADMIN__TOKEN or _FILE: then /.auth/admin/* does not exist.
ADMIN_TOKEN: Final = web.AppKey["AdminToken"]("admin_token")
TRUSTED_PROXIES: Final = web.AppKey[tuple[Network, ...]]("trusted_proxies")
METRICS: Final = web.AppKey("metrics", Metrics)
# A Protocol: the hot path reaches MSAL only through this object.
REFRESHER: Final = web.AppKey[Refresher]("refresher")
API_CALLERS: Final = web.AppKey[ApiCallers]("api_callers")  # absent unless GATEWAY_API__AUDIENCES
# The one access decision, for the proxy and for forward-auth.
ACCESS: Final = web.AppKey("access", AccessControl)

REQUEST_ID: Final = web.RequestKey("request_id", str)
# The client's address as resolved through trusted proxies, worked out once per request.
CLIENT_ADDRESS: Final = web.RequestKey("client_address", str)
# Set while a handler waits on the application: called (by server/refusals.py) when the client's
# connection is lost, so the application's request is abandoned rather than run to its end.
CLIENT_GONE: Final = web.RequestKey[Callable[[], object]]("client_gone")
TIMING: Final = TIMING_KEY
