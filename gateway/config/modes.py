"""What each GATEWAY_MODE needs and refuses.

proxy (the default): the gateway relays every request outside /.auth to GATEWAY_UPSTREAM, which
is therefore required. forward-auth: a proxy in front (nginx auth_request, Traefik ForwardAuth,
Envoy ext_authz) asks /.auth/verify about each request and relays it itself; the gateway has no
upstream, so GATEWAY_UPSTREAM is refused, and so is every setting that only governs requests the
gateway relays: set to anything but its default, it would silently do nothing, and an operator
who relies on it (an upstream secret header, a readiness path, a timeout) must hear so at start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    from gateway.config.settings import Settings

Mode = Literal["proxy", "forward-auth"]
FORWARD_AUTH: Final = "forward-auth"
# The words of a missing required setting (config/loading.py), as before modes existed.
UPSTREAM_REQUIRED: Final = (
    "GATEWAY_UPSTREAM is required: URL of the protected application, e.g. http://127.0.0.1:8080"
)
# Settings group -> the fields that act only on requests the gateway relays to its upstream.
RELAY_ONLY: Final[Mapping[str, tuple[str, ...]]] = {
    "proxy": (
        "connect_timeout_seconds",
        "read_timeout_seconds",
        "max_connections",
        "slot_wait_seconds",
        "max_connections_per_client",
        "client_min_bytes_per_second",
        "client_timeout_seconds",
        "upload_timeout_seconds",
        "download_timeout_seconds",
        "websocket_max_message_bytes",
        "websocket_heartbeat_seconds",
        "websocket_idle_timeout_seconds",
        "websocket_open_timeout_seconds",
        "websocket_max_per_user",
        "upstream_ready_path",
        "preserve_host",
        "upstream_headers",
        "upstream_header_files",
    ),
    # App Service's token-store headers are added only to relayed requests.
    "tokens": ("easy_auth_token_headers",),
    # What an API caller's request carries upstream: /.auth/verify passes on no caller's token.
    "api": ("upstream_token",),
}


def _changed(group: BaseModel, name: str) -> bool:
    field = type(group).model_fields[name]
    default = field.get_default(call_default_factory=True)
    return bool(getattr(group, name) != default)


def mode_problems(settings: Settings) -> list[str]:
    """The rules of GATEWAY_MODE, one line each naming the setting to change."""
    if settings.mode != FORWARD_AUTH:
        return [] if settings.upstream is not None else [UPSTREAM_REQUIRED]
    problems: list[str] = []
    if settings.upstream is not None:
        problems.append(
            "GATEWAY_UPSTREAM must not be set when GATEWAY_MODE is forward-auth: the proxy in "
            "front relays requests, the gateway only answers /.auth/verify; unset it, or set "
            "GATEWAY_MODE=proxy"
        )
    for group_name, fields in RELAY_ONLY.items():
        group = getattr(settings, group_name)
        for name in fields:
            if _changed(group, name):
                variable = f"GATEWAY_{group_name.upper()}__{name.upper()}"
                problems.append(
                    f"{variable} acts only on requests the gateway relays, and with "
                    f"GATEWAY_MODE=forward-auth it relays none: unset {variable}, or set "
                    "GATEWAY_MODE=proxy"
                )
    if settings.assertion.enabled and not settings.assertion.audience:
        problems.append(
            "GATEWAY_ASSERTION__AUDIENCE is required when GATEWAY_ASSERTION__ENABLED is true and "
            "GATEWAY_MODE is forward-auth: there is no GATEWAY_UPSTREAM to take it from; name "
            "the applications behind the proxy, e.g. https://app.contoso.com"
        )
    return problems
