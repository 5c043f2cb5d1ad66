"""Settings for who may reach what and which tokens travel: access rules (GATEWAY_POLICY__*),
bearer tokens upstream (GATEWAY_TOKENS__*), group overage (GATEWAY_GROUPS__*), signed identity
assertions (GATEWAY_ASSERTION__*) and API callers (GATEWAY_API__*)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    PositiveFloat,
    PositiveInt,
    field_validator,
)

from gateway.config.advanced import (
    RoutePath,
    Scopes,
    SettingsGroup,
    SpaceSeparated,
)


class PolicyRule(SettingsGroup):
    """Who may reach requests matching `path` (and `methods`, if any). First match wins."""

    path: RoutePath = Field(
        description="Path prefix; ending in '/' matches below it, else exact or below. "
        "Protective rules also govern the prefix without its '/' and format suffixes "
        "('/admin/' governs '/admin', '/settings' governs '/settings.json')."
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
        description="Path prefix; ending in '/' matches below it, else exact or below. "
        "Protective rules also govern the prefix without its '/' and format suffixes "
        "('/admin/' governs '/admin', '/settings' governs '/settings.json')."
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
        "its groups, and the request is refused (500 identity_too_large) if it still does not "
        "fit; any other header over it is not sent (never cut), with a warning. Raise it only as "
        "far as the application's server accepts.",
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
