"""Sign-out hands off to the application's own session (issue 18 item 1): an application that
keeps a session of its own (pgAdmin, Grafana) would still show the previous user after the
gateway's sign-out. Clear-Site-Data and expired application cookies, as configured, on the
sign-out answer and on the signed-out page; nothing of the kind by default."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from support.fixtures import Launch, signed_in

from gateway.config.advanced import SessionSettings


def expired(set_cookies: list[str], name: str) -> bool:
    return any(
        value.startswith(f"{name}=") and "Max-Age=0" in value and "Path=/" in value
        for value in set_cookies
    )


async def test_sign_out_clears_the_applications_session(launch: Launch) -> None:
    running = await launch(
        session={
            "sign_out_clear_site_data": "cookies storage",
            "sign_out_app_cookies": "pga_session grafana_session",
        }
    )
    await signed_in(running)
    out = await running.browser.get("/.auth/logout")
    assert out.status == 302
    assert out.headers["Clear-Site-Data"] == '"cookies", "storage"'
    cookies = out.headers.getall("Set-Cookie")
    assert expired(cookies, "pga_session") and expired(cookies, "grafana_session")
    page = await running.browser.get("/.auth/logout/complete")
    assert page.status == 200
    assert page.headers["Clear-Site-Data"] == '"cookies", "storage"'
    assert expired(page.headers.getall("Set-Cookie"), "pga_session")


async def test_nothing_of_the_kind_by_default(launch: Launch) -> None:
    running = await launch()
    await signed_in(running)
    out = await running.browser.get("/.auth/logout")
    assert "Clear-Site-Data" not in out.headers
    assert [c for c in out.headers.getall("Set-Cookie") if "msal-gateway" not in c] == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sign_out_clear_site_data", "cookies everything"),
        ("sign_out_app_cookies", "bad;name"),
        ("sign_out_app_cookies", 'quote"d'),
    ],
)
def test_bad_values_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        SessionSettings.model_validate({field: value})
