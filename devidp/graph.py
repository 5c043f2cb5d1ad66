"""The slice of Microsoft Graph a gateway needs for groups overage: the signed-in user's groups.

`GET /v1.0/me/transitiveMemberOf/microsoft.graph.group` (and `/v1.0/me/transitiveMemberOf`) on
the emulator's own origin, so a gateway's Graph base URL is `https://127.0.0.1:PORT/v1.0`. It takes
a delegated access token this emulator issued for Graph, pages with `$top` and `$skiptoken`, and
answers errors in Graph's shape (`{"error": {"code", "message", "innerError"}}`), not Entra's.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlencode

import jwt
from aiohttp import web

from .config import User
from .jwts import decode_own_access_token
from .scopes import GRAPH_AUDIENCES, GRAPH_RESOURCE
from .signing_keys import b64url
from .state import STATE, DevIdpState

PREFIX: Final = "/v1.0"
GROUP_TYPE: Final = "#microsoft.graph.group"
DEFAULT_PAGE_SIZE: Final = 100
MAX_PAGE_SIZE: Final = 999
SKIPTOKEN: Final = "$skiptoken"
_INVALID_TOKEN: Final = "InvalidAuthenticationToken"  # noqa: S105 - an error code
_BAD_REQUEST: Final = "Request_BadRequest"


class GraphError(Exception):
    """A Graph error response: HTTP status, Graph's `code` and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


async def transitive_member_of(request: web.Request) -> web.Response:
    state = request.app[STATE]
    client_request_id = request.headers.get("client-request-id") or str(uuid.uuid4())
    headers = {"request-id": str(uuid.uuid4()), "client-request-id": client_request_id}
    try:
        user = _signed_in_user(state, request.headers.get("Authorization", ""))
        top = _page_size(request.query.get("$top"))
        offset = _offset(request.query.get(SKIPTOKEN), user)
    except GraphError as error:
        if error.status == 401:  # what Graph sends, pointing at this emulator's authority
            headers["WWW-Authenticate"] = (
                f'Bearer realm="", authorization_uri="{state.urls.authority}/oauth2/authorize", '
                f'client_id="{GRAPH_RESOURCE}"'
            )
        problem = _error_body(error, headers, state.clock())
        return web.json_response(problem, status=error.status, headers=headers)
    groups_only = request.path.endswith("/microsoft.graph.group")
    selected = _selected(request.query.get("$select"))
    entity = "groups" if groups_only else "directoryObjects"
    shape = f"({','.join(selected)})" if selected else ""
    body: dict[str, object] = {
        "@odata.context": f"{state.urls.base_url}{PREFIX}/$metadata#{entity}{shape}",
        "value": [
            _group(group_id, state.group_names.get(group_id), selected)
            for group_id in user.groups[offset : offset + top]
        ],
    }
    if offset + top < len(user.groups):
        body["@odata.nextLink"] = _next_link(state, request.path, request.query, user, offset + top)
    return web.json_response(body, headers=headers)


def _signed_in_user(state: DevIdpState, authorization: str) -> User:
    """The user a delegated Graph token from this emulator names, or GraphError."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise GraphError(401, _INVALID_TOKEN, "Access token is empty.")
    try:
        claims = decode_own_access_token(
            token.strip(), keys=state.keys, issuer=state.urls.issuer, audiences=GRAPH_AUDIENCES
        )
    except jwt.ExpiredSignatureError as exc:
        raise GraphError(
            401, _INVALID_TOKEN, "Lifetime validation failed, the token is expired."
        ) from exc
    except jwt.InvalidAudienceError as exc:
        raise GraphError(
            401, _INVALID_TOKEN, "Access token validation failure. Invalid audience."
        ) from exc
    except jwt.PyJWTError as exc:
        raise GraphError(401, _INVALID_TOKEN, "Access token validation failure.") from exc
    if claims.get("idtyp") == "app" or "scp" not in claims:
        raise GraphError(
            400, "BadRequest", "/me request is only valid with delegated authentication flow."
        )
    oid = claims.get("oid")
    user = next((u for u in state.users() if u.oid == oid), None)
    if user is None:
        raise GraphError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{oid}' does not exist or one of its queried reference-property objects "
            "are not present.",
        )
    return user


def _page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise GraphError(
            400,
            _BAD_REQUEST,
            f"Invalid page size specified: '{raw}'. Must be between 1 and {MAX_PAGE_SIZE} "
            "inclusive.",
        )
    return int(raw)


def _skiptoken(user: User, offset: int) -> str:
    # Opaque to clients, like Graph's; bound to the user so it cannot page someone else's list.
    return b64url(f"devidp:{user.oid}:{offset}".encode())


def _offset(raw: str | None, user: User) -> int:
    if raw is None:
        return 0
    try:
        decoded = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = ""
    prefix, _, offset = decoded.rpartition(":")
    if prefix != f"devidp:{user.oid}" or not offset.isdigit():
        raise GraphError(400, _BAD_REQUEST, f"The skip token '{raw}' is not valid.")
    return int(offset)


_PROPERTIES: Final = (
    "id",
    "displayName",
    "description",
    "mail",
    "mailEnabled",
    "securityEnabled",
    "groupTypes",
)


def _selected(raw: str | None) -> tuple[str, ...]:
    """The known properties `$select` names (Graph matches them case-insensitively); `id` is
    always kept. Unknown names are ignored rather than refused."""
    if not raw:
        return ()
    wanted = {name.strip().casefold() for name in raw.split(",")}
    return tuple(p for p in _PROPERTIES if p == "id" or p.casefold() in wanted)


def _group(group_id: str, display_name: str | None, selected: tuple[str, ...]) -> dict[str, object]:
    """A security group as Graph returns it. Groups missing from `DevIdpConfig.groups` have no
    display name (null)."""
    full: dict[str, object] = {
        "id": group_id,
        "displayName": display_name,
        "description": None,
        "mail": None,
        "mailEnabled": False,
        "securityEnabled": True,
        "groupTypes": [],
    }
    shown = selected or _PROPERTIES
    return {"@odata.type": GROUP_TYPE, **{p: full[p] for p in shown}}


def _next_link(
    state: DevIdpState, path: str, query: Mapping[str, str], user: User, offset: int
) -> str:
    """The same request with a `$skiptoken` for the next page, as an absolute URL."""
    params = [(k, v) for k, v in query.items() if k != SKIPTOKEN]
    params.append((SKIPTOKEN, _skiptoken(user, offset)))
    return f"{state.urls.base_url}{path}?{urlencode(params, safe='$,')}"


def _error_body(error: GraphError, headers: Mapping[str, str], now: float) -> dict[str, object]:
    inner = {
        "date": dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": headers["request-id"],
        "client-request-id": headers["client-request-id"],
    }
    return {"error": {"code": error.code, "message": error.message, "innerError": inner}}
