"""Who a set of verified claims is: the one rule for a user's stable key, shared by browser
sessions (id tokens) and API callers (access tokens), and the names an operator may revoke that
user by. Pure.

The key is `oid.tid` when both are GUIDs (Entra: the object id is unique in its tenant and never
reassigned), else `iss|sub` (any OpenID provider: `sub` is unique per issuer). Never an email,
preferred_username or upn: those are mutable and, across tenants, unverified (nOAuth, JW-15).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

_GUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def user_key(claims: Mapping[str, Any]) -> str:
    """The stable identity of verified claims; ValueError when they name no subject."""
    oid, tid = claims.get("oid"), claims.get("tid")
    if all(isinstance(v, str) and _GUID.fullmatch(v) for v in (oid, tid)):
        return f"{oid}.{tid}"
    iss, sub = claims.get("iss"), claims.get("sub")
    if isinstance(iss, str) and iss and isinstance(sub, str) and sub:
        return f"{iss}|{sub}"
    raise ValueError("the claims name no subject (oid and tid, or iss and sub)")


def revocation_names(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """The values `POST /.auth/admin/revoke` finds this user by: the user key, the object id (or,
    without one, the subject) that X-Forwarded-User shows, and the name /.auth/me shows as
    `user_id` (preferred_username, case-folded). The last is for operators only: it is mutable
    and, across tenants, unverified, so it never decides access; revoking by it ends every
    session that signed in showing that name."""
    names = [user_key(claims)]
    for shown in (claims.get("oid") or claims.get("sub"), claims.get("preferred_username")):
        if isinstance(shown, str) and shown:
            name = shown.casefold() if "@" in shown else shown
            if name not in names:
                names.append(name)
    return tuple(names)


class UnknownUserForm(ValueError):
    """A value that is none of the forms revocation accepts."""


def revocation_name(value: str, *, entra: bool) -> str:
    """The index name an operator's value stands for. With Entra the accepted forms are an
    object id, `<object id>.<tenant id>` and a UPN (`name@domain`); anything else raises
    UnknownUserForm rather than revoking nothing in silence. Another provider's subjects have
    no shape to check: the value is taken as a user key (`iss|sub`), a subject or a name."""
    value = value.strip()
    if "@" in value:
        return value.casefold()
    if not entra:
        return value
    parts = value.lower().split(".")
    if all(_GUID.fullmatch(part) for part in parts) and len(parts) in (1, 2):
        return ".".join(parts)
    raise UnknownUserForm(
        "expected the user's object id, <object id>.<tenant id>, or the UPN that /.auth/me shows"
    )
