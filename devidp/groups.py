"""Security groups: the directory's named groups and how a user's groups appear in tokens.

Values and pure functions only. A user's group ids live on `config.User`; this module names
them (for Microsoft Graph) and decides between a `groups` claim and Entra's overage marker.
Graph itself is served by `graph.py`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

# Entra puts at most 200 groups in a JWT; beyond that the token only says where to ask.
DEFAULT_OVERAGE_LIMIT: Final = 200
OVERAGE_SOURCE: Final = "src1"
_NUMBERED: Final = uuid.UUID("6f1b8e2a-3c4d-4e5f-9a0b-1c2d3e4f5a6b")


@dataclass(frozen=True, slots=True)
class Group:
    """A security group: its object id (a GUID) and the name Graph reports."""

    id: str
    display_name: str


READERS: Final = Group("8d2f1e3c-5b4a-4c6d-9e7f-0a1b2c3d4e5f", "Readers")
WRITERS: Final = Group("9e3a2f4d-6c5b-4d7e-8f9a-1b2c3d4e5f60", "Writers")


def numbered_groups(count: int) -> tuple[Group, ...]:
    """ "Group 001".."Group NNN" with ids that are the same in every run (uuid5 of the index)."""
    width = max(3, len(str(count)))
    return tuple(
        Group(str(uuid.uuid5(_NUMBERED, f"group-{i}")), f"Group {i:0{width}d}")
        for i in range(1, count + 1)
    )


MANY_GROUPS: Final = numbered_groups(250)
DEFAULT_GROUPS: Final[tuple[Group, ...]] = (READERS, WRITERS, *MANY_GROUPS)


def overage_endpoint(tenant_id: str, oid: str) -> str:
    return f"https://graph.windows.net/{tenant_id}/users/{oid}/getMemberObjects"


def group_claims(
    groups: Sequence[str], *, tenant_id: str, oid: str, limit: int
) -> dict[str, object]:
    """The `groups` claim, or, for more than `limit` groups, the overage marker instead.

    Entra v2 id tokens from the implicit flow say `hasgroups: true` instead; the emulator only
    serves code flows, so it always uses `_claim_names`/`_claim_sources`.
    """
    if not groups:
        return {}
    if len(groups) <= limit:
        return {"groups": list(groups)}
    return {
        "_claim_names": {"groups": OVERAGE_SOURCE},
        "_claim_sources": {OVERAGE_SOURCE: {"endpoint": overage_endpoint(tenant_id, oid)}},
    }
