"""Writes the settings table of docs/configuration.md from the Settings model, or checks that it
is current.

.venv/bin/python scripts/settings_table.py --write   # rewrite the table in docs/configuration.md
.venv/bin/python scripts/settings_table.py --check   # exit 1 if the page is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from gateway.config.advanced import SettingsGroup
from gateway.config.loading import env_name
from gateway.config.settings import Settings

PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def _default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default
    if value is None or value == ():
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        value = " ".join(str(item) for item in value)
    return f"`{value}`"


def table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        group = field.annotation
        if isinstance(group, type) and issubclass(group, SettingsGroup):
            for sub, subfield in group.model_fields.items():
                rows.append(
                    f"| `{env_name((name, sub))}` | {_default(subfield)} | {subfield.description} |"
                )
        else:
            rows.append(f"| `{env_name((name,))}` | {_default(field)} | {field.description} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = PAGE.read_text(encoding="utf-8")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    current = f"{before}{START}\n{table()}\n{END}{after}"
    if args.write:
        PAGE.write_text(current, encoding="utf-8")
        return 0
    if current != text:
        print("docs/configuration.md is out of date: run scripts/settings_table.py --write")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
