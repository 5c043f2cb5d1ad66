"""Microsoft Graph, for the one thing the gateway needs from it: a user's transitive group ids,
when the id_token only carries the overage marker. Blocking HTTP through the identity provider's
session: called only from MsalClient's worker threads."""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlsplit

import requests

MAX_PAGES: Final = 100  # 999 groups a page: far beyond any real membership


class GraphError(Exception):
    """Graph refused or could not be read; the message says why."""


def has_group_overage(claims: dict[str, Any]) -> bool:
    """Whether the token says "too many groups to list here" (Entra's overage marker)."""
    names = claims.get("_claim_names")
    return (isinstance(names, dict) and "groups" in names) or claims.get("hasgroups") is True


def transitive_group_ids(
    http: requests.Session, graph_url: str, access_token: str, page_size: int = 999
) -> list[str]:
    """Every group the signed-in user is a member of, directly or not, following Graph's paging.

    Follows `@odata.nextLink` only on Graph's own origin: the bearer token never goes elsewhere.
    """
    origin = urlsplit(graph_url)[:2]
    url: str | None = (
        f"{graph_url}/me/transitiveMemberOf/microsoft.graph.group?$select=id&$top={page_size}"
    )
    groups: list[str] = []
    for _ in range(MAX_PAGES):
        if url is None:
            return groups
        if urlsplit(url)[:2] != origin:
            raise GraphError("Graph's next page is on another origin")
        try:
            response = http.get(url, headers={"Authorization": f"Bearer {access_token}"})
        except requests.RequestException as exc:
            raise GraphError(f"Graph could not be reached: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise GraphError(f"Graph answered {response.status_code}")
        try:
            page = response.json()
            groups.extend(str(item["id"]) for item in page.get("value", []))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise GraphError("Graph's answer is not a group list") from exc
        next_link = page.get("@odata.nextLink")
        url = str(next_link) if next_link else None
    raise GraphError(f"more than {MAX_PAGES} pages of groups")
