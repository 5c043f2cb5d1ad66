"""The advanced settings groups, set as GATEWAY_<GROUP>__<FIELD> (e.g.
GATEWAY_SESSION__IDLE_TTL_SECONDS). Common settings are flat fields of settings.Settings."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationInfo,
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


def is_loopback_host(host: str | None) -> bool:
    """localhost or a loopback IP address (a development or sidecar-local endpoint)."""
    if host in (None, ""):
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
        description="Session cookie name; prefixed with __Host- when the public URL is https "
        "(__Secure- under a path prefix or with GATEWAY_SESSION__COOKIE_DOMAIN) and suffixed with "
        "the path prefix (msal-gateway-payroll).",
    )
    cache_seconds: NonNegativeFloat = Field(
        5.0,
        description="A session read is reused in-process for this long. With the redis store, "
        "sign-out and revocation reach every replica's copy at once via Redis pub/sub, and in "
        "the worst case (a lost notice) within this time; the memory store's one process drops "
        "its copy itself. 0 turns the cache off; so does an idle TTL no longer than this with "
        "the memory store (with Redis, that is refused).",
    )
    cache_max_entries: PositiveInt = Field(
        5_000,
        description="Most sessions one process keeps in its cache (about 13 KB each, decoded).",
    )
    compress: bool = Field(
        False,
        description="Deflate stored records (session, token cache) before sealing them: about "
        "45% of the bytes in Redis. Every version from this one reads both forms, older ones "
        "read neither deflated form: turn it on once every replica runs this version (off by "
        "default so that a rolling upgrade keeps every session; see the operations guide).",
    )
    cookie_domain: str | None = Field(
        None,
        description="Share one sign-in across subdomains: the session cookie's Domain, e.g. "
        "apps.contoso.com (the public URL's host must be inside it; https only). Every host under "
        "it receives the cookie and can overwrite it: use only a domain whose hosts you all trust. "
        "Unset: the cookie is for the public URL's host alone.",
    )
    sign_out_clear_site_data: SpaceSeparated = Field(
        (),
        description="What sign-out asks the browser to clear for the whole site with "
        'Clear-Site-Data, e.g. "cookies storage": the application\'s own session (pgAdmin, '
        "Grafana...) ends with the gateway's. Any of cookies, storage, cache, "
        "executionContexts, *. Empty: no header.",
    )
    sign_out_app_cookies: SpaceSeparated = Field(
        (),
        description="Names of the application's own cookies that sign-out expires (Path=/, and "
        "under a path prefix also Path=/prefix and /prefix/), for browsers without "
        "Clear-Site-Data and for applications that keep a session of their own.",
    )

    @field_validator("cookie_domain")
    @classmethod
    def _cookie_domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        domain = value.lower()
        if not _DOMAIN_NAME.match(domain) or "." not in domain:
            raise ValueError(
                f"{value!r} must be a DNS name with at least two labels, without a leading dot "
                "or port, e.g. apps.contoso.com"
            )
        return domain

    @field_validator("sign_out_clear_site_data")
    @classmethod
    def _site_data_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        known = {"cookies", "storage", "cache", "executionContexts", "*"}
        unknown = [item for item in value if item.strip('"') not in known]
        if unknown:
            raise ValueError(f"unknown Clear-Site-Data types {unknown}: use {sorted(known)}")
        return tuple(item.strip('"') for item in value)

    @field_validator("sign_out_app_cookies")
    @classmethod
    def _cookie_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _COOKIE_NAME.match(name):
                raise ValueError(f"{name!r} is not a cookie name")
        return value


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
        300,
        description="Sign-ins one client (an address, or an IPv6 /64) may start per minute, per "
        "replica; more get 429. High enough for an office behind one NAT address; lower it when "
        "every client has its own address.",
    )
    max_pending: PositiveInt = Field(
        50_000,
        description="Most sign-ins a replica lets the store hold pending (started within "
        "GATEWAY_SIGNIN__FLOW_TTL_SECONDS, from all clients together); beyond it, 503 until some "
        "complete or expire. Bounds what an anonymous flood from many addresses can store.",
    )
    max_pending_per_browser: PositiveInt = Field(
        10, description="Pending sign-ins one browser may have; starting another drops the oldest."
    )
    max_concurrent: PositiveInt = Field(
        16,
        description="Sign-in steps one replica runs at once (starting a flow, and redeeming the "
        "code at the callback, which waits on the identity provider), each on a thread of its "
        "own: apart from GATEWAY_MSAL__WORKER_THREADS, which stay free for signed-in users' "
        "token refreshes during a sign-in storm.",
    )
    queue_seconds: float = Field(
        10.0,
        gt=0,
        le=60,
        description="How long a sign-in start or callback waits for a turn when "
        "GATEWAY_SIGNIN__MAX_CONCURRENT are busy; then 503 with Retry-After. Waiting callbacks "
        "get turns before waiting starts. A refused callback leaves its sign-in pending, so "
        "sending it again completes it.",
    )
    clock_skew_seconds: int = Field(
        120, ge=0, le=300, description="Leeway for id_token time claims (at most 5 minutes)."
    )
    return_hosts: SpaceSeparated = Field(
        (),
        description="Other hosts that sign-in and sign-out may send the browser back to, with "
        "GATEWAY_SESSION__COOKIE_DOMAIN: exact hosts (wiki.apps.contoso.com, with :port if not "
        "the default) or *.apps.contoso.com for every host under a domain; each inside the cookie "
        "domain, https only. Empty: only the public URL's own host.",
    )

    @field_validator("return_hosts")
    @classmethod
    def _return_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        hosts = []
        for entry in value:
            host = entry.lower()
            name, _, port = host.partition(":")
            bare = name.removeprefix("*.")
            if (
                not _DOMAIN_NAME.match(bare)
                or "*" in bare
                or (port and not (port.isdigit() and 0 < int(port) < 65536))
            ):
                raise ValueError(
                    f"{entry!r} must be a host name or *.domain, with an optional :port"
                )
            hosts.append(host)
        return tuple(hosts)


class ProxySettings(SettingsGroup):
    connect_timeout_seconds: PositiveFloat = Field(5.0, description="Upstream connect timeout.")
    read_timeout_seconds: PositiveFloat = Field(
        60.0, description="Longest silence allowed while reading from the upstream."
    )
    max_connections: PositiveInt = Field(
        256,
        description="Most open HTTP connections to the upstream; WebSockets, which hold one each "
        "while they run, may open as many again (beyond, a new one is refused with 503).",
    )
    slot_wait_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="How long a request waits for a connection to the upstream when all "
        "GATEWAY_PROXY__MAX_CONNECTIONS are in use; then 503 with Retry-After.",
    )
    max_connections_per_client: int = Field(
        0,
        ge=0,
        description="Most upstream connections one client may hold at once (a signed-in user, an "
        "API caller, else a client address); beyond it, 503. 0: half of "
        "GATEWAY_PROXY__MAX_CONNECTIONS, so a few slow clients cannot take every slot.",
    )
    client_min_bytes_per_second: int = Field(
        1024,
        ge=0,
        description="Slowest pace a client may send a request body or read a response at, once "
        "GATEWAY_PROXY__CLIENT_TIMEOUT_SECONDS have passed; a slower client is cut off (408 while "
        "uploading). Time the upstream takes does not count. 0: no minimum.",
    )
    client_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Grace before the minimum pace applies, and the longest a client may leave a "
        "request body or a response write stalled.",
    )
    upload_timeout_seconds: float = Field(
        0.0,
        ge=0,
        description="Longest a request body may take in total; 0: no limit beyond the minimum "
        "pace (large uploads on slow links).",
    )
    download_timeout_seconds: float = Field(
        0.0,
        ge=0,
        description="Longest a response may take to stream to the client in total; 0: no limit "
        "(event streams and long downloads).",
    )
    max_client_connections: PositiveInt = Field(
        4096,
        description="Most open client connections per process. Beyond it the connection idle "
        "longest is closed (clients reopen idle connections by themselves); when none is idle, "
        "the new one is. Lowered at start to what the open-file limit allows.",
    )
    header_timeout_seconds: float = Field(
        20.0,
        gt=0,
        le=300,
        description="A request head must arrive within this long of the connection opening (or "
        "of its first byte, on a kept-alive connection); else 408 and the connection closes.",
    )
    keepalive_timeout_seconds: float = Field(
        75.0,
        gt=0,
        le=3600,
        description="An idle kept-alive client connection is closed after this long. Keep it "
        "longer than the idle timeout of any proxy in front (60 s for AWS ALB and ingress-nginx).",
    )
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
    websocket_max_message_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest WebSocket message relayed either way (4 MiB, aiohttp's default; "
        "raise it for notebooks that display larger outputs); a larger one closes the socket with "
        "1009 and a warning in the log. Each message is held whole while it passes, so this times "
        "the open sockets bounds the memory they can take.",
    )
    websocket_heartbeat_seconds: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="Ping both ends of a relayed WebSocket this often; one that does not answer "
        "within half of it is closed. 0: no pings.",
    )
    websocket_idle_timeout_seconds: float = Field(
        3600.0,
        ge=0,
        le=7 * 86_400,
        description="A relayed WebSocket with no message either way for this long is closed "
        "with 1001 (pings do not count). 0: never.",
    )
    websocket_open_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="The application must accept a WebSocket within this long; else 504.",
    )
    websocket_max_per_user: PositiveInt = Field(
        64,
        description="Most WebSockets one user (or API client) may have open per process; one "
        "more is refused with 429 before the upgrade.",
    )
    upstream_ready_path: str | None = Field(
        None,
        pattern=r"^/[^?#\s]*(\?[^#\s]*)?$",
        description="A path on the application (e.g. /healthz) that /.auth/readyz also asks, "
        "with GET, at most every 2 s: the pod is Ready only when the application answers it "
        "with 2xx or 3xx (the kubelet cannot probe an application on loopback itself). Unset: "
        "readiness does not depend on the application.",
    )
    oauth2_proxy_paths: bool = Field(
        False,
        description="Also answer oauth2-proxy's paths, for a move from it: /oauth2/start, "
        "/oauth2/sign_in, /oauth2/sign_out (with rd), /oauth2/auth, /oauth2/userinfo, /ping, "
        "/ready. They are then no longer proxied to the application.",
    )
    cors_preflight: Literal["refuse", "pass"] = Field(
        "refuse",
        description="CORS preflights (OPTIONS with Origin and Access-Control-Request-Method; "
        "browsers send them without cookies): refuse: 401 like any request without a session; "
        "pass: forward them to the application without a session and without any identity, so "
        "it answers them. Paths a rule denies, and ambiguous paths, stay refused.",
    )
    strip_prefix: bool = Field(
        False,
        description="When GATEWAY_PUBLIC_URL has a path prefix: remove it from the path the "
        "application receives and say what was removed in X-Forwarded-Prefix. Off: the "
        "application receives the path as the browser sent it (set the application's own base "
        "path to the prefix).",
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

    upstream_headers: dict[str, str] = Field(
        default_factory=dict,
        description="Fixed headers added to every request for the application, as a JSON object "
        '(e.g. {"X-Proxy-Secret": "..."}; an application such as pgAdmin may require one from its '
        "proxy). Clients' copies, in any spelling, are removed first. Values from files: "
        "GATEWAY_PROXY__UPSTREAM_HEADER_FILES.",
    )
    upstream_header_files: dict[str, Path] = Field(
        default_factory=dict,
        description="Fixed headers whose values are read from files at start (a mounted Secret), "
        'as a JSON object, e.g. {"X-Proxy-Secret": "/run/secrets/proxy-secret"}; a trailing '
        "newline is dropped and the values are never logged.",
    )

    claim_headers: dict[str, str] = Field(
        default_factory=dict,
        description="More identity headers, each carrying one claim of the signed-in user, as a "
        'JSON object of header name to claim, e.g. {"X-User-Name": "name", "X-User-Upn": '
        '"preferred_username"} for an application that shows a name rather than the object id. '
        "Like the other identity headers they are removed from clients' requests in every "
        "spelling and never decide access; a claim that is absent, or holds a control character, "
        "sends no header.",
    )

    @field_validator("upstream_headers", "upstream_header_files", "claim_headers")
    @classmethod
    def _static_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, item in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a header name")
            folded = name.lower().replace("_", "-").replace(".", "-")
            if folded in _RESERVED_STATIC or folded.startswith(
                ("x-ms-client-principal", "x-ms-token-")
            ):
                raise ValueError(f"{name} is set by the gateway itself and cannot be fixed")
            if isinstance(item, str) and re.search(r"[\x00-\x1f\x7f]", item):
                raise ValueError(f"the value of {name} holds a control character")
            if isinstance(item, Path) and not item.is_file():
                raise ValueError(f"{name}: {item} is not a readable file")
        return value

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


MIN_ADMIN_TOKEN_LENGTH: Final = 32


def read_admin_token(path: Path) -> str:
    """The admin token a file holds (surrounding white space dropped). ValueError saying what is
    wrong with it: unreadable, or shorter than MIN_ADMIN_TOKEN_LENGTH."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"cannot read {path}: {reason}") from None
    if len(token) < MIN_ADMIN_TOKEN_LENGTH:
        raise ValueError(
            f"{path} holds {len(token)} character(s); the token needs at least "
            f"{MIN_ADMIN_TOKEN_LENGTH}"
        )
    return token


class AdminSettings(SettingsGroup):
    """Operator endpoints under /.auth/admin/: off unless a token is set."""

    token: SecretStr | None = Field(
        None,
        min_length=MIN_ADMIN_TOKEN_LENGTH,
        description="Bearer token for /.auth/admin/revoke (at least 32 characters); unset (and "
        "no _FILE): the admin endpoints do not exist.",
    )
    token_file: Path | None = Field(
        None,
        description="File holding the admin token (at least 32 characters), read again when it "
        "changes: a rotated Kubernetes Secret needs no restart. A replacement that is too short "
        "or unreadable refuses admin calls (503) until it is fixed.",
    )

    @field_validator("token_file")
    @classmethod
    def _one_readable_token(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is None:
            return None
        if info.data.get("token") is not None:
            raise ValueError("set only one of GATEWAY_ADMIN__TOKEN and GATEWAY_ADMIN__TOKEN_FILE")
        read_admin_token(path)  # a file unfit at start is a configuration mistake
        return path

    @property
    def enabled(self) -> bool:
        """Whether the admin endpoints exist."""
        return self.token is not None or self.token_file is not None


class LogSettings(SettingsGroup):
    format: Literal["json", "text"] = Field(
        "json", description="json: one JSON object per line (with request_id); text: for people."
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level logged."
    )
    access_log: bool = Field(True, description="One line per request (path without query).")
    tracing: bool = Field(
        False,
        description="OpenTelemetry spans over OTLP/HTTP, configured by the OTEL_* variables; "
        "needs the otel extra (in a checkout: .venv/bin/pip install -e '.[otel]'; from a built "
        "wheel: pip install '<wheel file>[otel]').",
    )


# A logo URL ends up in an HTML attribute and, for https, its origin in the pages' CSP: allow only
# characters that need no escaping in either (no quotes, spaces, ';' or ',').
_HTTPS_LOGO: Final = re.compile(
    r"^https://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~/%+=&?:@!$()*-]*)?$"
)
_DATA_LOGO: Final = re.compile(
    r"^data:image/(?:png|gif|jpeg|webp|svg\+xml);base64,[A-Za-z0-9+/]+=*$"
)
MAX_LOGO_URL_LENGTH: Final = 32_768
_HEADER_NAME: Final = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$")  # an RFC 9110 token
# What the gateway states itself, or removes as hop-by-hop: never fixed by configuration.
_RESERVED_STATIC: Final = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "cookie",
        "authorization",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-forwarded-preferred-username",
        "x-request-id",
        "traceparent",
        "x-gateway-assertion",
    }
)
# A DNS name: letter-digit-hyphen labels, no leading or trailing dot.
_DOMAIN_NAME: Final = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)


def is_dns_name(host: str) -> bool:
    """Whether `host` is a lower-case DNS name (letters, digits, hyphens, dots), nothing else."""
    return _DOMAIN_NAME.fullmatch(host) is not None  # fullmatch: "$" would let "\n" end it


_COOKIE_NAME: Final = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$")  # an RFC 6265 token


class PagesSettings(SettingsGroup):
    """Branding of the pages the gateway itself shows people (errors, signed out)."""

    title: str | None = Field(
        None,
        min_length=1,
        max_length=80,
        description="The application's name, shown at the top of the gateway's own pages (errors, "
        "signed out) and in their window title. Unset: the pages name nothing (people never see "
        "the gateway's own name) and say, for example, 'You have signed out of this application'.",
    )
    logo_url: str | None = Field(
        None,
        max_length=MAX_LOGO_URL_LENGTH,
        description="Logo on those pages: an https URL (their Content-Security-Policy then allows "
        "images from that origin only) or a data:image/...;base64 URL. Unset: no logo, and the "
        "pages load nothing from anywhere.",
    )
    color: str = Field(
        "#0f6cbd",
        pattern=r"^#[0-9A-Fa-f]{6}$",
        description="Primary colour (#rrggbb): the line along the top of the pages and their main "
        "button, whose text is black or white, whichever contrasts more.",
    )

    @field_validator("logo_url")
    @classmethod
    def _logo(cls, value: str | None) -> str | None:
        if not value:
            return None
        if value.startswith("data:"):
            if not _DATA_LOGO.match(value):
                raise ValueError(
                    "a data URL must be data:image/<png|gif|jpeg|webp|svg+xml>;base64,<data>"
                )
            return value
        if not _HTTPS_LOGO.match(value):
            raise ValueError(
                "must be an https URL (without user name, spaces, quotes, ';' or ',') or a "
                "data:image/...;base64 URL"
            )
        return value
