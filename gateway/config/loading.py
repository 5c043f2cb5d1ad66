"""Loading settings, and reporting every problem with them in one run.

The sources (config/sources.py) give one input and the problems met reading it. The model then
validates it: fields first, then the rules across fields. Pydantic skips those rules when any
field fails, which would hold problems back for a second round; so after field errors the
broken fields are set aside (a placeholder stands in for a required one) and the rules run on
the rest. A rule that involves a broken setting is not reported: it would only repeat it.
`Diagnosis.partial` is that best-effort Settings, for the checks that look at the machine
(server/preflight.py).
"""

from __future__ import annotations

import copy
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from gateway.config import messages, names
from gateway.config.names import Location, env_name
from gateway.config.problems import ConfigurationError, Problem
from gateway.config.settings import Settings
from gateway.config.sources import ConfigFileError, Sources, read_config_file, read_sources

# Stand-ins for required settings that are missing or broken, only so that the other rules can
# be checked; a configuration with a stand-in in it is never returned.
PLACEHOLDERS: Final[Mapping[str, str]] = {
    "public_url": "https://placeholder.invalid",
    "client_id": "placeholder",
}
# The end of a description's first sentence ("e.g. " does not end one).
_SENTENCE_END: Final = re.compile(r"(?<!e\.g)\.(?:\s|$)")


@dataclass
class Diagnosis:
    """What loading found: the settings when there is no problem, else every problem."""

    sources: Sources
    problems: list[Problem] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)
    settings: Settings | None = None
    partial: Settings | None = None

    def add(self, problems: Iterable[Problem]) -> None:
        """More problems (the machine checks), minus those about a setting already reported."""
        for problem in problems:
            if not problem.mentions(self.broken):
                self.problems.append(self.sources.rename(problem))

    def result(self) -> Settings:
        """The settings, or ConfigurationError with every problem."""
        if self.problems or self.settings is None:
            raise ConfigurationError(self.problems)
        return self.settings


class _Given(Settings):
    """Settings from exactly the values given: the sources were read already."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


class _FieldsOnly(_Given):
    """The rules across fields wait: loading runs them itself, next to the field errors."""

    def cross_field_problems(self) -> list[str]:
        return []


def _validate(values: Mapping[str, Any], *, cross_field: bool = True) -> Settings:
    return (_Given if cross_field else _FieldsOnly)(**values)


def _field_problems(
    errors: list[ErrorDetails], sources: Sources
) -> tuple[list[Problem], dict[Location, list[ErrorDetails]]]:
    by_setting: dict[Location, list[ErrorDetails]] = defaultdict(list)
    for error in errors:
        location = tuple(error["loc"])
        # An unknown key is set aside alone, not the group it is in.
        if error["type"] != "extra_forbidden":
            location = names.setting_location(location)
        by_setting[location].append(error)
    problems: list[Problem] = []
    for location, found in by_setting.items():
        subject = sources.subject(location)
        kind = found[0]["type"]
        if kind == "missing":
            problems.append(Problem(subject, "is required" + _what_it_is(location)))
        elif kind == "extra_forbidden":
            known = names.fields_of(location[:-1])
            hint = names.did_you_mean(str(location[-1]).lower(), known)
            problems.append(Problem(subject, f"is not a known setting{hint}"))
        else:
            secret = names.is_secret(location)
            problems.append(Problem(subject, messages.sentence(found, secret=secret)))
    return problems, by_setting


def _what_it_is(location: Location) -> str:
    setting = names.field_at(location)
    description = (setting.description or "") if setting is not None else ""
    first = _SENTENCE_END.split(description.split(";")[0])[0].rstrip(".")
    return f": {first}" if first else ""


def _set_aside(values: dict[str, Any], locations: Iterable[Location]) -> dict[str, Any]:
    """`values` without the settings at `locations`, stand-ins for the required ones."""
    kept = copy.deepcopy(values)
    for location in locations:
        top = str(location[0]) if location else ""
        group = kept.get(top)
        if len(location) > 1 and isinstance(group, dict) and isinstance(location[1], str):
            group.pop(location[1], None)
            if location[2:] and location[1] in group:
                del group[location[1]]
        else:
            kept.pop(top, None)
    for name, value in PLACEHOLDERS.items():
        kept.setdefault(name, value)
    return kept


def diagnose(environ: Mapping[str, str], config_file: Path | None = None) -> Diagnosis:
    """Every problem with the configuration, in one pass; never raises for a mistake in it."""
    sources = read_sources(environ, config_file)
    found = Diagnosis(sources, problems=list(sources.problems), broken=set(sources.broken))
    try:
        found.settings = found.partial = _validate(sources.values)
        return found
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    cross_field = [str(e["msg"]).removeprefix("Value error, ") for e in errors if not e["loc"]]
    field_errors = [error for error in errors if error["loc"]]
    problems, by_setting = _field_problems(field_errors, sources)
    found.problems.extend(sources.rename(problem) for problem in problems)
    found.broken.update(env_name(location[:2]) for location in by_setting)
    try:
        found.partial = _validate(_set_aside(sources.values, by_setting), cross_field=False)
    except ValidationError:
        found.partial = None  # a field that cannot be set aside; its problem is reported
    if field_errors and found.partial is not None:
        cross_field = Settings.cross_field_problems(found.partial)
    found.add(Problem("", line) for text in cross_field for line in text.splitlines())
    return found


def load_settings(
    config_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read settings from the environment over the YAML file over AZURE_* defaults.

    Raises ConfigurationError listing every problem (unknown variables included).
    """
    return diagnose(os.environ if environ is None else environ, config_file).result()


def describe_errors(error: ValidationError) -> list[str]:
    """One line per problem of a model built directly (not through load_settings), each naming
    the variable to set."""
    errors = error.errors(include_url=False)
    problems, _ = _field_problems([item for item in errors if item["loc"]], Sources())
    lines = [str(problem) for problem in problems]
    for item in errors:
        if not item["loc"]:
            lines.extend(str(item["msg"]).removeprefix("Value error, ").splitlines())
    return lines


__all__ = [
    "ConfigFileError",
    "ConfigurationError",
    "Diagnosis",
    "describe_errors",
    "diagnose",
    "env_name",
    "load_settings",
    "read_config_file",
    "unknown_variables",
]


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """GATEWAY_* variables that name no setting, one line each with the closest real name."""
    return [str(problem) for problem in read_sources(environ, None).problems
            if "is not a known setting" in problem.text]  # fmt: skip
