"""Route policy: which rule governs a request, and whether a principal meets it. Pure functions.

Rules are matched on the raw path exactly as the upstream will receive it (the gateway forwards the
raw path byte for byte), first match wins, and requests no rule matches need a signed-in user. A
request target that the upstream could read differently from us (encoded "/" or "\\", "#", NUL,
dot segments, ";" parameters) is refused with 400 rather than guessed at (THREATS.md A5), once any
rule or public path exists. Identity is the user's `oid`/`tid` (or `iss`/`sub`); an email is used
only for email/domain rules, and only when it can be trusted (nOAuth).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.auth.paths import matches
from gateway.config.access import PolicyRule
from gateway.errors import BadRequest

_AMBIGUOUS: Final = re.compile(
    r"%2f|%5c|%2e|%00|%23|%3b|[;#\\\x00]|/\.\.?(?:/|$)|^[^/]|//"
    # An escaped unreserved character ("/%61dmin") means the same path to the application
    # (RFC 3986 6.2.2.2) but not to a prefix match.
    r"|%(?:3[0-9]|4[1-9a-f]|5[0-9a]|6[1-9a-f]|7[0-9a]|2d|5f|7e)",
    re.IGNORECASE,
)


class AmbiguousPath(BadRequest):
    code = "ambiguous_path"


@dataclass(frozen=True, slots=True)
class Principal:
    """What a rule may look at: verified claims and where they came from."""

    claims: Mapping[str, Any]
    groups: tuple[str, ...] | None  # resolved through Graph (overage); else the groups claim
    scopes: tuple[str, ...] | None  # `scp` of an API caller's bearer token; None for a browser
    email_trusted: bool


class Policy:
    def __init__(
        self,
        rules: tuple[PolicyRule, ...],
        public_paths: tuple[str, ...],
        *,
        case_insensitive: bool,
    ) -> None:
        public = tuple(PolicyRule(path=path, allow="public") for path in public_paths)
        self.rules = public + rules
        self._fold = case_insensitive

    @property
    def active(self) -> bool:
        return bool(self.rules)

    def rule_for(self, method: str, raw_target: str) -> PolicyRule | None:
        """The first rule for this request, or None (a signed-in user is then enough).

        AmbiguousPath when rules exist and the target could mean another path upstream."""
        if not self.rules:
            return None
        if _AMBIGUOUS.search(raw_target.split("?", 1)[0]):
            raise AmbiguousPath("the request path is ambiguous")
        path = raw_target.split("?", 1)[0]
        if self._fold:
            path = path.lower()
        for rule in self.rules:
            prefix = rule.path.lower() if self._fold else rule.path
            if matches(path, prefix) and (not rule.methods or method in rule.methods):
                return rule
        return None


def _email(principal: Principal) -> str | None:
    if not principal.email_trusted:
        return None
    value = principal.claims.get("email")
    if not isinstance(value, str) or value.count("@") != 1:
        return None
    return value.lower()


def _values(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {str(item) for item in value}
    return set()


def refusal(rule: PolicyRule, principal: Principal) -> str | None:
    """Why `principal` may not pass `rule`, or None when it may. Every non-empty requirement
    must hold; within one, any listed value is enough (scopes: all of them)."""
    claims = principal.claims
    if rule.allow == "deny":
        return "the rule denies everyone"
    if rule.tenants and claims.get("tid") not in rule.tenants:
        return "tenant not allowed"
    if rule.users and (claims.get("oid") or claims.get("sub")) not in rule.users:
        return "user not allowed"
    groups = (
        set(principal.groups) if principal.groups is not None else _values(claims.get("groups"))
    )
    if rule.groups and not groups.intersection(rule.groups):
        return "not in a required group"
    if rule.roles and not _values(claims.get("roles")).intersection(rule.roles):
        return "missing a required role"
    email = _email(principal)
    if rule.emails and email not in rule.emails:
        return "email not allowed"
    if rule.domains and (email is None or email.split("@", 1)[1] not in rule.domains):
        return "email domain not allowed"
    if rule.scopes and (principal.scopes is None or not set(rule.scopes) <= set(principal.scopes)):
        return "token lacks a required scope"
    return None
