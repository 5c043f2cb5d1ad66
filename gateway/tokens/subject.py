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
    """The values `POST /.auth/admin/revoke` accepts for this user: the user key, and the object
    id (or, without one, the subject) that X-Forwarded-User shows."""
    names = [user_key(claims)]
    shown = claims.get("oid") or claims.get("sub")
    if isinstance(shown, str) and shown and shown not in names:
        names.append(shown)
    return tuple(names)
