"""The outermost layer: request ids, and rendering every GatewayError in one place.

Browsers get a small HTML page; API clients get JSON `{"error", "message", "request_id"}`. A
sign-in requirement becomes a redirect to sign-in for a browser navigation and a 401 with
WWW-Authenticate for anything else (no pending sign-in is created for those). Unexpected errors
become a 500 whose details go to the log only. Nothing from the request is reflected unescaped.
"""

from __future__ import annotations

import base64
import logging
import os
import re
from typing import Final
from urllib.parse import quote, urlencode

from aiohttp import HttpVersion10, HttpVersion11, web
from aiohttp.typedefs import Handler

from gateway.auth.cookies import clear_cookie
from gateway.auth.peers import client_address
from gateway.errors import (
    GatewayError,
    SignInRequired,
    StepUpRequired,
    StoreUnavailable,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.keys import CLIENT_ADDRESS, METRICS, REQUEST_ID, SETTINGS, TIMING, TRUSTED_PROXIES
from gateway.telemetry.logs import client_var, request_id_var, user_var
from gateway.telemetry.metrics import Timing
from gateway.web.pages import PAGE_CSP, content_security_policy, error_actions, error_title, page

log = logging.getLogger(__name__)

_SAFE_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
SIGN_IN_PATH: Final = "/.auth/login/aad"
CLIENT_CLOSED_REQUEST: Final = 499
# The gateway's own pages and answers: never cached, framed, sniffed or leaking a code in Referer.
AUTH_RESPONSE_HEADERS: Final = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy", PAGE_CSP),
)


def request_id(request: web.Request) -> str:
    supplied = request.headers.get("X-Request-Id", "")
    return supplied if _SAFE_REQUEST_ID.match(supplied) else os.urandom(16).hex()


def wants_html(request: web.Request) -> bool:
    """A browser navigation (as opposed to XHR/fetch/API calls)."""
    mode = request.headers.get("Sec-Fetch-Mode")
    if mode is not None:
        return mode == "navigate"
    if request.headers.get("X-Requested-With", "").lower() == "xmlhttprequest":
        return False
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("Accept", "")


def sign_in_location(request: web.Request, error: SignInRequired) -> str:
    settings = request.app[SETTINGS]
    # Path and query only (never the absolute URL of the request line): THREATS.md RD-17.
    target = request.rel_url.raw_path_qs
    sign_in = settings.auth_path(SIGN_IN_PATH)
    parameters: dict[str, str] = {}
    host = settings.sibling_host(request.headers.get("Host", ""))
    if host is not None:
        # A sibling host under the shared cookie domain: sign-in happens on the public host
        # (where the redirect URI is), which then sends the browser back here.
        sign_in = settings.public_base + SIGN_IN_PATH
        parameters["post_login_redirect_uri"] = f"https://{host}{target}"
    elif target != settings.path_prefix + "/":
        parameters["post_login_redirect_uri"] = target
    if isinstance(error, StepUpRequired):
        if error.scopes:
            parameters["scope"] = " ".join(error.scopes)
        if error.claims:
            parameters["claims"] = error.claims
    if not parameters:
        return sign_in
    return f"{sign_in}?{urlencode(parameters, quote_via=quote, safe='')}"


def challenge(base: str, error: SignInRequired) -> str:
    """WWW-Authenticate for a client that must send the user through sign-in."""
    value = f'Bearer realm="{base}", authorization_uri="{base}{SIGN_IN_PATH}"'
    if error.code == "invalid_token":  # an API caller's token was refused (RFC 6750 3.1)
        value += ', error="invalid_token"'
    if isinstance(error, StepUpRequired):
        if error.claims:
            claims = base64.b64encode(error.claims.encode()).decode()
            value += f', error="insufficient_claims", claims="{claims}"'
        else:
            scopes = " ".join(error.scopes)
            value += f', error="interaction_required", scope="{scopes}"'
    return value


def render(request: web.Request, error: GatewayError, rid: str) -> web.Response:
    response = _rendered(request, error, rid)
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def _rendered(request: web.Request, error: GatewayError, rid: str) -> web.Response:
    message = str(error) if error.expose and str(error) else "The request could not be completed."
    if isinstance(error, SignInRequired):
        # A refused bearer token is an API caller's problem: 401, never a sign-in redirect.
        if (
            wants_html(request)
            and error.code != "invalid_token"
            and not request.path.startswith(request.app[SETTINGS].auth_path("/.auth/"))
        ):
            return web.Response(
                status=302,
                headers={
                    "Location": sign_in_location(request, error),
                    "Cache-Control": "no-store",
                },
            )
        response = web.json_response(
            {"error": error.code, "message": message, "request_id": rid}, status=401
        )
        response.headers["WWW-Authenticate"] = challenge(request.app[SETTINGS].public_base, error)
        return response
    if wants_html(request):
        settings = request.app[SETTINGS]
        branding = settings.pages
        body = page(
            error_title(error.code, error.title),
            message,
            branding=branding,
            request_id=rid,
            status=error.status,
            actions=error_actions(
                error.status,
                error.code,
                during_sign_in=request.path.startswith(settings.auth_path(SIGN_IN_PATH)),
                prefix=settings.path_prefix,
            ),
        )
        response = web.Response(status=error.status, text=body, content_type="text/html")
        # Set here, not only for /.auth answers: an error page on a proxied path is the
        # gateway's page too, and its policy must allow the operator's logo.
        response.headers.update(AUTH_RESPONSE_HEADERS)
        response.headers["Content-Security-Policy"] = content_security_policy(branding)
        return response
    return web.json_response(
        {"error": error.code, "message": message, "request_id": rid}, status=error.status
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    timing = request[TIMING] = Timing()
    if request.version not in (HttpVersion10, HttpVersion11):
        # HTTP/0.9 has no headers, so a proxy in front and the gateway could disagree on where a
        # request ends: only HTTP/1.0 and 1.1 are spoken here.
        return web.Response(status=400, text="400 Bad Request\n", headers={"Connection": "close"})
    rid = request_id(request)
    request[REQUEST_ID] = rid
    request_id_var.set(rid)  # every log line of this request names it
    client = request[CLIENT_ADDRESS] = client_address(request, request.app[TRUSTED_PROXIES])
    client_var.set(client)
    user_var.set(None)
    metrics = request.app[METRICS]
    try:
        response = await handler(request)
    except GatewayError as error:
        if isinstance(error, StoreUnavailable):
            metrics.store_errors.inc()
        elif isinstance(error, UpstreamUnavailable | UpstreamTimeout):
            metrics.upstream_errors.labels(error.code).inc()
        if not isinstance(error, SignInRequired):
            level = error.log_level or (logging.ERROR if error.status >= 500 else logging.WARNING)
            log.log(
                level,
                "%s %s -> %s %s: %s",
                request.method,
                request.path,
                error.status,
                error.code,
                error,
                extra={"request_id": rid},
            )
        response = render(request, error, rid)
        settings = request.app[SETTINGS]
        for cookie in (settings.session_cookie, settings.signin_cookie):
            if cookie.name in error.clear_cookies:
                clear_cookie(response, cookie)
    except web.HTTPException as exc:
        exc.headers.setdefault("X-Request-Id", rid)
        raise
    except ConnectionResetError:
        if request.transport is not None and not request.transport.is_closing():
            raise
        # The client left before its answer was written: nothing to render, and not an error
        # of the gateway's. Counted as 499 (nginx's "client closed request").
        log.debug("client went away: %s %s", request.method, request.path)
        response = web.Response(status=CLIENT_CLOSED_REQUEST)
    except Exception:
        log.exception(
            "unexpected error on %s %s", request.method, request.path, extra={"request_id": rid}
        )
        response = render(request, GatewayError("unexpected error"), rid)
    route = "auth" if request.path.startswith(request.app[SETTINGS].auth_paths) else "proxy"
    status = response.status
    if not response.prepared and (request.transport is None or request.transport.is_closing()):
        status = CLIENT_CLOSED_REQUEST  # the answer will never be written
    metrics.observe(route, status, timing)
    if not response.prepared:
        # Prepared answers (streamed, WebSockets) were stamped by proxy/forward.py before they
        # started.
        response.headers.setdefault("X-Request-Id", rid)
        if route == "auth":
            for name, value in AUTH_RESPONSE_HEADERS:
                response.headers.setdefault(name, value)
    return response
