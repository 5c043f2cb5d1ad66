"""Issue 14 item 5: a signed-in request never reaches the application without its identity. A
principal that does not fit GATEWAY_GROUPS__MAX_HEADER_BYTES even without its groups refuses the
request (500 identity_too_large, an error line naming the setting), through the proxy and through
forward-auth; a list claim whose value holds a comma is never split into two values."""

from __future__ import annotations

import base64
import json
from typing import Any, Final

import pytest
from support.browser import API
from support.fixtures import Launch, signed_in

from gateway.auth.headers import identity_headers
from gateway.errors import IdentityTooLarge

pytestmark = pytest.mark.threat("LK-05", "F-21", "CK-03")

CLAIMS: Final = {"oid": "0b7e2c1d-4a5f-4e3b-8c9d-1e2f3a4b5c6d", "name": "Alice"}


def headers_for(claims: dict[str, Any], max_bytes: int = 8000) -> dict[str, str]:
    return dict(
        identity_headers(claims, email_trusted=True, access_token=None, max_bytes=max_bytes)
    )


@pytest.mark.parametrize(
    ("claims", "max_bytes"),
    [
        ({**CLAIMS, "name": "A" * 9000}, 8000),  # one huge claim, no groups to drop
        ({**CLAIMS, "roles": [f"role-{i}" for i in range(2000)]}, 8000),
        ({**CLAIMS, "name": "A" * 300, "groups": ["g"] * 10}, 200),  # groups dropped: still over
        (CLAIMS, 20),
    ],
    ids=["huge-name", "many-roles", "over-without-groups", "tiny-limit"],
)
def test_a_principal_that_cannot_fit_refuses_the_request(
    claims: dict[str, Any], max_bytes: int
) -> None:
    with pytest.raises(IdentityTooLarge, match="GATEWAY_GROUPS__MAX_HEADER_BYTES"):
        headers_for(claims, max_bytes)


def test_groups_are_dropped_first_and_the_rest_still_travels() -> None:
    claims = {**CLAIMS, "groups": [f"{i:08d}-0000-0000-0000-000000000000" for i in range(400)]}
    sent = headers_for(claims)
    principal = json.loads(base64.b64decode(sent["X-MS-CLIENT-PRINCIPAL"]))
    assert "groups" not in {c["typ"] for c in principal["claims"]}
    assert sent["X-Forwarded-User"] == CLAIMS["oid"]


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        (["a,b", "c"], None),  # would read as three groups
        (["a,b"], None),  # one value still reads as two groups (review finding)
        ("a,b", None),  # a plain string claim too
        (["a", "b"], "a,b"),
        (["CN=Admins,OU=Groups", "users"], None),  # an LDAP-style distinguished name
    ],
)
def test_a_comma_inside_a_group_never_makes_two_groups(
    groups: list[str] | str, expected: str | None
) -> None:
    sent = headers_for({**CLAIMS, "groups": groups})
    assert sent.get("X-Forwarded-Groups") == expected
    principal = json.loads(base64.b64decode(sent["X-MS-CLIENT-PRINCIPAL"]))
    issued = [groups] if isinstance(groups, str) else groups
    assert [c["val"] for c in principal["claims"] if c["typ"] == "groups"] == issued


async def test_the_proxy_and_forward_auth_refuse_instead_of_forwarding(
    launch: Launch, caplog: pytest.LogCaptureFixture
) -> None:
    running = await launch(groups={"max_header_bytes": 64})
    await signed_in(running, user="alice")
    proxied = await running.browser.get("/x", headers=API)
    body = await proxied.json()
    assert proxied.status == 500
    assert body["error"] == "identity_too_large"
    assert "headers" not in body  # the upstream echo never answered
    verified = await running.browser.get("/.auth/verify", headers=API)
    assert verified.status == 500
    assert "x-ms-client-principal" not in {name.lower() for name in verified.headers}
    assert "GATEWAY_GROUPS__MAX_HEADER_BYTES=64: request refused" in caplog.text
