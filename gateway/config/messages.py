"""Pydantic's validation errors as sentences an operator can act on.

Pydantic words its errors for programmers ("Input should be a valid URL, relative URL without a
base", "Value should have at least 32 items after validation"); each error type it can raise for
our fields maps here to what the value must be. Messages our own validators raise are sentences
already and pass through. A secret's value is never quoted back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydantic_core import ErrorDetails

MAX_QUOTED: Final = 60

# Error type -> what the value must be (ctx fields in braces).
MUST_BE: Final[Mapping[str, str]] = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "text",
    "path_type": "a file path",
    "greater_than": "greater than {gt}",
    "greater_than_equal": "at least {ge}",
    "less_than": "less than {lt}",
    "less_than_equal": "at most {le}",
    "literal_error": "one of {expected}",
    "enum": "one of {expected}",
    "string_pattern_mismatch": "text matching {pattern}",
    "url_parsing": "an absolute URL such as https://app.contoso.com (scheme://host[:port])",
    "url_type": "an absolute URL such as https://app.contoso.com (scheme://host[:port])",
    "url_scheme": "an http:// or https:// URL",
    "url_too_long": "a shorter URL",
    "dict_type": "a group of settings (a JSON object in the environment, a mapping in YAML)",
    "model_type": "a group of settings (a JSON object in the environment, a mapping in YAML)",
    "model_attributes_type": "a group of settings (a JSON object in the environment, a mapping "
    "in YAML)",
    "list_type": "a list (a JSON array in the environment, a list in YAML)",
    "tuple_type": "a list (a JSON array in the environment, a list in YAML)",
}


def _length(error: ErrorDetails) -> str | None:
    ctx = error.get("ctx") or {}
    text = isinstance(error.get("input"), str) or ctx.get("field_type") == "Value"
    unit = "characters" if text else "items"
    if error["type"] in ("string_too_short", "too_short"):
        if ctx.get("min_length") == 1:
            return "must not be empty"
        return f"must be at least {ctx.get('min_length')} {unit} long"
    if error["type"] in ("string_too_long", "too_long"):
        return f"must be at most {ctx.get('max_length')} {unit} long"
    return None


def _predicate(error: ErrorDetails) -> str | None:
    template = MUST_BE.get(error["type"])
    if template is None:
        return None
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    expected = str(ctx.get("expected", ""))
    if error["type"] == "literal_error" and " or " not in expected and "," not in expected:
        return expected
    return template.format_map({key: str(value) for key, value in ctx.items()})


def _quoted(value: object) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_QUOTED else text[: MAX_QUOTED - 1] + "…"


def sentence(errors: Sequence[ErrorDetails], *, secret: bool) -> str:
    """One sentence for the errors pydantic raised about one setting (a union raises one per
    member: "must be auto or a whole number"). Missing and unknown settings are the caller's."""
    must: list[str] = []
    other: list[str] = []
    for error in errors:
        predicate = _predicate(error)
        if predicate is not None:
            must.append(predicate)
            continue
        length = _length(error)
        if length is not None:
            other.append(length)
        else:
            other.append(str(error["msg"]).removeprefix("Value error, ").replace("\n", "; "))
    parts = [f"must be {' or '.join(dict.fromkeys(must))}"] if must else []
    parts.extend(dict.fromkeys(other))
    text = "; ".join(parts)
    given = errors[0].get("input")
    if must and not secret and isinstance(given, str | int | float) and not isinstance(given, bool):
        text += f" (got {_quoted(given)})"
    return text
