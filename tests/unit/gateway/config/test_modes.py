"""GATEWAY_MODE: proxy mode needs GATEWAY_UPSTREAM (the same words as before modes existed);
forward-auth mode refuses it and every setting that only governs relayed requests, one line each
naming the setting, and all of them reported together with any other mistake."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import pytest

from gateway.config.loading import diagnose
from gateway.config.modes import RELAY_ONLY, UPSTREAM_REQUIRED
from gateway.config.settings import Settings

COMMON: Final = {
    "GATEWAY_PUBLIC_URL": "https://app.example.com",
    "GATEWAY_CLIENT_ID": "00000000-0000-0000-0000-0000000000c1",
    "GATEWAY_TENANT_ID": "contoso.onmicrosoft.com",
    "GATEWAY_CLIENT_SECRET": "client-secret-value",
}
PROXY: Final = {**COMMON, "GATEWAY_UPSTREAM": "http://127.0.0.1:8080"}
FORWARD_AUTH: Final = {**COMMON, "GATEWAY_MODE": "forward-auth"}


def problems(environ: Mapping[str, str]) -> list[str]:
    return [str(problem) for problem in diagnose(environ).problems]


def loaded(environ: Mapping[str, str]) -> Settings:
    return diagnose(environ).result()


def test_proxy_is_the_default_mode_and_relays_to_its_upstream() -> None:
    settings = loaded(PROXY)
    assert settings.mode == "proxy"
    assert not settings.forward_auth_only
    assert str(settings.upstream) == "http://127.0.0.1:8080/"


@pytest.mark.parametrize("upstream", [None, "", "  "], ids=["unset", "empty", "blank"])
def test_proxy_mode_still_requires_the_upstream_in_the_same_words(upstream: str | None) -> None:
    environ = dict(COMMON)
    if upstream is not None:
        environ["GATEWAY_UPSTREAM"] = upstream
    assert problems(environ) == [UPSTREAM_REQUIRED]
    assert problems({**environ, "GATEWAY_MODE": "proxy"}) == [UPSTREAM_REQUIRED]


def test_a_missing_upstream_is_reported_with_the_other_missing_settings() -> None:
    """As before: every required setting in one report, not one per run."""
    found = problems({"GATEWAY_TENANT_ID": "contoso.onmicrosoft.com"})
    assert sorted(line.partition(":")[0] for line in found) == [
        "GATEWAY_CLIENT_ID is required",
        "GATEWAY_PUBLIC_URL is required",
        "GATEWAY_UPSTREAM is required",
        "set exactly one client credential",
    ]


def test_forward_auth_mode_needs_no_upstream() -> None:
    settings = loaded(FORWARD_AUTH)
    assert settings.forward_auth_only
    assert settings.upstream is None
    # An empty value (a template that renders every variable) is no upstream either.
    assert loaded({**FORWARD_AUTH, "GATEWAY_UPSTREAM": ""}).upstream is None


def test_forward_auth_mode_refuses_an_upstream_naming_both_settings() -> None:
    [line] = problems({**FORWARD_AUTH, "GATEWAY_UPSTREAM": "http://127.0.0.1:8080"})
    assert line.startswith("GATEWAY_UPSTREAM must not be set when GATEWAY_MODE is forward-auth")
    assert "\n" not in line


def test_an_unknown_mode_lists_the_modes() -> None:
    found = problems({**PROXY, "GATEWAY_MODE": "forward_auth"})
    assert found == ["GATEWAY_MODE: must be one of 'proxy' or 'forward-auth' (got 'forward_auth')"]


RELAY_ONLY_VALUES: Final = {
    "GATEWAY_PROXY__CONNECT_TIMEOUT_SECONDS": "2",
    "GATEWAY_PROXY__READ_TIMEOUT_SECONDS": "30",
    "GATEWAY_PROXY__MAX_CONNECTIONS": "10",
    "GATEWAY_PROXY__SLOT_WAIT_SECONDS": "1",
    "GATEWAY_PROXY__MAX_CONNECTIONS_PER_CLIENT": "3",
    "GATEWAY_PROXY__CLIENT_MIN_BYTES_PER_SECOND": "0",
    "GATEWAY_PROXY__CLIENT_TIMEOUT_SECONDS": "10",
    "GATEWAY_PROXY__UPLOAD_TIMEOUT_SECONDS": "600",
    "GATEWAY_PROXY__DOWNLOAD_TIMEOUT_SECONDS": "600",
    "GATEWAY_PROXY__WEBSOCKET_MAX_MESSAGE_BYTES": "2048",
    "GATEWAY_PROXY__WEBSOCKET_HEARTBEAT_SECONDS": "0",
    "GATEWAY_PROXY__WEBSOCKET_IDLE_TIMEOUT_SECONDS": "60",
    "GATEWAY_PROXY__WEBSOCKET_OPEN_TIMEOUT_SECONDS": "3",
    "GATEWAY_PROXY__WEBSOCKET_MAX_PER_USER": "2",
    "GATEWAY_PROXY__UPSTREAM_READY_PATH": "/healthz",
    "GATEWAY_PROXY__PRESERVE_HOST": "false",
    "GATEWAY_PROXY__UPSTREAM_HEADERS": '{"X-Proxy-Secret": "s3cret"}',
    "GATEWAY_PROXY__UPSTREAM_HEADER_FILES": '{"X-Proxy-Secret": "{file}"}',
    "GATEWAY_TOKENS__EASY_AUTH_TOKEN_HEADERS": "true",
    "GATEWAY_API__AUDIENCES": "api://gateway",  # not relay-only: what upstream_token needs
    "GATEWAY_API__UPSTREAM_TOKEN": "pass",
}


def test_the_relay_only_list_is_what_this_test_sets() -> None:
    """A setting added to RELAY_ONLY is tested here too."""
    listed = {f"GATEWAY_{g.upper()}__{f.upper()}" for g, fs in RELAY_ONLY.items() for f in fs}
    assert listed == set(RELAY_ONLY_VALUES) - {"GATEWAY_API__AUDIENCES"}


@pytest.mark.parametrize("variable", sorted(set(RELAY_ONLY_VALUES) - {"GATEWAY_API__AUDIENCES"}))
def test_forward_auth_mode_refuses_a_setting_that_only_acts_on_relayed_requests(
    variable: str, tmp_path: object
) -> None:
    secret = f"{tmp_path}/secret"
    with open(secret, "w") as file:
        file.write("s3cret\n")
    value = RELAY_ONLY_VALUES[variable].replace("{file}", secret)
    environ = {**FORWARD_AUTH, variable: value, "GATEWAY_API__AUDIENCES": "api://gateway"}
    [line] = problems(environ)
    assert line.startswith(f"{variable} acts only on requests the gateway relays"), line
    assert line.endswith(f"unset {variable}, or set GATEWAY_MODE=proxy")
    assert "s3cret" not in line
    # The same value in proxy mode is fine.
    assert problems({**PROXY, variable: value, "GATEWAY_API__AUDIENCES": "api://gateway"}) == []


def test_a_relay_only_setting_at_its_default_is_not_refused() -> None:
    """Tools that write out every setting (a rendered template, a dump of the defaults) do not
    trip the rule: only a value that would change something is refused."""
    environ = {
        **FORWARD_AUTH,
        "GATEWAY_PROXY__READ_TIMEOUT_SECONDS": "60",
        "GATEWAY_PROXY__PRESERVE_HOST": "true",
        "GATEWAY_PROXY__UPSTREAM_HEADERS": "{}",
        "GATEWAY_API__UPSTREAM_TOKEN": "none",
    }
    assert problems(environ) == []


def test_every_forward_auth_mistake_is_reported_at_once() -> None:
    environ = {
        **FORWARD_AUTH,
        "GATEWAY_UPSTREAM": "http://127.0.0.1:8080",
        "GATEWAY_PROXY__UPSTREAM_READY_PATH": "/healthz",
        "GATEWAY_PROXY__WEBSOCKET_MAX_PER_USER": "2",
        "GATEWAY_SESSION__IDLE_TTL_SECONDS": "soon",  # a field error beside the rules
    }
    named = [line.split()[0] for line in problems(environ)]
    assert sorted(named) == [
        "GATEWAY_PROXY__UPSTREAM_READY_PATH",
        "GATEWAY_PROXY__WEBSOCKET_MAX_PER_USER",
        "GATEWAY_SESSION__IDLE_TTL_SECONDS:",
        "GATEWAY_UPSTREAM",
    ]


def test_settings_that_act_in_both_modes_are_accepted_in_forward_auth_mode() -> None:
    settings = loaded(
        {
            **FORWARD_AUTH,
            "GATEWAY_PROXY__TRUSTED_PROXIES": "10.0.0.0/8",
            "GATEWAY_PROXY__PUBLIC_PATHS": "/static/",
            "GATEWAY_PROXY__CLAIM_HEADERS": '{"X-User-Name": "name"}',
            "GATEWAY_PROXY__CORS_PREFLIGHT": "pass",
            "GATEWAY_TOKENS__EXPOSE_IN_VERIFY": "true",
            "GATEWAY_SCOPES": "api://orders/read",
            "GATEWAY_POLICY__RULES": '[{"path": "/admin/", "allow": "deny"}]',
        }
    )
    assert settings.proxy.trusted_proxies == ("10.0.0.0/8",)


def test_assertions_in_forward_auth_mode_need_an_audience() -> None:
    """Proxy mode defaults the audience to the upstream's origin; forward-auth has none."""
    enabled = {**FORWARD_AUTH, "GATEWAY_ASSERTION__ENABLED": "true"}
    [line] = problems(enabled)
    assert line.startswith(
        "GATEWAY_ASSERTION__AUDIENCE is required when GATEWAY_ASSERTION__ENABLED is true and "
        "GATEWAY_MODE is forward-auth"
    )
    audience = {**enabled, "GATEWAY_ASSERTION__AUDIENCE": "https://apps.example.com"}
    assert loaded(audience).assertion.audience == "https://apps.example.com"
    assert problems({**PROXY, "GATEWAY_ASSERTION__ENABLED": "true"}) == []
