"""Headers the operator configures for the application (issue 18 items 2 and 3): fixed ones (an
application may require a shared secret from its proxy: GATEWAY_PROXY__UPSTREAM_HEADERS and, for
secrets, _HEADER_FILES) and claim headers (GATEWAY_PROXY__CLAIM_HEADERS). A client's copy in any
spelling never gets through, and names the gateway states itself cannot be configured."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from support.browser import API
from support.fixtures import Launch, signed_in
from support.upstream import upstream_headers

from gateway.config.advanced import ProxySettings


async def test_fixed_headers_reach_the_app_and_clients_cannot_forge_them(
    launch: Launch, tmp_path: Path
) -> None:
    secret = tmp_path / "proxy-secret"
    secret.write_text("s3cr3t-from-a-file\n")
    running = await launch(
        proxy={
            "upstream_headers": {"X-Proxy-Name": "msal-gateway"},
            "upstream_header_files": {"X-Proxy-Secret": str(secret)},
        }
    )
    await signed_in(running)
    forged = {
        **API,
        "X-Proxy-Secret": "forged",
        "x_proxy_secret": "forged",
        "X.Proxy.Secret": "forged",
        "X-Proxy-Name": "forged",
    }
    seen = upstream_headers(await (await running.browser.get("/x", headers=forged)).json())
    assert seen["x-proxy-secret"] == ["s3cr3t-from-a-file"]
    assert seen["x-proxy-name"] == ["msal-gateway"]
    assert "x_proxy_secret" not in seen and "x.proxy.secret" not in seen


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "x"},
        {"X-Forwarded-User": "admin"},
        {"X_Forwarded_User": "admin"},
        {"X-MS-CLIENT-PRINCIPAL-NAME": "admin"},
        {"Authorization": "Bearer x"},
        {"Bad Name": "x"},
        {"X-Ok": "line\r\nX-Injected: 1"},
    ],
)
def test_names_the_gateway_states_and_bad_values_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        ProxySettings.model_validate({"upstream_headers": headers})


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not a readable file"):
        ProxySettings.model_validate({"upstream_header_files": {"X-S": str(tmp_path / "none")}})


async def test_claim_headers_carry_the_users_claims_and_cannot_be_forged(launch: Launch) -> None:
    """Issue 18 item 2: an application that shows a name rather than the object id gets one."""
    running = await launch(
        proxy={
            "claim_headers": {
                "X-User-Name": "name",
                "X-User-Upn": "preferred_username",
                "X-User-Nickname": "nickname",  # absent from the token: no header at all
            }
        }
    )
    await signed_in(running, user="jose")
    forged = {**API, "X-User-Name": "admin", "x_user_upn": "admin@contoso.example"}
    seen = upstream_headers(await (await running.browser.get("/x", headers=forged)).json())
    assert seen["x-user-name"] == ["José Núñez"]
    assert seen["x-user-upn"] == ["jose@contoso.example"]
    assert "x-user-nickname" not in seen and "x_user_upn" not in seen
    verified = await running.browser.get("/.auth/verify", headers=API)
    assert verified.headers["X-User-Name"] == "José Núñez"  # forward-auth vouches the same
