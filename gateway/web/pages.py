"""The HTML the gateway shows people: its error pages and the signed-out page, their branding
(GATEWAY_PAGES__*), the next action each kind of error offers, and the pages' security policy.

One small self-contained template: inline CSS, no script, nothing loaded from elsewhere unless the
operator sets a https logo URL (then the policy allows images from that origin and no other).
Every dynamic value is HTML-escaped. The branded frame is built once per PagesSettings, so
rendering a page is a little string formatting. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from html import escape
from typing import Final
from urllib.parse import urlsplit

from gateway.config.advanced import PagesSettings

PAGE_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
DEFAULT_BRANDING: Final = PagesSettings()
SIGN_IN_PATH: Final = "/.auth/login/aad"
SIGN_OUT_PATH: Final = "/.auth/logout"
_HEX_COLOR: Final = re.compile(r"^#[0-9A-Fa-f]{6}$")
_HOST_PORT: Final = re.compile(r"^[A-Za-z0-9.-]+(?::[0-9]{1,5})?$")
_PRIMARY: Final = ' class="primary"'
# Dark enough on white for WCAG AA body text (7:1 and more); the operator's colour is only ever a
# background, under black or white text, whichever contrasts more with it.
_TEXT, _MUTED, _LINK, _FOCUS = "#1b1f24", "#4b5563", "#0b5394", "#1b1f24"


@dataclass(frozen=True, slots=True)
class Action:
    """A next step offered on a page: a link (the first on a page is drawn as its main button).
    An empty href is the page's own address: "try again" without reflecting the request."""

    label: str
    href: str


TRY_AGAIN: Final = Action("Try again", "")


def _sign_in_again(prefix: str) -> Action:
    return Action("Sign in again", prefix + SIGN_IN_PATH)


def _start_page(prefix: str) -> Action:
    return Action("Go to the start page", prefix + "/")


# Error codes whose class title (errors.py) is too general for what the person just went through.
_TITLES: Final = {"sign_in_expired": "Your sign-in has expired"}


def error_title(code: str, title: str) -> str:
    return _TITLES.get(code, title)


def error_actions(
    status: int, code: str, *, during_sign_in: bool = False, prefix: str = ""
) -> tuple[Action, ...]:
    """What a person can do next about an error: sign in again when the sign-in itself failed,
    retry when the cause is passing (application or store down, too many requests), switch
    account when refused. Links stay under the application's path prefix."""
    start = _start_page(prefix)
    if code == "identity_provider_error":
        return (Action("Try signing in again", prefix + SIGN_IN_PATH), start)
    if during_sign_in or code == "sign_in_expired":
        return (_sign_in_again(prefix), start)
    if status == 403:
        return (start, Action("Sign out to use another account", prefix + SIGN_OUT_PATH))
    if status in (429, 500, 502, 503, 504):
        return (TRY_AGAIN, start)
    return (start,)


def content_security_policy(branding: PagesSettings = DEFAULT_BRANDING) -> str:
    """The pages' policy: nothing but inline style, plus images from the logo's origin (or data:
    images for a data: logo) when the operator set one."""
    return _frame(branding).csp


def luminance(color: str) -> float:
    """WCAG 2 relative luminance of a #rrggbb colour."""

    def channel(hex_pair: str) -> float:
        value = int(hex_pair, 16) / 255
        return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(color[i : i + 2]) for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def text_color_on(background: str) -> str:
    """Black or white, whichever contrasts more with `background` (at least 4.58:1 either way)."""
    light = luminance(background)
    on_black = (light + 0.05) / 0.05
    on_white = 1.05 / (light + 0.05)
    return "#000000" if on_black >= on_white else "#ffffff"


@dataclass(frozen=True, slots=True)
class _Frame:
    head: str  # up to the <title> text
    body: str  # from </title> to the inside of <main>
    tail: str
    product: str  # escaped
    csp: str


_STYLE: Final = (
    "*{{box-sizing:border-box}}"
    "body{{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;"
    'padding:1rem;font:1rem/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;'
    "background:#f3f4f6;color:{text}}}"
    ".card{{width:100%;max-width:34rem;background:#fff;border-top:.375rem solid {color};"
    "border-radius:.5rem;box-shadow:0 1px 3px rgba(0,0,0,.18)}}"
    "header{{display:flex;align-items:center;gap:.75rem;padding:1.25rem 1.5rem 0;"
    "font-weight:600;color:{muted}}}"
    "header img{{max-height:2rem;max-width:10rem}}"
    "main{{padding:.25rem 1.5rem 1.5rem}}"
    "h1{{font-size:1.5rem;line-height:1.3;margin:.5rem 0 .75rem}}p{{margin:.5rem 0}}"
    ".actions{{display:flex;flex-wrap:wrap;align-items:center;gap:.75rem 1.25rem;"
    "margin-top:1.25rem}}"
    "a{{color:{link}}}"
    # The transparent border shows in forced-colours (high contrast) mode, where backgrounds go.
    "a.primary{{background:{color};color:{on};border:2px solid transparent;border-radius:.25rem;"
    "padding:.5rem 1.125rem;font-weight:600;text-decoration:none}}"
    "a:focus-visible{{outline:3px solid {focus};outline-offset:2px}}"
    ".meta{{margin-top:1.5rem;font-size:.875rem;color:{muted}}}"
    "code{{font-family:ui-monospace,monospace;word-break:break-all}}"
    "@media (max-width:30rem){{body{{padding:0;align-items:stretch}}"
    ".card{{border-radius:0;box-shadow:none}}a.primary{{flex:1 1 100%;text-align:center}}}}"
)


@lru_cache(maxsize=16)
def _frame(branding: PagesSettings) -> _Frame:
    # Settings validation already holds these to safe shapes; checked again because the CSS and
    # the policy cannot be escaped, and a model can be built without validation.
    color = branding.color if _HEX_COLOR.match(branding.color) else DEFAULT_BRANDING.color
    style = _STYLE.format(
        color=color,
        on=text_color_on(color),
        text=_TEXT,
        muted=_MUTED,
        link=_LINK,
        focus=_FOCUS,
    )
    product = escape(branding.title) if branding.title else ""
    logo, csp = "", PAGE_CSP
    if branding.logo_url:
        source = _image_source(branding.logo_url)
        if source is not None:
            # alt="": the product name is written next to it, so the image is decoration.
            logo = f'<img src="{escape(branding.logo_url)}" alt="" height="32">'
            csp = PAGE_CSP.replace("; frame-ancestors", f"; img-src {source}; frame-ancestors")
    head = (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex">\n<title>'
    )
    header = f"<header>{logo}<span>{product}</span></header>\n" if logo or product else ""
    body = (
        f'</title>\n<style>{style}</style>\n</head>\n<body>\n<div class="card">\n{header}<main>\n'
    )
    return _Frame(head, body, "</main>\n</div>\n</body>\n</html>\n", product, csp)


def _image_source(url: str) -> str | None:
    """The CSP source for the logo: data: for a data URL, else the https origin."""
    if url.startswith("data:image/"):
        return "data:"
    parts = urlsplit(url)
    if parts.scheme != "https" or not _HOST_PORT.match(parts.netloc):
        return None
    return f"https://{parts.netloc.lower()}"


def page(
    title: str,
    message: str,
    *,
    branding: PagesSettings = DEFAULT_BRANDING,
    request_id: str | None = None,
    status: int | None = None,
    actions: Sequence[Action] = (),
) -> str:
    """A whole page: `title` as the h1, `message`, the actions (the first as the main button),
    then the status and request id that support staff ask for."""
    frame = _frame(branding)
    heading = escape(title)
    links = " ".join(
        f'<a{_PRIMARY if i == 0 else ""} href="{escape(action.href)}">{escape(action.label)}</a>'
        for i, action in enumerate(actions)
    )
    meta = []
    if status is not None:
        meta.append(f"Error {status}")
    if request_id:
        meta.append(f"Request id: <code>{escape(request_id)}</code>")
    return (
        f"{frame.head}{heading}{' · ' + frame.product if frame.product else ''}{frame.body}"
        f"<h1>{heading}</h1>\n"
        f"<p>{escape(sentence(message))}</p>\n"
        + (f'<p class="actions">{links}</p>\n' if links else "")
        + (f'<p class="meta">{" · ".join(meta)}</p>\n' if meta else "")
        + frame.tail
    )


def sentence(message: str) -> str:
    """An error message as people read it: the gateway's messages are lower-case phrases (they
    are log lines too), shown capitalised and with a full stop."""
    if not message:
        return message
    message = message[0].upper() + message[1:]
    return message if message.endswith((".", "!", "?")) else message + "."


def signed_out_page(
    *, branding: PagesSettings = DEFAULT_BRANDING, request_id: str | None = None, prefix: str = ""
) -> str:
    return page(
        "You have signed out",
        f"You are no longer signed in to {branding.title}."
        if branding.title
        else "You have signed out of this application.",
        branding=branding,
        request_id=request_id,
        actions=(_sign_in_again(prefix),),
    )
