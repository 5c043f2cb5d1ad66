"""The names of settings: a field location as an environment variable (GATEWAY_SESSION__IDLE_TTL_
SECONDS) or a YAML key path (session.idle_ttl_seconds, policy.rules[0].path), the reverse, the
field behind a location, and "did you mean" for names that are close to a real one.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable
from functools import cache
from typing import Any, Final, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import NoDecode

from gateway.config.settings import ENV_PREFIX, Settings

Location = tuple[str | int, ...]
# difflib's ratio, compared without the GATEWAY_ prefix that every name shares: SESION__IDLE_TTL_
# SECONDS and idle_ttl are close to real names, DEBUG is not.
CLOSE_ENOUGH: Final = 0.6
_CONTAINERS: Final = (tuple, list, set, frozenset, dict)


def env_name(location: Location) -> str:
    """The environment variable for a field location, e.g. GATEWAY_SESSION__IDLE_TTL_SECONDS."""
    return ENV_PREFIX + "__".join(str(part).upper() for part in location)


def key_path(location: Location) -> str:
    """The location as a path of YAML keys, e.g. policy.rules[0].path."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else part
    return path


def _members(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(arg for arg in get_args(annotation) if arg is not type(None))
    return (annotation,)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The settings model a field holds, directly or as the items of a list."""
    for member in _members(annotation):
        if get_origin(member) in _CONTAINERS:
            args = [arg for arg in get_args(member) if arg is not Ellipsis]
            member = args[-1] if args else None
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def field_at(location: Location) -> FieldInfo | None:
    """The field a location ends in (list indexes are skipped), or None when there is none."""
    model: type[BaseModel] | None = Settings
    found: FieldInfo | None = None
    for part in location:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        found = model.model_fields[part]
        model = _model_of(found.annotation)
    return found


def setting_location(location: Location) -> Location:
    """The longest prefix of an error's location that names fields and list items: pydantic adds
    parts of its own (a union member's tag, 'function-after[...]') that name nothing to set."""
    model: type[BaseModel] | None = Settings
    kept: list[str | int] = []
    in_list = False
    for part in location:
        if isinstance(part, int) and in_list:
            kept.append(part)
            in_list = False
            continue
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            break
        kept.append(part)
        annotation = model.model_fields[part].annotation
        model = _model_of(annotation)
        in_list = any(get_origin(member) in _CONTAINERS for member in _members(annotation))
    return tuple(kept)


def fields_of(location: Location) -> tuple[str, ...]:
    """The field names allowed at a location (a group, a list item, or the top level)."""
    model: type[BaseModel] | None = Settings
    for part in location:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model is not None else None
        model = _model_of(field.annotation) if field is not None else None
    return tuple(model.model_fields) if model is not None else ()


def is_secret(location: Location) -> bool:
    field = field_at(location)
    return field is not None and any(
        isinstance(member, type) and issubclass(member, SecretStr)
        for member in _members(field.annotation)
    )


def is_json(field: FieldInfo) -> bool:
    """Whether the field's environment value is JSON (a group, or a list of rules); lists of
    words are space-separated instead (NoDecode)."""
    if NoDecode in field.metadata:
        return False
    return any(
        get_origin(member) in _CONTAINERS
        or (isinstance(member, type) and issubclass(member, BaseModel))
        for member in _members(field.annotation)
    )


@cache
def _locations() -> dict[str, Location]:
    found: dict[str, Location] = {}
    for name, field in Settings.model_fields.items():
        found[env_name((name,))] = (name,)
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            for sub in group.model_fields:
                found[env_name((name, sub))] = (name, sub)
    return found


def known_variables() -> frozenset[str]:
    return frozenset(_locations())


def location_of(variable: str) -> Location | None:
    """The field a GATEWAY_* variable sets (any case), or None when it names no setting."""
    return _locations().get(variable.upper())


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest candidate, or '' when none is close."""
    by_stem = {candidate.removeprefix(ENV_PREFIX): candidate for candidate in candidates}
    stem = name.removeprefix(ENV_PREFIX)
    close = difflib.get_close_matches(stem, list(by_stem), n=1, cutoff=CLOSE_ENOUGH)
    return f" (did you mean {by_stem[close[0]]}?)" if close else ""
