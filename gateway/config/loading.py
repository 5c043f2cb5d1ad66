"""Loading settings: the sources and their priority, and one-line reports of every problem.

Priority, highest first: GATEWAY_* environment variables, the YAML file given with --config (same
names, lower-case, without the prefix), and the AZURE_* variables that Azure Workload Identity
injects. Settings themselves (fields, validation, derived values) live in config/settings.py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource

from gateway.config.advanced import SettingsGroup
from gateway.config.settings import ENV_PREFIX, Settings


class _YamlSource(InitSettingsSource):
    """The YAML file's values, below the environment in priority."""


class _AzureWorkloadIdentitySource(InitSettingsSource):
    """AZURE_* variables injected by Azure Workload Identity: the lowest priority."""


def _azure_defaults(environ: Mapping[str, str], file_values: Mapping[str, Any]) -> dict[str, str]:
    names = {
        "AZURE_CLIENT_ID": "client_id",
        "AZURE_TENANT_ID": "tenant_id",
        "AZURE_FEDERATED_TOKEN_FILE": "federated_token_file",
        "AZURE_AUTHORITY_HOST": "authority_host",
    }
    values = {field: environ[var] for var, field in names.items() if environ.get(var)}
    credentials = ("client_secret", "client_secret_file", "client_certificate_file")
    if "federated_token_file" in values and any(
        environ.get(f"{ENV_PREFIX}{name.upper()}") or file_values.get(name) for name in credentials
    ):
        # An explicitly configured credential wins over the injected token file.
        del values["federated_token_file"]
    return values


class ConfigFileError(Exception):
    """The YAML file named by --config cannot be read or is not a mapping."""


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigFileError(f"--config: cannot read {path}: {exc.strerror}") from None
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


def load_settings(config_file: Path | None = None) -> Settings:
    """Read settings from the environment over the YAML file over AZURE_* defaults.

    Raises ValidationError (see `describe_errors`) or ConfigFileError.
    """
    file_values = read_config_file(config_file) if config_file else {}
    azure_values = _azure_defaults(os.environ, file_values)

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (
                env_settings,
                _YamlSource(settings_cls, file_values),
                _AzureWorkloadIdentitySource(settings_cls, azure_values),
            )

    return _Loaded()


def env_name(location: tuple[str | int, ...]) -> str:
    """The environment variable for a field location, e.g. GATEWAY_SESSION__IDLE_TTL_SECONDS."""
    return ENV_PREFIX + "__".join(str(part).upper() for part in location)


def describe_errors(error: ValidationError) -> list[str]:
    """One line per problem, each naming the variable to set."""
    lines: list[str] = []
    for item in error.errors(include_url=False, include_input=False):
        location = tuple(item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        if not location:
            lines.extend(message.splitlines())
        elif item["type"] == "missing":
            lines.append(f"{env_name(location)} is required")
        elif item["type"] == "extra_forbidden":
            lines.append(f"{env_name(location)} is not a known setting")
        else:
            lines.append(f"{env_name(location)}: {message}")
    return lines


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """GATEWAY_* variables that name no setting: a typo must not silently fall back to a default."""
    known: set[str] = set()
    for name, field in Settings.model_fields.items():
        known.add(env_name((name,)))
        group = field.annotation
        if isinstance(group, type) and issubclass(group, SettingsGroup):
            known.update(env_name((name, sub)) for sub in group.model_fields)
    return [
        f"{var} is not a known setting"
        for var in sorted(environ)
        if var.upper().startswith(ENV_PREFIX) and var.upper() not in known
    ]
