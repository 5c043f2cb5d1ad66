"""The control API over HTTP: JSON under `/_devidp/`, for gateway processes and other tools.

Each route calls the `DevIdpControl` method of the same name in a worker thread (some of them
generate RSA keys). Requests from a non-loopback peer get 403, whatever address the emulator
listens on. Bad arguments get 400 `{"error": "..."}`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

from .config import Client, FederatedCredential, User, is_loopback_host
from .control_api import DevIdpControl
from .state import STATE

PREFIX: Final = "/_devidp"
CONTROL: Final = web.AppKey("devidp_control", DevIdpControl)

# JSON bodies are untyped by nature; the control methods' signatures do the checking.
Json = dict[str, Any]
Operation = Callable[[DevIdpControl, Json], object]


def _user(body: Json) -> User:
    for name in ("groups", "roles"):
        body[name] = tuple(body.get(name, ()))
    return User(**body)


def _client(body: Json) -> Client:
    if body.get("redirect_uris") is not None:
        body["redirect_uris"] = tuple(body["redirect_uris"])
    body["certificates_pem"] = tuple(body.get("certificates_pem", ()))
    body["federated_credentials"] = tuple(
        FederatedCredential(**c) for c in body.get("federated_credentials", ())
    )
    return Client(**body)


OPERATIONS: Final[dict[str, Operation]] = {
    "reset": lambda c, b: c.reset(**b),
    "faults/clear": lambda c, b: c.clear_faults(**b),
    "faults/fail": lambda c, b: c.fail(**b),
    "faults/delay": lambda c, b: c.delay(**b),
    "faults/authorize": lambda c, b: c.fail_authorize(**b),
    "faults/token": lambda c, b: c.set_token_faults(**b),
    "lifetimes": lambda c, b: c.set_lifetimes(**b),
    "strict-rotation": lambda c, b: c.set_strict_rotation(**b),
    "revoke": lambda c, b: {"revoked": c.revoke_refresh_tokens(**b)},
    "keys/rotate": lambda c, b: {"kid": c.rotate_signing_key(**b)},
    "users": lambda c, b: c.add_user(_user(b)),
    "clients": lambda c, b: c.register_client(_client(b)),
    "clients/secrets": lambda c, b: c.set_client_secrets(**b),
    "tokens/access": lambda c, b: {"access_token": c.issue_access_token(**b)},
    "tokens/id": lambda c, b: {"id_token": c.issue_id_token(**b)},
    "requests/clear": lambda c, b: c.clear_log(**b),
    "groups/overage-limit": lambda c, b: c.set_groups_overage_limit(**b),
    "consent/require": lambda c, b: c.require_consent(**b),
    "consent/grant": lambda c, b: c.grant_consent(**b),
    "claims/refresh": lambda c, b: c.require_claims_for_refresh(**b),
}


def _loopback_only(request: web.Request) -> None:
    if not is_loopback_host(request.remote or ""):
        raise web.HTTPForbidden(text="the devidp control API is for loopback clients only")


async def operate(request: web.Request) -> web.Response:
    _loopback_only(request)
    operation = OPERATIONS.get(request.match_info["operation"])
    if operation is None:
        raise web.HTTPNotFound(text="unknown control operation")
    control = request.app[CONTROL]
    try:
        body: object = await request.json() if request.body_exists else {}
        if not isinstance(body, dict):
            raise TypeError("the body must be a JSON object")
        result = await asyncio.to_thread(operation, control, body)
    except (TypeError, ValueError, KeyError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(result if isinstance(result, dict) else {"ok": True})


async def describe(request: web.Request) -> web.Response:
    """Where the emulator is, who is registered, and which faults and lifetimes are active."""
    _loopback_only(request)
    state = request.app[STATE]
    document = {
        "authority": state.urls.authority,
        "issuer": state.urls.issuer,
        "base_url": state.urls.base_url,
        "tenant_id": state.config.tenant_id,
        "signing_kid": state.keys.current.kid,
        "clients": [dataclasses.asdict(c) for c in state.clients()],
        "users": [dataclasses.asdict(u) for u in state.users()],
        **{k: _jsonable(v) for k, v in state.snapshot().items()},
    }
    return web.json_response(document)


def _jsonable(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


async def requests(request: web.Request) -> web.Response:
    _loopback_only(request)
    control = request.app[CONTROL]
    endpoint, grant_type = request.query.get("endpoint"), request.query.get("grant_type")
    try:
        entries = control.requests(endpoint, grant_type=grant_type)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"requests": [e.to_json() for e in entries]})


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/state", describe)
    app.router.add_get(f"{PREFIX}/requests", requests)
    app.router.add_post(PREFIX + "/{operation:.+}", operate)
