"""HTML the emulator shows people: the account picker, the form_post page, errors, signed out.

Self-contained pages (inline CSS, no external assets). Every interpolated value goes through
`html.escape`; hidden inputs have exactly the shape `<input type="hidden" name="..." value="...">`
so tests can read them back.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Final

from aiohttp import web

from .config import User

CSP: Final = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "base-uri 'none'; frame-ancestors 'none'"
)

_STYLE: Final = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;background:#f3f2f1;margin:0;
color:#1b1b1b}main{max-width:26rem;margin:4rem auto;background:#fff;padding:2rem 2.5rem;
box-shadow:0 2px 6px rgba(0,0,0,.2)}h1{font-size:1.5rem;font-weight:600;margin:0 0 .25rem}
p.sub{color:#605e5c;margin:0 0 1.5rem}form{margin:0}button.user{display:flex;flex-direction:column;
align-items:flex-start;width:100%;padding:.75rem 1rem;margin:0 0 .5rem;border:1px solid #c8c6c4;
background:#fff;cursor:pointer;text-align:left;font:inherit}button.user:hover,button.user:focus{
background:#edebe9;border-color:#0067b8}button.user.hint{border-color:#0067b8;border-width:2px}
span.upn{color:#605e5c;font-size:.875rem}button.cancel{margin-top:1rem;background:none;border:0;
color:#0067b8;cursor:pointer;font:inherit;padding:0}footer{color:#605e5c;font-size:.75rem;
margin-top:1.5rem}code{word-break:break-all}
"""


def _e(value: str) -> str:
    return html.escape(value, quote=True)


def hidden_inputs(fields: Mapping[str, str]) -> str:
    return "\n".join(
        f'<input type="hidden" name="{_e(k)}" value="{_e(v)}">' for k, v in fields.items()
    )


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><main>\n{body}\n</main></body></html>\n"
    )


def html_response(page: str, *, status: int = 200) -> web.Response:
    return web.Response(
        text=page,
        status=status,
        content_type="text/html",
        headers={
            "Content-Security-Policy": CSP,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def sign_in_page(
    *,
    action: str,
    params: Mapping[str, str],
    users: Iterable[User],
    hint: User | None,
    app_name: str,
) -> str:
    """Account picker: one button per test user, posting the original authorize parameters."""
    buttons = []
    for user in users:
        css = "user hint" if user == hint else "user"
        focus = " autofocus" if user == hint else ""
        buttons.append(
            f'<button type="submit" class="{css}" name="devidp_user" value="{_e(user.username)}"'
            f"{focus}><strong>{_e(user.name)}</strong>"
            f'<span class="upn">{_e(user.preferred_username)}</span></button>'
        )
    body = (
        "<h1>Pick an account</h1>\n"
        f'<p class="sub">to continue to <strong>{_e(app_name)}</strong></p>\n'
        f'<form method="post" action="{_e(action)}">\n{hidden_inputs(params)}\n'
        + "\n".join(buttons)
        + '\n<button type="submit" class="cancel" name="devidp_cancel" value="1">Cancel'
        "</button>\n</form>\n"
        "<footer>Development identity provider (msal-gateway devidp). "
        "Test users only; never use it in production.</footer>"
    )
    return _page("Sign in to your account", body)


def form_post_page(action: str, fields: Mapping[str, str]) -> str:
    """The `response_mode=form_post` answer: a form that submits itself to the redirect URI."""
    body = (
        f'<form method="post" action="{_e(action)}" id="devidp-form-post">\n'
        f"{hidden_inputs(fields)}\n"
        "<noscript><p>Script is disabled. Press the button to continue.</p>"
        '<button type="submit">Continue</button></noscript>\n</form>\n'
        '<script>document.getElementById("devidp-form-post").submit();</script>'
    )
    return _page("Working...", body)


def error_page(title: str, message: str) -> str:
    return _page(title, f"<h1>{_e(title)}</h1>\n<p><code>{_e(message)}</code></p>")


def signed_out_page() -> str:
    body = (
        "<h1>You signed out of your account</h1>\n"
        '<p class="sub">It\'s a good idea to close all browser windows.</p>'
    )
    return _page("Signed out", body)
