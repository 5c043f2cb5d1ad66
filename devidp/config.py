"""What the development identity provider is configured with: tenant, clients, users, lifetimes.

Values only. Nothing here does I/O; `server.start` turns a `DevIdpConfig` into a running emulator.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from .groups import DEFAULT_GROUPS, DEFAULT_OVERAGE_LIMIT, MANY_GROUPS, READERS, WRITERS, Group

DEFAULT_TENANT_ID: Final = "5c3e5f0a-7d1b-4e2c-9a48-0d6f2b1c8e37"
DEFAULT_TENANT_DOMAIN: Final = "contoso.example"
DEFAULT_CLIENT_ID: Final = "8f4b2e61-3c5a-4d7e-b9f0-1a2c3d4e5f60"
DEFAULT_CLIENT_SECRET: Final = "devidp-client-secret"  # noqa: S105 - a published development value
DEFAULT_PORT: Final = 8443
FEDERATION_AUDIENCE: Final = "api://AzureADTokenExchange"

_GUID: Final = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True, slots=True)
class User:
    """A test user. `username` is the short name people click and tests send in `X-DevIdp-User`.

    `extra_claims` are copied into the user's id tokens and access tokens as they are.
    """

    username: str
    name: str
    oid: str
    preferred_username: str
    email: str | None = None
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    extra_claims: Mapping[str, object] = field(default_factory=dict, hash=False)

    def matches(self, selector: str) -> bool:
        """True when `selector` is this user's username, oid or preferred_username (any case)."""
        wanted = selector.strip().casefold()
        return wanted in {
            self.username.casefold(),
            self.oid.casefold(),
            self.preferred_username.casefold(),
        }


@dataclass(frozen=True, slots=True)
class FederatedCredential:
    """Workload-identity trust: tokens from `issuer` about `subject`, signed by `public_key_pem`."""

    issuer: str
    subject: str
    public_key_pem: str
    audience: str = FEDERATION_AUDIENCE


@dataclass(frozen=True, slots=True)
class Client:
    """An app registration.

    `redirect_uris=None` accepts, for development convenience, any http(s) URL on a loopback host
    and any https URL. A client with no secret, certificate or federated credential is public and
    sends no client authentication.
    """

    client_id: str
    client_secret: str | None = None
    redirect_uris: tuple[str, ...] | None = None
    certificates_pem: tuple[str, ...] = ()
    federated_credentials: tuple[FederatedCredential, ...] = ()
    display_name: str = "msal-gateway (development)"
    # Further valid secrets: an Entra app registration may hold several while one is rotated.
    more_secrets: tuple[str, ...] = ()

    @property
    def is_confidential(self) -> bool:
        return bool(
            self.client_secret
            or self.more_secrets
            or self.certificates_pem
            or self.federated_credentials
        )

    def accepts_secret(self, secret: str) -> bool:
        """Whether `secret` is one of the registration's secrets (compared in constant time)."""
        valid = [s for s in (self.client_secret, *self.more_secrets) if s]
        return any(hmac.compare_digest(secret.encode(), s.encode()) for s in valid)

    def accepts_redirect_uri(self, uri: str) -> bool:
        """Exact match against the registered list, or the development rule when there is none."""
        if self.redirect_uris is not None:
            return uri in self.redirect_uris
        return is_development_redirect_uri(uri)

    def redirect_origins(self) -> frozenset[str] | None:
        """Origins of the registered redirect URIs; None means the development rule applies."""
        if self.redirect_uris is None:
            return None
        return frozenset(origin_of(uri) for uri in self.redirect_uris)


def origin_of(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_development_redirect_uri(uri: str) -> bool:
    """Any http(s) URL on a loopback host, or any https URL; never a fragment or userinfo."""
    try:
        parts = urlsplit(uri)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    if not host or parts.fragment or "@" in parts.netloc:
        return False
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and is_loopback_host(host)


DEFAULT_USERS: Final[tuple[User, ...]] = (
    User(
        username="alice",
        name="Alice Example",
        oid="0b7e2c1d-4a5f-4e3b-8c9d-1e2f3a4b5c6d",
        preferred_username="alice@contoso.example",
        email="alice@contoso.example",
        groups=(READERS.id,),
        roles=("Reader",),
    ),
    User(
        username="bob",
        name="Bob Builder",
        oid="1c8f3d2e-5b6a-4f4c-9d0e-2f3a4b5c6d7e",
        preferred_username="bob@contoso.example",
        email="bob@contoso.example",
    ),
    User(  # no email claim, non-ASCII name: exercises header encoding and absent claims
        username="jose",
        name="José Núñez",
        oid="2d9a4e3f-6c7b-4a5d-8e1f-3a4b5c6d7e8f",
        preferred_username="jose@contoso.example",
        groups=(READERS.id, WRITERS.id),
        roles=("Reader", "Writer"),
    ),
    User(  # more groups than fit in a token: exercises the overage marker and Graph paging
        username="carol",
        name="Carol Many-Groups",
        oid="3e0b5f4a-7d8c-4b6e-9f2a-4b5c6d7e8f9a",
        preferred_username="carol@contoso.example",
        email="carol@contoso.example",
        groups=tuple(g.id for g in MANY_GROUPS),
    ),
)

DEFAULT_CLIENT: Final = Client(client_id=DEFAULT_CLIENT_ID, client_secret=DEFAULT_CLIENT_SECRET)


@dataclass(frozen=True, slots=True)
class DevIdpConfig:
    """Everything the emulator starts with. Runtime changes go through the control API.

    `state_dir=None` uses a temporary directory removed on stop (so `ca.pem` is not reused).
    `public_host` is the host name put in URLs and issuers (default: `host`) and is added to the
    TLS certificate. Lifetimes are in seconds; msal never serves an access token from its cache
    when `expires_in` is 300 or less, so the default stays well above that. `groups` names the
    groups Microsoft Graph reports; a user with more than `groups_overage_limit` groups gets the
    overage marker instead of a `groups` claim.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # A plain-http listener for the pages browsers visit (0: any free port; None: none, they are
    # served on the TLS port with everything else). Loopback only, like the whole emulator.
    browser_port: int | None = None
    tenant_id: str = DEFAULT_TENANT_ID
    tenant_domain: str = DEFAULT_TENANT_DOMAIN
    clients: tuple[Client, ...] = (DEFAULT_CLIENT,)
    users: tuple[User, ...] = DEFAULT_USERS
    state_dir: Path | None = None
    public_host: str | None = None
    force_non_loopback: bool = False
    expires_in: int = 3600
    ext_expires_in: int | None = None
    refresh_in: int | None = None
    strict_rotation: bool = False
    code_lifetime_seconds: int = 600
    refresh_token_lifetime_seconds: int = 90 * 24 * 3600
    groups: tuple[Group, ...] = DEFAULT_GROUPS
    groups_overage_limit: int = DEFAULT_OVERAGE_LIMIT

    def __post_init__(self) -> None:
        problems = []
        if not _GUID.match(self.tenant_id):
            problems.append(f"tenant_id must be a lower-case GUID, got {self.tenant_id!r}")
        if not self.clients:
            problems.append("at least one client must be registered")
        if len({c.client_id for c in self.clients}) != len(self.clients):
            problems.append("client ids must be unique")
        if len({u.username.casefold() for u in self.users}) != len(self.users):
            problems.append("usernames must be unique")
        if self.expires_in <= 0 or self.code_lifetime_seconds <= 0:
            problems.append("lifetimes must be positive")
        if self.groups_overage_limit < 0:
            problems.append("groups_overage_limit must not be negative")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def url_host(self) -> str:
        host = self.public_host or self.host
        if host in {"0.0.0.0", "::", ""}:  # noqa: S104 - a wildcard bind is reached via loopback
            host = "127.0.0.1"
        return f"[{host}]" if ":" in host else host
