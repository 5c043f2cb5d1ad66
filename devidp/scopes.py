"""Scope strings: which resource an access token is for and which permissions it carries.

`api://upstream/read` is permission `read` on resource `api://upstream`; a bare name such as
`User.Read` is a Microsoft Graph permission; `openid profile offline_access email` name no
resource. Like Entra, a token request may name only one resource (AADSTS28000); an authorize
request may name several, for the user to consent to all of them at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .errors import INVALID_SCOPE, OAuthError, missing

OIDC_SCOPES: Final = frozenset({"openid", "profile", "offline_access", "email"})
GRAPH_RESOURCE: Final = "00000003-0000-0000-c000-000000000000"
GRAPH_URL: Final = "https://graph.microsoft.com"
GRAPH_AUDIENCES: Final = (GRAPH_RESOURCE, GRAPH_URL, f"{GRAPH_URL}/")
DEFAULT_PERMISSION: Final = ".default"


def split_scope(scope: str) -> tuple[str, str]:
    """(resource, permission) for one non-OIDC scope string."""
    if "://" in scope:
        scheme, rest = scope.split("://", 1)
        if "/" not in rest:
            return scope, DEFAULT_PERMISSION
        host_and_path, permission = rest.rsplit("/", 1)
        return f"{scheme}://{host_and_path}", permission or DEFAULT_PERMISSION
    if "/" in scope:
        resource, permission = scope.rsplit("/", 1)
        return resource, permission or DEFAULT_PERMISSION
    return GRAPH_RESOURCE, scope


@dataclass(frozen=True, slots=True)
class Scopes:
    """A parsed `scope` parameter. `requested` keeps the strings verbatim, in request order."""

    requested: tuple[str, ...]
    resource: str | None
    permissions: tuple[str, ...]

    @property
    def openid(self) -> bool:
        return "openid" in self.requested

    @property
    def offline_access(self) -> bool:
        return "offline_access" in self.requested

    @property
    def is_default(self) -> bool:
        return DEFAULT_PERMISSION in self.permissions

    @property
    def text(self) -> str:
        return " ".join(self.requested)

    @property
    def scp(self) -> str:
        """The `scp` claim: the permissions, or the OIDC scopes when no resource was named."""
        named = [p for p in self.permissions if p != DEFAULT_PERMISSION]
        if self.resource is None:
            return " ".join(s for s in self.requested if s != "offline_access")
        return " ".join(named) if named else "user_impersonation"


def parse_scopes(raw: str | None) -> Scopes:
    """Parse a space-separated scope list. Raises OAuthError when empty or multi-resource."""
    requested = tuple(dict.fromkeys((raw or "").split()))
    if not requested:
        raise missing("scope")
    resources: list[str] = []
    permissions: list[str] = []
    for scope in requested:
        if scope in OIDC_SCOPES:
            continue
        resource, permission = split_scope(scope)
        if resource not in resources:
            resources.append(resource)
        permissions.append(permission)
    if len(resources) > 1:
        raise OAuthError(
            INVALID_SCOPE,
            28000,
            "Provided value for the input parameter scope is not valid because it contains "
            f"more than one resource. Scope {' '.join(requested)} is not valid.",
        )
    return Scopes(requested, resources[0] if resources else None, tuple(permissions))


def parse_authorize_scopes(raw: str | None) -> tuple[Scopes, tuple[str, ...]]:
    """The scopes a code stands for (OIDC plus the first resource's) and every resource named.

    Entra v2 lets an authorize request name several resources ("the scopes that you want the
    user to consent to"); its code redeems for one resource at a time.
    """
    requested = tuple(dict.fromkeys((raw or "").split()))
    resources: list[str] = []
    kept: list[str] = []
    for scope in requested:
        if scope not in OIDC_SCOPES:
            resource = split_scope(scope)[0]
            if resource not in resources:
                resources.append(resource)
            if resource != resources[0]:
                continue
        kept.append(scope)
    return parse_scopes(" ".join(kept)), tuple(resources)


def canonical_resource(resource: str) -> str:
    """One name per API, for consent records: Graph's URL and its app id are the same API."""
    trimmed = resource.rstrip("/")
    return GRAPH_RESOURCE if trimmed.lower() == GRAPH_URL else trimmed
