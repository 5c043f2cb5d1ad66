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


def test_the_nginx_shape_in_the_docs_is_the_tested_configuration() -> None:
    """docs/forward-auth.md shows the shape of the nginx configuration; every line of it is a
    line of the shipped files that tests/security/test_forward_auth_nginx.py runs, so the page
    cannot drift into something no test has run."""
    shipped = {
        " ".join(line.split())
        for path in ("forward-auth.conf", "snippets/msal-gateway-auth.conf")
        for line in (REPO / "deploy" / "nginx" / path).read_text().splitlines()
    }
    page = (REPO / "docs" / "forward-auth.md").read_text()
    blocks = re.findall(r"^```nginx\n(.*?)^```", page, flags=re.MULTILINE | re.DOTALL)
    shown = [" ".join(line.split()) for block in blocks for line in block.splitlines()]
    assert len([line for line in shown if line]) >= 30
    assert [line for line in shown if line and line not in shipped] == []
