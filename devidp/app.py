"""The emulator's aiohttp application: the route table and the log-and-fault middleware.

The middleware records every protocol request (not the `/_devidp` control calls) and applies
the endpoint's injected delay and forced response before the real handler runs.
"""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from . import account, authorize, control_routes, discovery, graph, token_endpoint
from .control_api import DevIdpControl
from .faults import Endpoint
from .requestlog import LoggedRequest, frozen_headers
from .state import STATE, DevIdpState

ENDPOINT_OF: Final[dict[Handler, Endpoint]] = {
    discovery.openid_configuration: "discovery",
    discovery.jwks: "jwks",
    authorize.authorize: "authorize",
    authorize.login: "authorize",
    token_endpoint.token: "token",
    account.logout: "logout",
    account.userinfo: "userinfo",
    graph.transitive_member_of: "graph",
}


async def _form(request: web.Request) -> dict[str, str]:
    if request.method != "POST" or request.content_type != "application/x-www-form-urlencoded":
        return {}
    return {k: v for k, v in (await request.post()).items() if isinstance(v, str)}


@web.middleware
async def log_and_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(control_routes.PREFIX):
        return await handler(request)
    state = request.app[STATE]
    endpoint = ENDPOINT_OF.get(request.match_info.handler)
    entry = LoggedRequest(
        time=state.clock(),
        method=request.method,
        path=request.path,
        endpoint=endpoint,
        query=dict(request.query),
        form=await _form(request),  # aiohttp caches the parsed body; the handler reads it again
        headers=frozen_headers(request.headers),
    )
    number = state.log.append(entry)
    status = 500
    try:
        if endpoint is not None:
            if (delay := state.take_delay(endpoint)) is not None:
                await asyncio.sleep(delay.seconds)
            if (forced := state.take_forced(endpoint)) is not None:
                body, content_type = forced.payload()
                status = forced.status
                response = web.Response(status=forced.status, body=body, headers=forced.headers)
                response.content_type = content_type.split(";")[0]
                return response
        result = await handler(request)
        status = result.status
        return result
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        state.log.finish(number, status)


async def index(request: web.Request) -> web.Response:
    urls = request.app[STATE].urls
    return web.Response(
        text=(
            "msal-gateway development identity provider (Entra ID v2 emulator)\n"
            f"authority: {urls.authority}\n"
            f"discovery: {urls.authority}/v2.0/.well-known/openid-configuration\n"
        )
    )


def build_app(state: DevIdpState) -> web.Application:
    app = web.Application(middlewares=[log_and_faults])
    app[STATE] = state
    app[control_routes.CONTROL] = DevIdpControl(state)
    tenant = "/{tenant}"
    app.router.add_get("/", index)
    app.router.add_get(
        f"{tenant}/v2.0/.well-known/openid-configuration", discovery.openid_configuration
    )
    app.router.add_get(f"{tenant}/discovery/v2.0/keys", discovery.jwks)
    app.router.add_get(f"{tenant}/oauth2/v2.0/authorize", authorize.authorize)
    app.router.add_post(f"{tenant}/oauth2/v2.0/authorize", authorize.authorize)
    app.router.add_post(f"{tenant}/login", authorize.login)
    app.router.add_post(f"{tenant}/oauth2/v2.0/token", token_endpoint.token)
    app.router.add_get(f"{tenant}/oauth2/v2.0/logout", account.logout)
    app.router.add_post(f"{tenant}/oauth2/v2.0/logout", account.logout)
    app.router.add_get("/oidc/userinfo", account.userinfo)
    app.router.add_post("/oidc/userinfo", account.userinfo)
    member_of = f"{graph.PREFIX}/me/transitiveMemberOf"
    app.router.add_get(member_of, graph.transitive_member_of)
    app.router.add_get(f"{member_of}/microsoft.graph.group", graph.transitive_member_of)
    control_routes.add_routes(app)
    return app


def build_browser_app(state: DevIdpState) -> web.Application:
    """Only the pages a browser visits (sign-in, its picker, sign-out), for a plain-http listener
    on loopback: no token endpoint, keys or control API there (those stay on TLS)."""
    app = web.Application(middlewares=[log_and_faults])
    app[STATE] = state
    tenant = "/{tenant}"
    app.router.add_get("/", index)
    app.router.add_get(f"{tenant}/oauth2/v2.0/authorize", authorize.authorize)
    app.router.add_post(f"{tenant}/oauth2/v2.0/authorize", authorize.authorize)
    app.router.add_post(f"{tenant}/login", authorize.login)
    app.router.add_get(f"{tenant}/oauth2/v2.0/logout", account.logout)
    app.router.add_post(f"{tenant}/oauth2/v2.0/logout", account.logout)
    return app
