"""The shipped Envoy and Traefik forward-auth configurations remove every header the gateway's own
proxy mode removes (review finding; nginx's snippet is run with a real nginx in
test_forward_auth_nginx.py). Neither proxy runs here, so their files are read: each name of
gateway/auth/headers.py's FORWARDING_HEADERS and IDENTITY_HEADERS is removed, replaced from the
gateway's answer, or set by the proxy itself as the edge."""

from __future__ import annotations

import re
from typing import Any, Final

import pytest
import yaml
from support.paths import REPO

from gateway.auth.headers import FORWARDING_HEADERS, IDENTITY_HEADERS

pytestmark = pytest.mark.threat("FA-03", "HD-07", "HD-09")

NAMES: Final = sorted((FORWARDING_HEADERS | IDENTITY_HEADERS) - {"authorization"})


def walk(node: Any) -> list[Any]:
    found = [node]
    if isinstance(node, dict):
        for value in node.values():
            found.extend(walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(walk(value))
    return found


def test_envoy_removes_what_the_gateway_removes() -> None:
    config = yaml.safe_load((REPO / "deploy" / "envoy" / "ext-authz.yaml").read_text())
    removed = {
        node["remove"].lower()
        for node in walk(config)
        if isinstance(node, dict) and isinstance(node.get("remove"), str)
    }
    own = {"x-forwarded-for", "x-forwarded-proto"}  # Envoy sets them (use_remote_address)
    assert [name for name in NAMES if name not in removed | own] == []


def test_traefik_strips_what_the_gateway_removes() -> None:
    config = yaml.safe_load((REPO / "deploy" / "traefik" / "forward-auth.yaml").read_text())
    forward_auth = config["http"]["middlewares"]["msal-gateway"]["forwardAuth"]
    copied = {name.lower() for name in forward_auth["authResponseHeaders"]}
    stripped = re.compile(forward_auth["authResponseHeadersRegex"])
    own = {"x-forwarded-for", "x-forwarded-host", "x-forwarded-port", "x-forwarded-proto"}
    missing = [n for n in NAMES if n not in copied | own and not stripped.match(n)]
    assert missing == []
    assert not stripped.match("x-forwarded-for") and not stripped.match("content-type")
