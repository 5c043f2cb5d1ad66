"""The gateway's own pages, rendered by gateway.web.pages: escaping, branding validation,
contrast, the Content-Security-Policy, and the next action each kind of error offers. The same
pages served by a running gateway are in tests/e2e/test_pages.py."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from itertools import product
from typing import Any, Final

import pytest
from pydantic import ValidationError
from support.gateway import settings_for

from gateway.config.advanced import PagesSettings
from gateway.config.loading import describe_errors
from gateway.web.pages import (
    PAGE_CSP,
    Action,
    content_security_policy,
    error_actions,
    luminance,
    page,
    signed_out_page,
    text_color_on,
)

HOSTILE: Final = "<script>alert(1)</script>\"'&<img src=x onerror=alert(2)>"
PNG_DATA_URL: Final = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4"
    "DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)


class _Outline(HTMLParser):
    """Tags, attributes and text of a page, enough to check its structure."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def outline(html: str) -> _Outline:
    parser = _Outline()
    parser.feed(html)
    return parser


def contrast(a: str, b: str) -> float:
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_every_value_is_escaped() -> None:
    html = page(
        HOSTILE,
        HOSTILE,
        branding=PagesSettings(title=HOSTILE),
        request_id=HOSTILE,
        actions=[Action(HOSTILE, 'javascript:"x"')],
    )
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;" in html and "&quot;" in html
    parsed = outline(html)
    assert [tag for tag, _ in parsed.tags if tag in ("script", "img")] == []
    [link] = [attrs for tag, attrs in parsed.tags if tag == "a"]
    assert link["href"] == 'javascript:"x"'  # an attribute value, never markup


def test_the_default_page_is_accessible_and_loads_nothing() -> None:
    html = page(
        "Access denied",
        "You may not open this page.",
        request_id="req-12345678",
        status=403,
        actions=error_actions(403, "forbidden"),
    )
    parsed = outline(html)
    tags = [tag for tag, _ in parsed.tags]
    assert dict(parsed.tags)["html"]["lang"] == "en"
    assert tags.count("main") == 1 and tags.count("h1") == 1 and tags.count("header") == 1
    viewport = [a for t, a in parsed.tags if t == "meta" and a.get("name") == "viewport"]
    assert viewport and "width=device-width" in viewport[0]["content"]
    assert re.search(r"(src=|url\(|@import|https?://)", html) is None
    assert "req-12345678" in html and "Error 403" in html  # the status in words, not colour
    assert ":focus-visible{outline:3px" in html
    assert "@media (max-width:30rem)" in html


def test_signed_out_page_offers_sign_in() -> None:
    html = signed_out_page(branding=PagesSettings(title="Contoso Expenses"), request_id="abcdefgh")
    assert "<title>You have signed out · Contoso Expenses</title>" in html
    assert 'href="/.auth/login/aad">Sign in again</a>' in html and "abcdefgh" in html


@pytest.mark.parametrize(
    ("status", "code", "during_sign_in", "first"),
    [
        (502, "identity_provider_error", True, "Try signing in again"),
        (400, "sign_in_expired", True, "Sign in again"),
        (400, "bad_request", True, "Sign in again"),
        (403, "forbidden", False, "Go to the start page"),
        (502, "upstream_unavailable", False, "Try again"),
        (504, "upstream_timeout", False, "Try again"),
        (503, "store_unavailable", False, "Try again"),
        (404, "not_found", False, "Go to the start page"),
    ],
)
def test_each_error_offers_the_right_next_action(
    status: int, code: str, during_sign_in: bool, first: str
) -> None:
    actions = error_actions(status, code, during_sign_in=during_sign_in)
    assert actions[0].label == first
    if status == 403:
        assert actions[1].href == "/.auth/logout"  # switching account is the way past a refusal


@pytest.mark.parametrize("color", ["red", "#fff", "#12345g", "#0f6cbd;x", "0f6cbd", "#0f6cbd "])
def test_a_colour_must_be_rrggbb(color: str) -> None:
    with pytest.raises(ValidationError):
        PagesSettings(color=color)


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.example/logo.png",
        "javascript:alert(1)",
        "//cdn.example/logo.png",
        "https://user@cdn.example/logo.png",
        'https://cdn.example/logo.png"onerror="x',
        "https://cdn.example/logo.png; script-src *",
        "https://cdn.example, https://evil.example/x.png",
        "https://cdn.example/a b.png",
        "data:text/html;base64,PHNjcmlwdD4=",
        "data:image/svg+xml,<svg onload=alert(1)>",
        "data:image/png;base64,not base64!",
    ],
)
def test_a_logo_must_be_https_or_a_data_image(url: str) -> None:
    with pytest.raises(ValidationError):
        PagesSettings(logo_url=url)


def test_branding_errors_name_the_variable(idp: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        settings_for(idp, "http://127.0.0.1:9", pages={"color": "blue", "logo_url": "http://x/y"})
    lines = "\n".join(describe_errors(caught.value))
    assert "GATEWAY_PAGES__COLOR" in lines and "GATEWAY_PAGES__LOGO_URL" in lines


def test_csp_is_extended_only_for_the_logo_origin() -> None:
    assert content_security_policy() == PAGE_CSP
    assert content_security_policy(PagesSettings(title="x", color="#123456")) == PAGE_CSP
    https = PagesSettings(logo_url="https://CDN.example:8443/brand/logo.svg?v=2")
    assert content_security_policy(https) == (
        "default-src 'none'; style-src 'unsafe-inline'; img-src https://cdn.example:8443; "
        "frame-ancestors 'none'"
    )
    html = page("t", "m", branding=https)
    assert '<img src="https://CDN.example:8443/brand/logo.svg?v=2" alt="" height="32">' in html
    data = PagesSettings(logo_url=PNG_DATA_URL)
    assert "img-src data:;" in content_security_policy(data)
    assert f'src="{PNG_DATA_URL}"' in page("t", "m", branding=data)


def test_an_unvalidated_colour_never_reaches_the_css() -> None:
    forged = PagesSettings.model_construct(title="t", logo_url=None, color="red}body{x:y")
    html = page("t", "m", branding=forged)
    assert "red}" not in html and "#0f6cbd" in html


def test_the_button_text_always_contrasts_with_the_operators_colour() -> None:
    steps = ("00", "33", "66", "99", "cc", "ff", "0f", "7f")
    for r, g, b in product(steps, repeat=3):
        color = f"#{r}{g}{b}"
        assert contrast(color, text_color_on(color)) >= 4.5, color
    assert text_color_on("#ffd800") == "#000000"
    assert text_color_on("#0f6cbd") == "#ffffff"


def test_brand_colour_and_title_appear() -> None:
    html = page("Access denied", "m", branding=PagesSettings(title="Contoso", color="#FFD800"))
    assert "<title>Access denied · Contoso</title>" in html
    assert "border-top:.375rem solid #FFD800" in html
    assert "a.primary{background:#FFD800;color:#000000" in html


def test_messages_read_as_sentences() -> None:
    html = page("t", "you do not have access to this page", request_id="r" * 8)
    assert "<p>You do not have access to this page.</p>" in html
    assert "<p>Done.</p>" in page("t", "Done.")
