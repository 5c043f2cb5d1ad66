"""The advanced settings groups, set as GATEWAY_<GROUP>__<FIELD> (e.g.
GATEWAY_SESSION__IDLE_TTL_SECONDS). Common settings are flat fields of settings.Settings."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Final, Literal
from urllib.parse import SplitResult, parse_qs, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
)
from pydantic_settings import NoDecode

RESERVED_SCOPES: Final = frozenset({"openid", "profile", "offline_access"})


def split_words(value: object) -> object:
    """A space- or comma-separated string as a tuple of words; anything else unchanged."""
    if isinstance(value, str):
        return tuple(part for part in value.replace(",", " ").split() if part)
    return value


def _route_path(value: str) -> str:
    if not value.startswith("/") or value.startswith("/.auth"):
        raise ValueError(f"{value!r} must start with '/' and not be under /.auth")
    return value


def _route_paths(value: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_route_path(path) for path in value)


def without_reserved_scopes(value: tuple[str, ...]) -> tuple[str, ...]:
    reserved = RESERVED_SCOPES.intersection(value)
    if reserved:
        raise ValueError(
            f"must not contain {' '.join(sorted(reserved))}: the gateway always asks for them"
        )
    return value


# Environment values are space- (or comma-) separated words, not JSON.
SpaceSeparated = Annotated[tuple[str, ...], NoDecode, BeforeValidator(split_words)]
RoutePath = Annotated[str, AfterValidator(_route_path)]
RoutePaths = Annotated[SpaceSeparated, AfterValidator(_route_paths)]
Scopes = Annotated[SpaceSeparated, AfterValidator(without_reserved_scopes)]


class SettingsGroup(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SessionSettings(SettingsGroup):
    idle_ttl_seconds: PositiveInt = Field(
        28_800, description="A session unused for this long ends (sliding)."
    )
    absolute_ttl_seconds: PositiveInt = Field(
        86_400, description="A session ends this long after sign-in, however active it is."
    )
    cookie_name: str = Field(
        "msal-gateway",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Session cookie name; prefixed with __Host- when the public URL is https.",
    )


class SignInSettings(SettingsGroup):
    response_mode: Literal["form_post", "query"] | None = Field(
        None,
        description="How the identity provider returns the code. Default: form_post for an https "
        "public URL, query for http (loopback development), where the cross-site POST could not "
        "carry the browser-binding cookie.",
    )
    prompt: Literal["login", "consent", "select_account", "none"] | None = Field(
        None,
        description="OpenID prompt sent on sign-in. Some non-Entra providers issue refresh "
        "tokens only with prompt=consent.",
    )
    domain_hint: str | None = Field(None, description="Entra domain_hint sent on sign-in.")
    flow_ttl_seconds: PositiveInt = Field(
        600, description="How long a started sign-in may take before its callback is refused."
    )
    max_starts_per_minute: PositiveInt = Field(
        30,
        description="Sign-ins one client address may start per minute (per replica); more get "
        "429. Bounds the pending sign-ins an anonymous client can make the store hold.",
    )
    max_pending_per_browser: PositiveInt = Field(
        10, description="Pending sign-ins one browser may have; starting another drops the oldest."
    )
    clock_skew_seconds: int = Field(
        120, ge=0, le=300, description="Leeway for id_token time claims (at most 5 minutes)."
    )


class ProxySettings(SettingsGroup):
    connect_timeout_seconds: PositiveFloat = Field(5.0, description="Upstream connect timeout.")
    read_timeout_seconds: PositiveFloat = Field(
        60.0, description="Longest silence allowed while reading from the upstream."
    )
    max_connections: PositiveInt = Field(256, description="Most open connections to the upstream.")
    drain_seconds: float = Field(
        5.0,
        ge=0,
        le=300,
        description="On SIGTERM, keep serving this long with /.auth/readyz answering 503, so the "
        "load balancer stops sending traffic before the listener closes.",
    )
    shutdown_grace_seconds: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="Then wait this long for requests in flight (and streams) to finish.",
    )
    preserve_host: bool = Field(
        True,
        description="Send the public URL's host as Host upstream (else the upstream's own "
        "host). The client's Host header is never passed on.",
    )
    trusted_proxies: SpaceSeparated = Field(
        (),
        description="Addresses or CIDRs of proxies in front of the gateway (ingress, nginx) whose "
        "X-Forwarded-For and forward-auth headers (X-Original-URI, X-Forwarded-Uri/-Method) are "
        "believed, space-separated. Empty: none are.",
    )
    public_paths: RoutePaths = Field(
        (),
        description="Path prefixes served without sign-in (identity headers are still removed), "
        "space-separated, e.g. '/health /static/'. A prefix ending in '/' matches below it; "
        "otherwise the exact path and everything below it.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR") from None
        return value


class MsalSettings(SettingsGroup):
    worker_threads: PositiveInt = Field(
        8, description="Threads for MSAL calls (MSAL is synchronous; never run on the event loop)."
    )
    connect_timeout_seconds: PositiveFloat = Field(
        3.05, description="Connect timeout for calls to the identity provider."
    )
    read_timeout_seconds: PositiveFloat = Field(
        10.0, description="Read timeout for calls to the identity provider."
    )


class RedisSettings(SettingsGroup):
    """How the redis store connects: one server (GATEWAY_REDIS_URL), a Sentinel-managed master,
    or a Redis Cluster; TLS, credentials, pool and timeouts."""

    max_connections: PositiveInt = Field(
        64,
        description="Most connections to Redis per process (per node with a cluster); further "
        "calls wait for a free one.",
    )
    socket_timeout_seconds: PositiveFloat = Field(
        1.0, description="Longest wait for a Redis reply (or a free pooled connection)."
    )
    connect_timeout_seconds: PositiveFloat = Field(1.0, description="Redis connect timeout.")
    username: str | None = Field(
        None, min_length=1, description="Redis ACL user (instead of a user in GATEWAY_REDIS_URL)."
    )
    password: SecretStr | None = Field(
        None,
        min_length=1,
        description="Redis password (instead of one in GATEWAY_REDIS_URL).",
    )
    password_file: Path | None = Field(
        None,
        description="File holding the Redis password, re-read for every new connection so a "
        "rotated secret is picked up without a restart.",
    )
    db: int | None = Field(
        None,
        ge=0,
        description="Database index; default: the one in GATEWAY_REDIS_URL, else 0. Honoured "
        "with sentinels too; a cluster has only 0.",
    )
    tls: bool = Field(
        False,
        description="Speak TLS to Redis (and to the sentinels). rediss:// URLs imply it; set it "
        "for sentinels, which have no URL.",
    )
    ca_file: Path | None = Field(
        None, description="PEM CA bundle trusted for Redis TLS; default: the system store."
    )
    cert_file: Path | None = Field(
        None, description="PEM client certificate for mutual TLS (may also hold the key)."
    )
    key_file: Path | None = Field(
        None, description="PEM private key of the client certificate, if not in it."
    )
    check_hostname: bool = Field(
        True,
        description="Require the Redis certificate to name the host connected to. Sentinels "
        "announce masters by IP address: their certificates then need IP names, or set false "
        "(the CA is still checked).",
    )
    sentinels: SpaceSeparated = Field(
        (),
        description="host:port of each Redis Sentinel, space-separated; set, the master is found "
        "through them (and followed across failovers) and GATEWAY_REDIS_URL is not used.",
    )
    sentinel_master: str = Field(
        "mymaster", min_length=1, description="Name the sentinels monitor the master under."
    )
    sentinel_password: SecretStr | None = Field(
        None, min_length=1, description="Password of the sentinels themselves (requirepass)."
    )
    replica_acks: int | None = Field(
        None,
        ge=0,
        description="Replicas that must confirm each write (Redis WAIT) before it counts as "
        "done, so a failover cannot lose it; default: 1 with sentinels (fewer while the "
        "sentinels see fewer healthy replicas), else 0.",
    )
    cluster: bool = Field(
        False,
        description="GATEWAY_REDIS_URL names any node of a Redis Cluster; the gateway discovers "
        "the others and follows slot moves.",
    )
    allow_insecure: bool = Field(
        False,
        description="Allow a Redis (or sentinel) off loopback without TLS or without a "
        "password. Only for a network nobody else can reach.",
    )

    @field_validator("sentinels")
    @classmethod
    def _host_ports(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            cls._host_port(item)
        return value

    @staticmethod
    def _host_port(value: str) -> tuple[str, int]:
        host, sep, port = value.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not host:port (an IPv6 address goes in brackets)")
        return host, int(port)

    @property
    def sentinel_addresses(self) -> tuple[tuple[str, int], ...]:
        return tuple(self._host_port(item) for item in self.sentinels)

    def uses_tls(self, url: str | None) -> bool:
        return self.tls or (url is not None and urlsplit(url).scheme == "rediss")

    def problems(self, url: str | None, *, in_use: bool) -> list[str]:
        """The rules across these fields and GATEWAY_REDIS_URL (`url`), each naming what to set;
        `in_use`: GATEWAY_SESSION_STORE is redis. Messages name hosts, never credentials."""
        found: list[str] = []
        parts = urlsplit(url) if url else None
        unix = parts is not None and parts.scheme == "unix"
        if in_use and parts is None and not self.sentinels:
            found.append(
                "GATEWAY_REDIS_URL (or GATEWAY_REDIS__SENTINELS) is required when "
                "GATEWAY_SESSION_STORE is redis"
            )
        if parts is not None and self.sentinels:
            found.append(
                "set GATEWAY_REDIS_URL or GATEWAY_REDIS__SENTINELS, not both (with sentinels, "
                "use GATEWAY_REDIS__DB, __USERNAME, __PASSWORD and __TLS)"
            )
        if self.cluster and self.sentinels:
            found.append("GATEWAY_REDIS__CLUSTER and GATEWAY_REDIS__SENTINELS exclude each other")
        url_db = self._url_db(parts) if parts is not None else None
        if self.db is not None and url_db is not None and self.db != url_db:
            found.append(
                f"GATEWAY_REDIS__DB={self.db} contradicts database {url_db} in "
                "GATEWAY_REDIS_URL: set it in one place"
            )
        if self.cluster:
            if unix:
                found.append("GATEWAY_REDIS__CLUSTER needs a redis:// or rediss:// URL")
            if self.db or url_db:
                found.append("a Redis Cluster has only database 0 (GATEWAY_REDIS__DB)")
            if self.replica_acks:
                found.append(
                    "GATEWAY_REDIS__REPLICA_ACKS is not supported with GATEWAY_REDIS__CLUSTER"
                )
        has_url_password = parts is not None and bool(parts.password)
        if has_url_password and (self.password or self.password_file):
            found.append(
                "set the Redis password in one place: GATEWAY_REDIS_URL, "
                "GATEWAY_REDIS__PASSWORD or GATEWAY_REDIS__PASSWORD_FILE"
            )
        elif self.password and self.password_file:
            found.append("set only one of GATEWAY_REDIS__PASSWORD and GATEWAY_REDIS__PASSWORD_FILE")
        if parts is not None and parts.username and self.username:
            found.append("set the Redis user in GATEWAY_REDIS_URL or GATEWAY_REDIS__USERNAME")
        for name in ("password_file", "ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                found.append(f"GATEWAY_REDIS__{name.upper()}: no such file: {path}")
        tls = self.uses_tls(url)
        if not tls and (self.ca_file or self.cert_file or self.key_file):
            found.append(
                "GATEWAY_REDIS__CA_FILE, __CERT_FILE and __KEY_FILE apply only with a rediss:// "
                "URL or GATEWAY_REDIS__TLS=true"
            )
        if self.key_file and not self.cert_file:
            found.append("GATEWAY_REDIS__KEY_FILE needs GATEWAY_REDIS__CERT_FILE")
        if self.tls and unix:
            found.append("GATEWAY_REDIS__TLS does not apply to a unix:// socket")
        if self.sentinel_password and not self.sentinels:
            found.append("GATEWAY_REDIS__SENTINEL_PASSWORD applies only with sentinels")
        if in_use and not self.allow_insecure:
            found.extend(self._exposure(parts, tls=tls, url_password=has_url_password))
        return found

    def _exposure(self, parts: SplitResult | None, *, tls: bool, url_password: bool) -> list[str]:
        """RS-01: a Redis reachable off this host must need TLS and a password."""
        if self.sentinels:
            hosts = [host for host, _ in self.sentinel_addresses]
        elif parts is not None and parts.scheme != "unix":
            hosts = [parts.hostname or ""]
        else:
            hosts = []  # a unix socket is local
        remote = [host for host in hosts if not self._is_loopback(host)]
        if not remote:
            return []
        missing = []
        if not tls:
            missing.append("TLS (a rediss:// URL or GATEWAY_REDIS__TLS=true)")
        if not (url_password or self.password or self.password_file):
            missing.append(
                "a password (in GATEWAY_REDIS_URL, GATEWAY_REDIS__PASSWORD or "
                "GATEWAY_REDIS__PASSWORD_FILE)"
            )
        if self.sentinels and not self.sentinel_password:
            missing.append("a sentinel password (GATEWAY_REDIS__SENTINEL_PASSWORD)")
        if not missing:
            return []
        return [
            f"Redis at {remote[0]} is reachable off this host without {' or '.join(missing)}: "
            "anyone on that network could read or replace sessions. "
            f"Add {'it' if len(missing) == 1 else 'them'}, or set "
            "GATEWAY_REDIS__ALLOW_INSECURE=true for a network only the gateway can reach"
        ]

    @staticmethod
    def _url_db(parts: SplitResult) -> int | None:
        for value in parse_qs(parts.query).get("db", []):
            return int(value) if value.isdigit() else None
        path = parts.path.strip("/")
        if parts.scheme != "unix" and path.isdigit():
            return int(path)
        return None

    @staticmethod
    def _is_loopback(host: str) -> bool:
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host.strip("[]")).is_loopback
        except ValueError:
            return False


class PolicyRule(SettingsGroup):
    """Who may reach requests matching `path` (and `methods`, if any). First match wins."""

    path: RoutePath = Field(
        description="Path prefix; ending in '/' matches below it, else exact or below."
    )
    methods: SpaceSeparated = Field((), description="HTTP methods; empty: any.")
    allow: Literal["public", "authenticated", "deny"] = Field(
        "authenticated",
        description="public: no sign-in (identity headers still removed); authenticated: "
        "signed in and meeting every requirement below; deny: never.",
    )
    tenants: SpaceSeparated = Field((), description="Allowed tenant ids (`tid`); any of them.")
    groups: SpaceSeparated = Field((), description="Required group ids; any of them.")
    roles: SpaceSeparated = Field((), description="Required app roles (`roles`); any of them.")
    users: SpaceSeparated = Field((), description="Allowed user object ids (`oid`, or `sub`).")
    emails: SpaceSeparated = Field((), description="Allowed email addresses (trusted email).")
    domains: SpaceSeparated = Field((), description="Allowed email domains (trusted email).")
    scopes: SpaceSeparated = Field(
        (), description="Scopes (`scp`) an API caller's bearer token must carry; all of them."
    )

    @field_validator("methods")
    @classmethod
    def _upper(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(method.upper() for method in value)

    @field_validator("emails", "domains")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(item.lower() for item in value)

    @field_validator("emails")
    @classmethod
    def _one_at(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for email in value:
            if email.count("@") != 1 or email.startswith("@") or email.endswith("@"):
                raise ValueError(f"{email!r} is not an email address (exactly one @)")
        return value


class PolicySettings(SettingsGroup):
    rules: tuple[PolicyRule, ...] = Field(
        (),
        description="Ordered access rules as JSON (env) or a YAML list, e.g. "
        '[{"path": "/admin/", "groups": "<group id>"}, {"path": "/public/", "allow": "public"}]. '
        "Requests no rule matches need a signed-in user.",
    )
    case_insensitive: bool = Field(
        False,
        description="Match rule paths ignoring case; set it when the application routes paths "
        "case-insensitively, or a rule could be bypassed by /ADMIN.",
    )

    @field_validator("rules", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return () if isinstance(value, str) and not value.strip() else value


class TokenRoute(SettingsGroup):
    """Requests matching `path` (and `methods`, if any) carry a token for `scopes`."""

    path: RoutePath = Field(
        description="Path prefix; ending in '/' matches below it, else exact or below."
    )
    methods: SpaceSeparated = Field((), description="HTTP methods; empty: any.")
    scopes: Scopes = Field(
        description="Scopes of the bearer token for these requests; empty: no bearer token."
    )

    @field_validator("methods")
    @classmethod
    def _upper(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(method.upper() for method in value)


class TokenSettings(SettingsGroup):
    refresh_skew_seconds: PositiveInt = Field(
        300, description="Refresh the upstream access token this long before it expires."
    )
    expose_in_me: bool = Field(
        False, description="Include the access and id tokens in /.auth/me (Easy Auth does)."
    )
    easy_auth_token_headers: bool = Field(
        False,
        description="Send X-MS-TOKEN-AAD-ID-TOKEN, -ACCESS-TOKEN and -EXPIRES-ON upstream, as "
        "App Service Easy Auth's token store does.",
    )
    expose_in_verify: bool = Field(
        False,
        description="Include Authorization: Bearer in /.auth/verify answers (for a forward-auth "
        "proxy to pass on). Off by default: the endpoint is reachable from the browser too.",
    )
    routes: tuple[TokenRoute, ...] = Field(
        (),
        description="Per-route bearer scopes, first match wins, as JSON (env) or a YAML list: "
        '[{"path": "/api/", "methods": "GET POST", "scopes": "api://orders/.default"}]. '
        "Requests no route matches carry GATEWAY_SCOPES.",
    )
    client_capabilities: SpaceSeparated = Field(
        (),
        description="MSAL client capabilities, e.g. CP1 to receive Continuous Access "
        "Evaluation claims challenges from the upstream.",
    )
    refresh_lock_seconds: PositiveFloat | None = Field(
        None,
        description="Initial lifetime of the per-session refresh lock (renewed while a refresh "
        "runs); default: twice the identity provider timeouts plus 5 s.",
    )

    @field_validator("routes", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return () if isinstance(value, str) and not value.strip() else value


class GroupSettings(SettingsGroup):
    """Group membership beyond the token: with more than 200 groups Entra puts an overage marker
    in the id_token instead of the groups, and the gateway asks Microsoft Graph."""

    resolve_overage: bool = Field(
        True, description="Resolve the groups of users whose token carries the overage marker."
    )
    graph_url: str = Field(
        "https://graph.microsoft.com/v1.0",
        pattern=r"^https://[^/?#]+(/[^?#]*)?$",
        description="Microsoft Graph base URL (sovereign clouds have their own).",
    )
    graph_page_size: int = Field(
        999, ge=1, le=999, description="Groups asked for per Graph page ($top)."
    )
    graph_scopes: SpaceSeparated = Field(
        ("https://graph.microsoft.com/User.Read",),
        description="Scopes of the Graph token used to list the user's groups (some tenants "
        "require GroupMember.Read.All).",
    )
    max_header_bytes: PositiveInt = Field(
        8000,
        description="Largest identity header sent. X-MS-CLIENT-PRINCIPAL over it is sent without "
        "its groups; any other header over it is not sent (never cut), with a warning. Raise it "
        "only as far as the application's server accepts.",
    )

    @field_validator("graph_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")


class AssertionSettings(SettingsGroup):
    """A short-lived ES256 JWT of the principal on every upstream request, verifiable with the
    keys at /.auth/keys, so the application need not trust the network."""

    enabled: bool = Field(False, description="Send X-Gateway-Assertion to the upstream.")
    audience: str | None = Field(
        None, description="`aud` of the assertion; default: the upstream URL's origin."
    )
    lifetime_seconds: int = Field(120, ge=10, le=3600, description="Lifetime of one assertion.")
    rotation_days: int = Field(30, ge=1, le=365, description="Signing keys rotate this often.")


class AdminSettings(SettingsGroup):
    """Operator endpoints under /.auth/admin/: off unless a token is set."""

    token: SecretStr | None = Field(
        None,
        min_length=32,
        description="Bearer token for /.auth/admin/revoke (at least 32 characters); unset: the "
        "admin endpoints do not exist.",
    )


class ApiSettings(SettingsGroup):
    """API clients presenting their own Entra access token (Authorization: Bearer) instead of a
    session cookie."""

    audiences: SpaceSeparated = Field(
        (),
        description="Accepted `aud` values of API callers' access tokens, e.g. api://gateway and "
        "the client id; empty: bearer tokens from clients are not accepted (and never forwarded).",
    )
    issuer_versions: Literal["v2", "v1", "both"] = Field(
        "v2", description="Accept v2.0 access tokens, v1.0 ones (sts.windows.net), or both."
    )
    upstream_token: Literal["none", "pass", "on_behalf_of"] = Field(
        "none",
        description="What API callers' requests carry upstream: no token, the caller's own token, "
        "or one for the route's scopes obtained on behalf of the caller (OBO).",
    )


class LogSettings(SettingsGroup):
    format: Literal["json", "text"] = Field(
        "json", description="json: one JSON object per line (with request_id); text: for people."
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level logged."
    )
    access_log: bool = Field(True, description="One line per request (path without query).")
