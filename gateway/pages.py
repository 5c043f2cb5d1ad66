"""The HTML the gateway shows people: one small, self-contained page template for errors and
notices. Every dynamic value is HTML-escaped; nothing is loaded from elsewhere."""

from __future__ import annotations

from html import escape
from typing import Final

_TEMPLATE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>
body{{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;background:#f5f6f8;color:#1b1f24;
margin:0;display:flex;min-height:100vh;align-items:center;justify-content:center}}
main{{background:#fff;max-width:32rem;margin:1rem;padding:2rem 2.25rem;border-radius:8px;
box-shadow:0 1px 3px rgba(0,0,0,.12)}}
h1{{font-size:1.35rem;margin:0 0 .75rem}}p{{line-height:1.5;margin:.5rem 0}}
a.button{{display:inline-block;margin-top:1rem;padding:.55rem 1.1rem;background:#0f6cbd;color:#fff;
border-radius:4px;text-decoration:none}}a.button:focus{{outline:3px solid #7bb3e6}}
.meta{{color:#5b6470;font-size:.85rem;margin-top:1.5rem}}
</style>
</head>
<body>
<main>
<h1>{title}</h1>
<p>{message}</p>
{action}
<p class="meta">{meta}</p>
</main>
</body>
</html>
"""


def page(
    title: str,
    message: str,
    *,
    request_id: str | None = None,
    action_href: str | None = None,
    action_label: str | None = None,
    status: int | None = None,
) -> str:
    action = ""
    if action_href and action_label:
        action = f'<a class="button" href="{escape(action_href)}">{escape(action_label)}</a>'
    meta_parts = []
    if status is not None:
        meta_parts.append(f"Error {status}")
    if request_id:
        meta_parts.append(f"Request id {escape(request_id)}")
    return _TEMPLATE.format(
        title=escape(title),
        message=escape(message),
        action=action,
        meta=" · ".join(meta_parts),
    )
