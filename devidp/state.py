"""The running emulator's mutable state: clients, users, lifetimes, faults, grants, keys, log and
directory policies.

One `DevIdpState` per emulator. Every method is thread-safe: the event loop reads it while test
threads change it through `control.DevIdpControl`. `reset()` returns to the configuration.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final, TypeVar

from aiohttp import web

from .config import Client, DevIdpConfig, User
from .directory_policies import Policies
from .faults import AuthorizeError, Delay, Endpoint, ForcedResponse, TokenFaults
from .grants import Grants
from .requestlog import RequestLog
from .signing_keys import KeyRing

TENANT_ALIASES = frozenset({"organizations", "common"})
_Fault = TypeVar("_Fault", ForcedResponse, Delay)


@dataclass(frozen=True, slots=True)
class Lifetimes:
    """Token lifetimes (seconds) and the refresh-token rotation rule currently in force."""

    expires_in: int
    ext_expires_in: int | None
    refresh_in: int | None
    strict_rotation: bool


@dataclass(frozen=True, slots=True)
class Urls:
    """Where the emulator is reachable; known only once the listening port is bound."""

    base_url: str
    tenant_id: str
    # Where browsers are sent (authorize, sign-out): plain http on loopback when the pages have a
    # listener of their own, so a stock browser shows no certificate warning. None: base_url.
    browser_base_url: str | None = None

    @property
    def authority(self) -> str:
        return f"{self.base_url}/{self.tenant_id}"

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/{self.tenant_id}/v2.0"

    def endpoint(self, tenant: str, path: str) -> str:
        return f"{self.base_url}/{tenant}/{path}"

    def browser_endpoint(self, tenant: str, path: str) -> str:
        return f"{self.browser_base_url or self.base_url}/{tenant}/{path}"


class DevIdpState:
    def __init__(self, config: DevIdpConfig, keys: KeyRing, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.keys = keys
        self.grants = Grants(
            clock,
            code_lifetime=config.code_lifetime_seconds,
            refresh_lifetime=config.refresh_token_lifetime_seconds,
        )
        self.log = RequestLog()
        self.policies = Policies(config.groups_overage_limit)
        self.group_names = {g.id: g.display_name for g in config.groups}
        self.urls = Urls(f"https://{config.url_host}:{config.port}", config.tenant_id)
        self._lock = threading.Lock()
        self._clients: dict[str, Client] = {}
        self._users: tuple[User, ...] = ()
        self._lifetimes = self._configured_lifetimes()
        self._forced: dict[Endpoint, ForcedResponse] = {}
        self._delays: dict[Endpoint, Delay] = {}
        self._authorize_error: AuthorizeError | None = None
        self._token_faults = TokenFaults()
        self.reset()

    def _configured_lifetimes(self) -> Lifetimes:
        c = self.config
        return Lifetimes(c.expires_in, c.ext_expires_in, c.refresh_in, c.strict_rotation)

    def reset(self) -> None:
        """Back to the configuration: faults, lifetimes, users, clients, grants, keys, log,
        policies (overage limit, consent, step-up)."""
        with self._lock:
            self._clients = {c.client_id: c for c in self.config.clients}
            self._users = self.config.users
            self._lifetimes = self._configured_lifetimes()
            self._forced.clear()
            self._delays.clear()
            self._authorize_error = None
            self._token_faults = TokenFaults()
        self.grants.reset()
        self.keys.reset()
        self.log.clear()
        self.policies.reset()

    def clear_faults(self) -> None:
        with self._lock:
            self._forced.clear()
            self._delays.clear()
            self._authorize_error = None
            self._token_faults = TokenFaults()

    def resolve_tenant(self, segment: str) -> str | None:
        """The tenant id for a path segment (GUID, domain or alias), or None if unknown."""
        lowered = segment.lower()
        if lowered in {self.config.tenant_id, self.config.tenant_domain.lower()}:
            return self.config.tenant_id
        return lowered if lowered in TENANT_ALIASES else None

    # clients and users

    def client(self, client_id: str) -> Client | None:
        with self._lock:
            return self._clients.get(client_id)

    def clients(self) -> tuple[Client, ...]:
        with self._lock:
            return tuple(self._clients.values())

    def register_client(self, client: Client) -> None:
        with self._lock:
            self._clients[client.client_id] = client

    def users(self) -> tuple[User, ...]:
        with self._lock:
            return self._users

    def find_user(self, selector: str) -> User | None:
        return next((u for u in self.users() if u.matches(selector)), None)

    def add_user(self, user: User) -> None:
        with self._lock:
            kept = tuple(u for u in self._users if u.username != user.username)
            self._users = (*kept, user)

    # lifetimes

    @property
    def lifetimes(self) -> Lifetimes:
        with self._lock:
            return self._lifetimes

    def set_lifetimes(self, lifetimes: Lifetimes) -> None:
        with self._lock:
            self._lifetimes = lifetimes

    # faults

    def force(self, endpoint: Endpoint, response: ForcedResponse | None) -> None:
        with self._lock:
            if response is None:
                self._forced.pop(endpoint, None)
            else:
                self._forced[endpoint] = response

    def delay(self, endpoint: Endpoint, delay: Delay | None) -> None:
        with self._lock:
            if delay is None:
                self._delays.pop(endpoint, None)
            else:
                self._delays[endpoint] = delay

    def set_authorize_error(self, fault: AuthorizeError | None) -> None:
        with self._lock:
            self._authorize_error = fault

    @property
    def token_faults(self) -> TokenFaults:
        with self._lock:
            return self._token_faults

    def set_token_faults(self, faults: TokenFaults) -> None:
        with self._lock:
            self._token_faults = faults

    def take_forced(self, endpoint: Endpoint) -> ForcedResponse | None:
        with self._lock:
            return _take(self._forced, endpoint)

    def take_delay(self, endpoint: Endpoint) -> Delay | None:
        with self._lock:
            return _take(self._delays, endpoint)

    def take_authorize_error(self) -> AuthorizeError | None:
        with self._lock:
            fault = self._authorize_error
            if fault is not None and fault.remaining is not None:
                left = fault.remaining - 1
                self._authorize_error = replace(fault, remaining=left) if left else None
            return fault

    def snapshot(self) -> dict[str, object]:
        """Active faults and lifetimes, for the control API's state view."""
        with self._lock:
            return {
                "lifetimes": self._lifetimes,
                "forced": dict(self._forced),
                "delays": dict(self._delays),
                "authorize_error": self._authorize_error,
                "token_faults": self._token_faults,
                "policies": self.policies.snapshot(),
            }


def _take(table: dict[Endpoint, _Fault], endpoint: Endpoint) -> _Fault | None:
    fault = table.get(endpoint)
    if fault is not None and fault.remaining is not None:
        left = fault.remaining - 1
        if left:
            table[endpoint] = replace(fault, remaining=left)
        else:
            del table[endpoint]
    return fault


STATE: Final = web.AppKey("devidp_state", DevIdpState)
