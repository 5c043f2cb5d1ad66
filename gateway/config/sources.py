"""Where settings come from, read into one input for the model, remembering where each came from.

Priority, highest first: GATEWAY_* environment variables, the YAML file given with --config (same
names, lower-case, without the prefix; groups nested), and the AZURE_* variables that Azure
Workload Identity injects. The environment is read here rather than by pydantic-settings, which
stops at the first value that is not JSON: a value that cannot be read is a problem, left out, and
everything else is still validated in the same run. Knowing the source of each value lets a
problem name what the operator wrote: the variable, or the key path in the file.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from gateway.config import names
from gateway.config.names import Location
from gateway.config.problems import VARIABLE, Problem
from gateway.config.settings import ENV_PREFIX

AZURE_VARIABLES: Final = {
    "AZURE_CLIENT_ID": "client_id",
    "AZURE_TENANT_ID": "tenant_id",
    "AZURE_FEDERATED_TOKEN_FILE": "federated_token_file",
    "AZURE_AUTHORITY_HOST": "authority_host",
}
CREDENTIALS: Final = ("client_secret", "client_secret_file", "client_certificate_file")
SECRET_FILES: Final = ("client_secret", "cookie_secret", "cookie_secret_next")
# A corrected JSON value is offered as the fix only while it stays readable on one line.
MAX_SUGGESTED_JSON: Final = 160


class ConfigFileError(Exception):
    """The YAML file named by --config cannot be read or is not a mapping."""


def read_config_file(path: Path) -> dict[str, Any]:
    import yaml  # here: only a --config file or a mistake needs the YAML parser (1 MB)

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigFileError(f"--config: cannot read {path}: {reason}") from None
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigFileError(f"--config: {path} is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"--config: {path} must hold a mapping of settings")
    return {str(key).lower(): value for key, value in data.items()}


@dataclass
class Sources:
    """The merged input, where each part came from, and the problems met while reading it."""

    values: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    # Environment names of settings whose value could not be read: a rule that involves one of
    # them would only repeat the problem.
    broken: set[str] = field(default_factory=set)
    environment: dict[Location, str] = field(default_factory=dict)
    file: Path | None = None
    file_values: dict[str, Any] = field(default_factory=dict)
    azure: dict[Location, str] = field(default_factory=dict)

    def subject(self, location: Location) -> str:
        """What the operator wrote for a location: the variable (with the item inside a JSON
        value, e.g. GATEWAY_POLICY__RULES[0].path), or `file: key.path`, or the variable that
        would set it when it is unset."""
        for size in range(len(location), 0, -1):
            variable = self.environment.get(location[:size])
            if variable is not None:
                rest = location[size:]
                return variable + "".join(
                    f"[{part}]" if isinstance(part, int) else f".{part}" for part in rest
                )
        if self.file is not None and _holds(self.file_values, location):
            return f"{self.file}: {names.key_path(location)}"
        azure = self.azure.get(location[:1])
        return azure if azure is not None else names.env_name(location)

    def rename(self, problem: Problem) -> Problem:
        """The problem with each setting the file sets named by its key path in the file."""
        subject = problem.subject
        if VARIABLE.fullmatch(subject):
            subject = self._own_name(subject, as_subject=True)
        text = VARIABLE.sub(lambda match: self._own_name(match.group(), as_subject=False),
                            problem.text)  # fmt: skip
        return Problem(subject, text)

    def _own_name(self, variable: str, *, as_subject: bool) -> str:
        location = names.location_of(variable)
        if location is None or self.file is None or location in self.environment:
            return variable
        if location[:1] in self.environment or not _holds(self.file_values, location):
            return variable
        key = names.key_path(location)
        return f"{self.file}: {key}" if as_subject else f"{key} (in {self.file})"


def _holds(data: Any, location: Location) -> bool:
    for part in location:
        in_list = isinstance(part, int) and isinstance(data, list) and part < len(data)
        in_mapping = isinstance(part, str) and isinstance(data, dict) and part in data
        if not (in_list or in_mapping):
            return False
        data = data[part]
    return True


def _merge(into: dict[str, Any], values: Mapping[str, Any]) -> None:
    """Deep-merge `values` over `into`: a group set in two places keeps the fields of both."""
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _json_problem(variable: str, raw: str, error: json.JSONDecodeError) -> Problem:
    where = f"line {error.lineno}, column {error.colno}: {error.msg}"
    fix = "quote every key and text value in double quotes"
    import yaml

    try:
        # The likeliest mistake is YAML's flow style ([{path: /admin/}]): offer it as JSON.
        meant = yaml.safe_load(raw)
    except yaml.YAMLError:
        meant = None
    if isinstance(meant, list | dict):
        suggestion = json.dumps(meant)
        if len(suggestion) <= MAX_SUGGESTED_JSON:
            fix = f"write it as JSON, e.g. {variable}='{suggestion}'"
    return Problem(variable, f"is not valid JSON ({where}): {fix}")


def _from_environment(environ: Mapping[str, str], sources: Sources) -> dict[str, Any]:
    values: dict[str, Any] = {}
    known = names.known_variables()
    for variable in sorted(environ, key=str.upper):
        if not variable.upper().startswith(ENV_PREFIX):
            continue
        location = names.location_of(variable)
        if location is None:
            hint = names.did_you_mean(variable.upper(), known)
            sources.problems.append(Problem(variable, f"is not a known setting{hint}"))
            continue
        raw = environ[variable]
        value: Any = raw
        setting = names.field_at(location)
        if setting is not None and names.is_json(setting) and raw.strip():
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                sources.problems.append(_json_problem(variable, raw, exc))
                sources.broken.add(names.env_name(location))
                continue
        sources.environment[location] = variable
        _merge(values, _nested(location, value))
    return values


def _nested(location: Location, value: Any) -> dict[str, Any]:
    for part in reversed(location[1:]):
        value = {part: value}
    return {str(location[0]): value}


def _from_azure(environ: Mapping[str, str], sources: Sources) -> dict[str, Any]:
    values = {name: environ[var] for var, name in AZURE_VARIABLES.items() if environ.get(var)}
    if "federated_token_file" in values and any(
        environ.get(f"{ENV_PREFIX}{name.upper()}") or sources.file_values.get(name)
        for name in CREDENTIALS
    ):
        # An explicitly configured credential wins over the injected token file.
        del values["federated_token_file"]
    for var, name in AZURE_VARIABLES.items():
        if name in values:
            sources.azure[(name,)] = var
    return values


def _secret_files(sources: Sources) -> None:
    """Read the *_FILE secrets here, so that an unreadable one is one problem among the others
    (in the model it would stop validation before any other field is looked at)."""
    for name in SECRET_FILES:
        file_key = f"{name}_file"
        path = sources.values.get(file_key)
        if not path:
            continue
        subject = sources.subject((file_key,))
        if sources.values.get(name):
            sources.problems.append(
                Problem("", f"set only one of {sources.subject((name,))} and {subject}")
            )
            sources.broken.add(names.env_name((name,)))
        else:
            try:
                content = Path(path).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                sources.problems.append(Problem(subject, f"cannot read {path}: {reason}"))
            else:
                if content:
                    continue
                sources.problems.append(Problem(subject, f"{path} is empty"))
            sources.broken.add(names.env_name((name,)))
        del sources.values[file_key]


def read_sources(environ: Mapping[str, str], config_file: Path | None) -> Sources:
    """Every source merged by priority. Problems are collected in `problems`, never raised."""
    sources = Sources(file=config_file)
    if config_file is not None:
        try:
            sources.file_values = read_config_file(config_file)
        except ConfigFileError as exc:
            sources.problems.append(Problem("", str(exc)))
    _merge(sources.values, _from_azure(environ, sources))
    _merge(sources.values, sources.file_values)
    _merge(sources.values, _from_environment(environ, sources))
    _secret_files(sources)
    return sources
