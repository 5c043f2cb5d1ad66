"""Configuration: one frozen model read from GATEWAY_* variables and an optional YAML file.

The environment wins over the file. Every problem is collected and reported together, each naming
the setting to fix (config/loading.py); the rules across fields are `cross_field_problems`, which
loading also runs beside field errors. Validators read local secret files but never touch the
network: Redis and the authority are checked at start-up in app.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import (
    AnyHttpUrl,
    Field,
    PositiveInt,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gateway.config.access import (
    ApiSettings,
    AssertionSettings,
    GroupSettings,
    PolicySettings,
    TokenSettings,
)
from gateway.config.advanced import (
    AdminSettings,
    LogSettings,
    MsalSettings,
    PagesSettings,
    ProxySettings,
    Scopes,
    SessionSettings,
    SignInSettings,
    SpaceSeparated,
    is_dns_name,
    is_loopback_host,
)
from gateway.config.modes import FORWARD_AUTH, Mode, mode_problems
from gateway.config.redis import RedisSettings
from gateway.config.rotation import (
    CookieSecrets,
    read_rotation_files,
    rotation_problems,
)

ENV_PREFIX: Final = "GATEWAY_"
DEFAULT_AUTHORITY_HOST: Final = "https://login.microsoftonline.com"
MULTI_TENANT_ALIASES: Final = frozenset({"organizations", "common"})
CALLBACK_PATH: Final = "/.auth/login/aad/callback"
MIN_COOKIE_SECRET_BYTES: Final = 32
REDIS_SCHEMES: Final = ("redis", "rediss", "unix")
_ANY_HOST: Final = frozenset({"", "0.0.0.0", "::", "*"})  # noqa: S104 - compared, never bound
# A public URL's path prefix: /segment[/segment...], each unreserved characters only, never a dot
# segment nor one that could be taken for the reserved /.auth; so the prefix needs no decoding
# and compares byte for byte with the request line.
_PREFIX_SHAPE: Final = re.compile(r"^(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+$")


def _same_listener(first: str, second: str) -> bool:
    """Whether two host:port listeners would take the same socket (a wildcard host takes all)."""
    host_a, _, port_a = first.rpartition(":")
    host_b, _, port_b = second.rpartition(":")
    if port_a != port_b:
        return False
    host_a, host_b = host_a.strip("[]"), host_b.strip("[]")
    return host_a == host_b or host_a in _ANY_HOST or host_b in _ANY_HOST


@dataclass(frozen=True, slots=True)
class CookieSpec:
    """One of the gateway's cookies: its name and the attributes that scope it."""

    name: str
    secure: bool
    path: str = "/"
    domain: str | None = None


def within_domain(host: str, domain: str) -> bool:
    """Whether a host is the domain itself or one of its subdomains (DNS names, lower case)."""
    return host == domain or host.endswith("." + domain)


class Settings(BaseSettings):
    """Everything the gateway needs to run, validated once at start-up."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        case_sensitive=False,
    )

    mode: Mode = Field(
        "proxy",
        description="proxy: relay every request outside /.auth to GATEWAY_UPSTREAM; forward-auth: "
        "only answer a proxy in front (nginx auth_request, Traefik ForwardAuth, Envoy ext_authz) "
        "on /.auth/verify, with no upstream (docs/forward-auth.md).",
    )
    upstream: AnyHttpUrl | None = Field(
        None,
        description="URL of the protected application, e.g. http://127.0.0.1:8080; required "
        "with GATEWAY_MODE=proxy, refused with forward-auth.",
    )
    listen: str = Field("0.0.0.0:8000", description="host:port the gateway listens on.")
    public_url: AnyHttpUrl = Field(
        description="External URL of the application: an origin, e.g. https://app.contoso.com, "
        "or an origin and a path prefix when the application lives under a path, e.g. "
        "https://intranet.contoso.com/payroll (the gateway's endpoints and cookies then live "
        "under it). The redirect URI is this plus /.auth/login/aad/callback. http only for "
        "loopback development."
    )
    tenant_id: str | None = Field(
        None,
        description="Entra tenant GUID or domain; organizations/common need "
        "GATEWAY_ALLOWED_TENANTS.",
    )
    client_id: str = Field(
        min_length=1, description="Application (client) id of the gateway's registration."
    )
    client_secret: SecretStr | None = Field(None, min_length=1, description="Client secret.")
    client_secret_file: Path | None = Field(None, description="File holding the client secret.")
    client_certificate_file: Path | None = Field(
        None, description="PEM file with an RSA private key and its certificate."
    )
    federated_token_file: Path | None = Field(
        None,
        description="Workload identity federation token file, re-read at each use "
        "(falls back to AZURE_FEDERATED_TOKEN_FILE).",
    )
    authority_host: str = Field(
        DEFAULT_AUTHORITY_HOST,
        pattern=r"^https://[^/?#]+/?$",
        description="Entra sign-in host when GATEWAY_AUTHORITY is not set, e.g. "
        "https://login.microsoftonline.us (falls back to AZURE_AUTHORITY_HOST).",
    )
    authority: str | None = Field(
        None,
        description="Entra authority URL including the tenant; default "
        "https://login.microsoftonline.com/<tenant> (or AZURE_AUTHORITY_HOST/<tenant>).",
    )
    oidc_authority: str | None = Field(
        None, description="Issuer URL of any standards-compliant OpenID provider (not Entra)."
    )
    allowed_tenants: SpaceSeparated = Field(
        (),
        description="Tenant ids allowed to sign in, space-separated; required with "
        "organizations/common.",
    )
    ca_bundle: Path | None = Field(
        None, description="PEM bundle trusted for the authority's TLS (private CAs)."
    )
    scopes: Scopes = Field(
        (),
        description="Space-separated scopes of the access token sent upstream as Authorization: "
        "Bearer; empty: no bearer token.",
    )
    session_store: Literal["memory", "redis"] = Field(
        "memory", description="memory (one replica) or redis (replicas share sessions)."
    )
    redis_url: SecretStr | None = Field(None, description="redis:// or rediss:// URL.")
    cookie_secret: SecretStr | None = Field(
        None,
        description="At least 32 random bytes; keys for cookies and stored records are derived "
        "from it. Required with redis so that replicas agree.",
    )
    cookie_secret_file: Path | None = Field(None, description="File holding the cookie secret.")
    cookie_secret_next: SecretStr | None = Field(
        None,
        description="The cookie secret about to become current: opens records, never seals "
        "(rotation step 1, see docs/security.md).",
    )
    cookie_secret_next_file: Path | None = Field(
        None, description="File holding the next cookie secret."
    )
    cookie_secrets_previous: CookieSecrets = Field(
        (),
        description="Former cookie secrets, space-separated: they open records (which are then "
        "re-sealed with the current one), never seal.",
    )
    cookie_secrets_previous_file: Path | None = Field(
        None,
        description="File with the former cookie secrets, one a line, or a directory with one "
        "a file (file-name order).",
    )
    client_secret_expires: datetime | None = Field(
        None,
        description="When the client secret expires, as Entra showed it (e.g. 2027-03-31): "
        "exported as a metric to alert on; Entra does not tell the client.",
    )
    workers: Literal["auto"] | PositiveInt = Field(
        1,
        description="Worker processes sharing the listen port (SO_REUSEPORT); auto: one per CPU "
        "this container may use. More than one requires the redis store.",
    )
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto",
        description="auto: uvloop where it is installed (Linux, macOS), else asyncio's own.",
    )
    metrics_listen: str | None = Field(
        None, description="host:port of the Prometheus metrics listener (off when empty)."
    )

    session: SessionSettings = Field(default_factory=SessionSettings)
    signin: SignInSettings = Field(default_factory=SignInSettings)
    proxy: ProxySettings = Field(default_factory=ProxySettings)
    msal: MsalSettings = Field(default_factory=MsalSettings)
    tokens: TokenSettings = Field(default_factory=TokenSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    groups: GroupSettings = Field(default_factory=GroupSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    assertion: AssertionSettings = Field(default_factory=AssertionSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    pages: PagesSettings = Field(default_factory=PagesSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit arguments (tests, the demo) first, then the environment. No .env, no secrets dir.
        return (init_settings, env_settings)

    @field_validator("listen", "metrics_listen")
    @classmethod
    def _host_port(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value in (None, ""):
            if info.field_name == "listen":
                raise ValueError("must be host:port, e.g. 0.0.0.0:8000")
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"must be host:port, got {value!r}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        # The message never quotes the URL: it may hold the password.
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in REDIS_SCHEMES:
            raise ValueError(
                "must start with redis://, rediss:// or unix://, e.g. rediss://redis.internal:6380/0"
            )
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError("has a port that is not a number 1-65535") from None
        if parts.scheme == "unix" and not parts.path:
            raise ValueError("unix:// needs the socket's path, e.g. unix:///run/redis/redis.sock")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("names no host, e.g. rediss://redis.internal:6380/0")
        return value

    @field_validator("authority", "oidc_authority")
    @classmethod
    def _https_with_path(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        value = value.rstrip("/")
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname or parts.path in ("", "/"):
            raise ValueError(
                "must be an https URL with at least one path segment, e.g. "
                "https://login.microsoftonline.com/<tenant>"
            )
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return value

    @field_validator("upstream", mode="before")
    @classmethod
    def _empty_upstream_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("upstream")
    @classmethod
    def _plain_upstream(cls, value: AnyHttpUrl | None) -> AnyHttpUrl | None:
        if value is None:
            return None
        # Credentials in the URL would have to become an Authorization header, which is the
        # bearer token's; a query or fragment has no place in front of every request's path.
        if value.username or value.password:
            raise ValueError("must not contain a user name or password")
        if value.query or value.fragment:
            raise ValueError("must not have a query or fragment")
        return value

    @field_validator("public_url", mode="before")
    @classmethod
    def _no_query_or_fragment(cls, value: object) -> object:
        if isinstance(value, str) and ("?" in value or "#" in value):
            raise ValueError(
                "must be scheme://host[:port] with an optional path prefix, without ? or #"
            )
        if isinstance(value, str):
            # Checked on the text as given: the URL parser would resolve dot segments and
            # re-encode, and the prefix must be exactly what browsers send.
            path = urlsplit(value).path
            if path not in ("", "/") and not _PREFIX_SHAPE.match(path.rstrip("/")):
                raise ValueError(
                    "the path prefix must be plain segments of letters, digits and - . _ ~, none "
                    "starting with a dot, no percent-encoding, e.g. https://host/payroll"
                )
        return value

    @field_validator("public_url")
    @classmethod
    def _plain_public_url(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        if value.query or value.fragment:
            raise ValueError("must not have a query or fragment")
        if value.username or value.password:
            raise ValueError("must not contain a user name or password")
        if value.scheme == "http" and not is_loopback_host(value.host):
            raise ValueError("must be https (http is allowed only on loopback, for development)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = read_rotation_files(dict(data))
        for name in ("client_secret", "cookie_secret", "cookie_secret_next"):
            file_key = f"{name}_file"
            path = data.get(file_key)
            if not path:
                continue
            if data.get(name):
                raise ValueError(
                    f"set only one of {ENV_PREFIX}{name.upper()} and {ENV_PREFIX}{file_key.upper()}"
                )
            try:
                data[name] = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(
                    f"{ENV_PREFIX}{file_key.upper()}: cannot read {path}: {exc.strerror}"
                ) from None
        return data

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Settings:
        problems = self.cross_field_problems()
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def cross_field_problems(self) -> list[str]:
        """The rules across settings, one line each naming every setting involved."""
        problems: list[str] = mode_problems(self)  # GATEWAY_UPSTREAM and GATEWAY_MODE
        if self.oidc_authority and (self.authority or self.tenant_id):
            problems.append(
                "GATEWAY_OIDC_AUTHORITY cannot be combined with GATEWAY_AUTHORITY or "
                "GATEWAY_TENANT_ID"
            )
        if not self.oidc_authority and not self.authority and not self.tenant_id:
            problems.append("GATEWAY_TENANT_ID (or GATEWAY_AUTHORITY) is required")
        if self.is_multi_tenant and not self.allowed_tenants:
            problems.append(
                "GATEWAY_ALLOWED_TENANTS is required when the tenant is organizations or common: "
                "list the tenant ids that may sign in"
            )
        credentials = [
            self.client_secret,
            self.client_certificate_file,
            self.federated_token_file,
        ]
        if sum(c is not None for c in credentials) != 1:
            problems.append(
                "set exactly one client credential: GATEWAY_CLIENT_SECRET, "
                "GATEWAY_CLIENT_SECRET_FILE, GATEWAY_CLIENT_CERTIFICATE_FILE or "
                "GATEWAY_FEDERATED_TOKEN_FILE"
            )
        for name in ("client_certificate_file", "federated_token_file", "ca_bundle"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                problems.append(f"{ENV_PREFIX}{name.upper()}: no such file: {path}")
        if self.session_store == "redis" and self.cookie_secret is None:
            problems.append(
                "GATEWAY_COOKIE_SECRET (or _FILE) is required when GATEWAY_SESSION_STORE is "
                "redis, so that replicas agree"
            )
        redis_url = self.redis_url.get_secret_value() if self.redis_url is not None else None
        if self.session_store != "redis" and (redis_url or self.redis.sentinels):
            # Fail closed: replicas that were meant to share sessions would each keep their own.
            named = "GATEWAY_REDIS_URL" if redis_url else "GATEWAY_REDIS__SENTINELS"
            problems.append(
                f"{named} is set but GATEWAY_SESSION_STORE is memory, so Redis would not be used: "
                f"set GATEWAY_SESSION_STORE=redis, or unset {named}"
            )
        if self.metrics_listen and _same_listener(self.listen, self.metrics_listen):
            problems.append(
                f"GATEWAY_LISTEN and GATEWAY_METRICS_LISTEN both take {self.metrics_listen}: give "
                "the metrics listener its own port"
            )
        # Sentinels, cluster, TLS, credentials and the RS-01 exposure guard (advanced_settings).
        problems.extend(self.redis.problems(redis_url, in_use=self.session_store == "redis"))
        if self.cookie_secret is not None:
            size = len(self.cookie_secret.get_secret_value().encode())
            if size < MIN_COOKIE_SECRET_BYTES:
                problems.append(
                    f"GATEWAY_COOKIE_SECRET must be at least {MIN_COOKIE_SECRET_BYTES} bytes "
                    f"(got {size}); generate one with: python3 -c 'import secrets; "
                    "print(secrets.token_urlsafe(32))'"
                )
        problems.extend(rotation_problems(self, MIN_COOKIE_SECRET_BYTES))
        if self.session.absolute_ttl_seconds < self.session.idle_ttl_seconds:
            problems.append(
                "GATEWAY_SESSION__ABSOLUTE_TTL_SECONDS must be at least "
                "GATEWAY_SESSION__IDLE_TTL_SECONDS"
            )
        if isinstance(self.workers, int) and self.workers > 1 and self.session_store != "redis":
            problems.append(
                "GATEWAY_WORKERS above 1 needs GATEWAY_SESSION_STORE=redis: worker processes "
                "share sessions only through Redis"
            )
        if (
            self.session_store == "redis"
            and 0 < self.session.idle_ttl_seconds <= self.session.cache_seconds
        ):
            problems.append(
                "GATEWAY_SESSION__CACHE_SECONDS must be less than GATEWAY_SESSION__IDLE_TTL_SECONDS"
            )
        problems.extend(self._shape_problems())
        if self.signin.response_mode == "form_post" and not self.cookie_secure:
            problems.append(
                "GATEWAY_SIGNIN__RESPONSE_MODE=form_post needs an https GATEWAY_PUBLIC_URL: the "
                "cross-site POST carries the sign-in binding cookie only with SameSite=None; Secure"
            )
        return problems

    def _shape_problems(self) -> list[str]:
        """Sub-path and subdomain deployments: the rules across the settings that shape them."""
        problems: list[str] = []
        if self.proxy.strip_prefix and not self.path_prefix:
            problems.append(
                "GATEWAY_PROXY__STRIP_PREFIX needs a path prefix in GATEWAY_PUBLIC_URL (e.g. "
                "https://intranet.contoso.com/payroll)"
            )
        problems.extend(self._paths_outside_prefix())
        domain = self.session.cookie_domain
        host = (self.public_url.host or "").lower()
        if domain is not None:
            if not self.cookie_secure:
                problems.append(
                    "GATEWAY_SESSION__COOKIE_DOMAIN needs an https GATEWAY_PUBLIC_URL: a cookie "
                    "shared across hosts must never travel in clear"
                )
            if not within_domain(host, domain):
                problems.append(
                    f"GATEWAY_SESSION__COOKIE_DOMAIN ({domain}) must contain the host of "
                    f"GATEWAY_PUBLIC_URL ({host}), where the cookie is set"
                )
        if self.signin.return_hosts and domain is None:
            problems.append(
                "GATEWAY_SIGNIN__RETURN_HOSTS needs GATEWAY_SESSION__COOKIE_DOMAIN: without a "
                "shared cookie, a browser sent to another host would arrive signed out"
            )
        elif domain is not None:
            outside = [
                entry
                for entry in self.signin.return_hosts
                if not within_domain(entry.partition(":")[0].removeprefix("*."), domain)
            ]
            if outside:
                problems.append(
                    f"GATEWAY_SIGNIN__RETURN_HOSTS {' '.join(outside)} not inside "
                    f"GATEWAY_SESSION__COOKIE_DOMAIN ({domain}), so the session cookie would not "
                    "reach them"
                )
        return problems

    def _paths_outside_prefix(self) -> list[str]:
        """Under a path prefix, rules match the path as the browser sends it, prefix included: a
        path written without it would govern nothing, and the requests it was meant for would
        fall to a weaker default. Refused, naming each ("/" governs everything, and is kept)."""
        prefix = self.path_prefix
        if not prefix:
            return []

        def outside(path: str) -> bool:
            return path != "/" and path != prefix and not path.startswith(prefix + "/")

        named = [
            *(
                (f"GATEWAY_POLICY__RULES[{i}].path", rule.path)
                for i, rule in enumerate(self.policy.rules)
            ),
            *(
                (f"GATEWAY_TOKENS__ROUTES[{i}].path", route.path)
                for i, route in enumerate(self.tokens.routes)
            ),
            *(("GATEWAY_PROXY__PUBLIC_PATHS", path) for path in self.proxy.public_paths),
        ]
        return [
            f"{name}: {path} is outside the path prefix {prefix} of GATEWAY_PUBLIC_URL, so it "
            f"would govern nothing: write {prefix}{path} (paths are matched as the browser sends "
            "them, prefix included)"
            for name, path in named
            if outside(path)
        ]

    # ---- derived values (pure) ----

    @property
    def authority_url(self) -> str:
        """The authority given to MSAL: normalised, no trailing slash."""
        if self.oidc_authority:
            return self.oidc_authority
        if self.authority:
            return self.authority
        return f"{self.authority_host.rstrip('/')}/{self.tenant_id}"

    @property
    def tenant(self) -> str | None:
        """The tenant segment of an Entra authority (None for a generic OpenID provider)."""
        if self.oidc_authority:
            return None
        return urlsplit(self.authority_url).path.strip("/").split("/")[0]

    @property
    def is_multi_tenant(self) -> bool:
        return (self.tenant or "").lower() in MULTI_TENANT_ALIASES

    @property
    def forward_auth_only(self) -> bool:
        """GATEWAY_MODE=forward-auth: no upstream; only the gateway's own endpoints answer."""
        return self.mode == FORWARD_AUTH

    @property
    def cookie_secure(self) -> bool:
        return self.public_url.scheme == "https"

    @cached_property
    def public_origin(self) -> str:
        """scheme://host[:port] of the public URL: what browsers send as Origin."""
        parts = urlsplit(str(self.public_url))
        return f"{parts.scheme}://{parts.netloc}"

    @cached_property
    def path_prefix(self) -> str:
        """The path the application lives under ("" at the root, else "/payroll"): the gateway's
        endpoints, its cookies and every return target stay inside it."""
        return (self.public_url.path or "").rstrip("/")

    @cached_property
    def public_base(self) -> str:
        """The public URL without a trailing slash: origin plus path prefix."""
        return self.public_origin + self.path_prefix

    def auth_path(self, path: str) -> str:
        """One of the gateway's own paths ("/.auth/...") as browsers reach it here."""
        return self.path_prefix + path

    @cached_property
    def auth_paths(self) -> tuple[str, ...]:
        """Where the gateway's own answers start: the reserved /.auth under the prefix, and at
        the root (liveness and readiness are answered there too, for probes)."""
        return tuple(dict.fromkeys((self.auth_path("/.auth"), "/.auth")))

    @property
    def redirect_uri(self) -> str:
        return self.public_base + CALLBACK_PATH

    @property
    def response_mode(self) -> Literal["form_post", "query"]:
        if self.signin.response_mode is not None:
            return self.signin.response_mode
        return "form_post" if self.cookie_secure else "query"

    @cached_property
    def cookie_path(self) -> str:
        """The Path of the gateway's cookies: the prefix, so that apps under other paths of the
        same host never receive or overwrite them."""
        return self.path_prefix or "/"

    @cached_property
    def cookie_domain(self) -> str | None:
        """The session cookie's Domain, when one sign-in spans subdomains; else host-only."""
        return self.session.cookie_domain

    def _cookie_name(self, *, host_only: bool, suffix: str = "") -> str:
        # __Host- is the strongest prefix (Secure, this host only, Path=/); a path prefix or a
        # Domain rules it out, and __Secure- (Secure, set only over https) is the strongest left.
        # The path goes into the name too, so that nested prefixes (/a and /a/b) never send a
        # browser two cookies of one name.
        name = self.session.cookie_name + self.path_prefix.replace("/", "-") + suffix
        if not self.cookie_secure:
            return name
        if host_only and not self.path_prefix:
            return "__Host-" + name
        return "__Secure-" + name

    @cached_property
    def session_cookie(self) -> CookieSpec:
        return CookieSpec(
            self._cookie_name(host_only=self.cookie_domain is None),
            secure=self.cookie_secure,
            path=self.cookie_path,
            domain=self.cookie_domain,
        )

    @cached_property
    def signin_cookie(self) -> CookieSpec:
        # Always host-only: it binds a sign-in to the browser on the host that finishes it.
        return CookieSpec(
            self._cookie_name(host_only=True, suffix="-signin"),
            secure=self.cookie_secure,
            path=self.cookie_path,
        )

    @property
    def session_cookie_name(self) -> str:
        return self.session_cookie.name

    @property
    def signin_cookie_name(self) -> str:
        return self.signin_cookie.name

    def is_return_host(self, netloc: str) -> bool:
        """Whether host[:port] (lower case, as a Host header or https URL carries it) is one of
        GATEWAY_SIGNIN__RETURN_HOSTS: a sibling under the shared cookie domain that sign-in may
        send the browser back to, and whose name the application may be given as its host."""
        host, _, port = netloc.partition(":")
        if not is_dns_name(host):  # "evil.example?.apps.test" ends like one, but names evil.example
            return False
        port = "" if port == "443" else port
        for entry in self.signin.return_hosts:
            name, _, wanted_port = entry.partition(":")
            if port != ("" if wanted_port == "443" else wanted_port):
                continue
            if name.startswith("*."):
                if host.endswith(name[1:]) and len(host) > len(name) - 1:
                    return True
            elif host == name:
                return True
        return False

    def sibling_host(self, host_header: str) -> str | None:
        """The request's Host (lower case) when it is not the public URL's but one of the return
        hosts under the shared cookie domain; else None. The Host header is the client's to
        choose, so it is believed only as far as the allow-list goes."""
        if not self.signin.return_hosts:
            return None
        host = host_header.lower()
        if host == self.public_url_host.lower() or not self.is_return_host(host):
            return None
        return host

    @cached_property
    def public_url_host(self) -> str:
        """host[:port] of the public URL, as a Host header carries it."""
        return urlsplit(self.public_origin).netloc

    @cached_property
    def own_cookie_names(self) -> frozenset[str]:
        """The gateway's cookies, and under a path prefix those of the gateways a browser may
        also hold for the paths above it (at the root, at /a for /a/b; with the same cookie
        name, in every prefix variant): never shown to the upstream, never set by it. The
        browser sends an outer gateway's session id with every request under the prefix, and
        it is no business of this application's."""
        names = {self.session_cookie_name, self.signin_cookie_name}
        segments = self.path_prefix.split("/")[1:]
        for depth in range(len(segments)):
            base = "".join(f"-{segment}" for segment in segments[:depth])
            for name in (
                self.session.cookie_name + base,
                self.session.cookie_name + base + "-signin",
            ):
                names.update({name, "__Host-" + name, "__Secure-" + name})
        return frozenset(names)

    def listen_address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)
