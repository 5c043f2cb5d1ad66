"""Route policy: which rule governs a request, and whether a principal meets it. Pure functions.

Rules are matched on the raw path exactly as the upstream will receive it (the gateway forwards the
raw path byte for byte), first match wins, and requests no rule matches need a signed-in user. A
request target that the upstream could read differently from us (encoded "/" or "\\", "#", NUL,
dot segments, ";" parameters, characters some stacks fold into "/", "\\" or ".", overlong or
invalid UTF-8) is refused with 400 rather than guessed at (THREATS.md A5), once any rule or public
path exists.

Protective rules (authenticated, deny) match broadly and public rules narrowly (auth/paths.py);
the same holds for methods: HEAD is judged as GET, a `_method` in the query as the method it names
too, and a POST, which frameworks let a form turn into PUT, PATCH or DELETE (`_method` in the body,
unseen here), falls under a protective rule for any of those. Method-override headers never reach
the application (auth/headers.py).

Identity is the user's `oid`/`tid` (or `iss`/`sub`); an email is used only for email/domain rules,
and only when it can be trusted (nOAuth).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, unquote_to_bytes

from gateway.auth.paths import governs, matches
from gateway.config.access import PolicyRule
from gateway.errors import BadRequest

_AMBIGUOUS: Final = re.compile(
    r"%2f|%5c|%2e|%00|%23|%3b|[;#\\\x00]|/\.\.?(?:/|$)|^[^/]|//"
    # An escaped unreserved character ("/%61dmin") means the same path to the application
    # (RFC 3986 6.2.2.2) but not to a prefix match.
    r"|%(?:3[0-9]|4[1-9a-f]|5[0-9a]|6[1-9a-f]|7[0-9a]|2d|5f|7e)",
    re.IGNORECASE,
)


# Worth a closer look: a non-ASCII byte, escaped or raw.
_NON_ASCII: Final = re.compile(r"%[89a-f][0-9a-f]|[^\x00-\x7f]", re.IGNORECASE)
_SEPARATORS: Final = frozenset("/\\.?#;%")
# Look-alikes that stacks with "best fit" code-page mappings (IIS, Windows APIs) or confusable
# folding turn into "/", "\\" or ".", beyond what NFKC already maps.
_LOOK_ALIKES: Final = frozenset(
    "\u2215\u2044\u29f8\u2571\u29f5\u2216\u29f9\u2572\u2024\u3002\uff61\u0338"
)
# What a form's POST can become in Rails, Laravel, Express method-override and Spring.
_OVERRIDABLE: Final = frozenset({"PUT", "PATCH", "DELETE"})


class AmbiguousPath(BadRequest):
    code = "ambiguous_path"


def _folds_to_a_separator(path: str) -> bool:
    """Whether a non-ASCII part of the path could turn into a separator or a dot upstream: invalid
    UTF-8 once unescaped (overlong forms such as %C0%AF), or a character whose compatibility form
    or look-alike is one."""
    try:
        text = unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        return True
    for char in text:
        if ord(char) < 0x80:
            continue
        if char in _LOOK_ALIKES or not _SEPARATORS.isdisjoint(unicodedata.normalize("NFKC", char)):
            return True
    return False


def _judged_methods(method: str, query: str) -> tuple[frozenset[str], frozenset[str]]:
    """The methods a request is judged as: (by public rules, which must allow each of them; by
    protective rules, which govern it if they name any of them)."""
    if "method" not in query.lower() and "%" not in query:
        return _plain_methods(method)
    own = {method}
    for name, value in parse_qsl(query, keep_blank_values=True):
        # As frameworks read the name: percent-decoded (%5Fmethod), and PHP turns "." and " "
        # in names into "_" (.method, +method).
        if name.replace(".", "_").replace(" ", "_").lower() == "_method":
            own.add(value.upper())
    protective = own | _OVERRIDABLE if method == "POST" else own
    return frozenset(own), frozenset(protective)


@functools.lru_cache(maxsize=64)
def _plain_methods(method: str) -> tuple[frozenset[str], frozenset[str]]:
    own = frozenset({method})
    return own, own | _OVERRIDABLE if method == "POST" else own


def _rule_methods(rule: PolicyRule) -> frozenset[str]:
    """A rule's methods, with HEAD wherever GET is: a HEAD runs the GET handler in most stacks."""
    methods = set(rule.methods)
    if "GET" in methods:
        methods.add("HEAD")
    return frozenset(methods)


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
        self._matchers = tuple(
            (
                rule,
                rule.path.lower() if case_insensitive else rule.path,
                rule.allow == "public",
                _rule_methods(rule),
            )
            for rule in self.rules
        )

    @property
    def active(self) -> bool:
        return bool(self.rules)

    def rule_for(self, method: str, raw_target: str) -> PolicyRule | None:
        """The first rule for this request, or None (a signed-in user is then enough).

        AmbiguousPath when rules exist and the target could mean another path upstream."""
        if not self.rules:
            return None
        path, _, query = raw_target.partition("?")
        if _AMBIGUOUS.search(path) or (_NON_ASCII.search(path) and _folds_to_a_separator(path)):
            raise AmbiguousPath("the request path is ambiguous")
        if self._fold:
            path = path.lower()
        public_methods, protective_methods = _judged_methods(method.upper(), query)
        for rule, prefix, public, methods in self._matchers:
            if public:
                if matches(path, prefix) and (not methods or public_methods <= methods):
                    return rule
            elif governs(path, prefix) and (
                not methods or not protective_methods.isdisjoint(methods)
            ):
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
