"""The documentation names only settings that exist, and every setting is documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from gateway.config.advanced import SettingsGroup
from gateway.config.loading import env_name, unknown_variables
from gateway.config.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
VARIABLE = re.compile(r"\bGATEWAY_[A-Z0-9_]+")


def all_settings() -> set[str]:
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        group = field.annotation
        if isinstance(group, type) and issubclass(group, SettingsGroup):
            names.update(env_name((name, sub)) for sub in group.model_fields)
        else:
            names.add(env_name((name,)))
    return names


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = sorted(name for name in all_settings() if f"| `{name}` |" not in readme)
    assert missing == []


def test_readme_table_is_generated_from_the_settings() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "settings_table.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_documents_name_only_real_settings() -> None:
    for document in ("README.md", "config/example.env", "deploy/sidecar.yaml"):
        text = (ROOT / document).read_text()
        named = {match.rstrip("_") for match in VARIABLE.findall(text)}
        named -= {"GATEWAY_"}
        assert unknown_variables({name: "x" for name in named}) == [], document
