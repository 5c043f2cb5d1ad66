"""What the /.auth endpoints read from a request: form fields and JSON bodies, bounded, strictly
parsed, and bad input always a 4xx (never a 500, never unbounded work), with or without
PYTHONOPTIMIZE (nothing here relies on assert).

Forms are application/x-www-form-urlencoded only: what browsers send for a form_post callback or a
sign-out form. A field named twice is ambiguous (which `code` or `state` counts?) and refused;
so is a compressed body, which this gateway never inflates.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import parse_qsl

from aiohttp import web

from gateway.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

MAX_FORM_BYTES: Final = 64 * 1024  # a form_post answer carries a code, state and session_state
MAX_JSON_BYTES: Final = 16 * 1024
MAX_FIELDS: Final = 32
FORM: Final = "application/x-www-form-urlencoded"


async def _body(request: web.Request, max_bytes: int) -> bytes:
    if request.headers.get("Content-Encoding", "identity").lower() != "identity":
        raise UnsupportedMediaType("a compressed body is not accepted here")
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
    data = await request.content.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
    return data


def _unique(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise BadRequest(f"the field {name[:40]!r} is sent twice")
        fields[name] = value
    return fields


def query_fields(request: web.Request) -> dict[str, str]:
    """The query's fields; a field named twice is refused."""
    return _unique(request.query.items())


async def form_fields(request: web.Request, max_bytes: int = MAX_FORM_BYTES) -> dict[str, str]:
    """The fields of a urlencoded form body (none for an empty body)."""
    if not request.body_exists:
        return {}
    if request.content_type != FORM:
        raise UnsupportedMediaType(f"expected a form ({FORM})")
    data = await _body(request, max_bytes)
    try:
        pairs = parse_qsl(
            data.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except ValueError as exc:  # not ASCII, bad UTF-8 once unescaped, too many fields
        raise BadRequest("the form could not be read") from exc
    return _unique(pairs)


async def json_object(request: web.Request, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """A JSON object body."""
    data = await _body(request, max_bytes)
    try:
        document = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise BadRequest("the body is not JSON") from exc
    if not isinstance(document, dict):
        raise BadRequest("the body is not a JSON object")
    return document
