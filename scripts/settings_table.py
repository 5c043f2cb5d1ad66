"""Writes what is generated from the Settings model, or checks that it is current: the settings
table of docs/configuration.md and the Helm chart's list of known GATEWAY_* names (the
`gatewaySetting` enum of deploy/helm/msal-gateway/values.schema.json, which refuses a misspelt
setting at `helm install`).

.venv/bin/python scripts/settings_table.py --write   # rewrite both
.venv/bin/python scripts/settings_table.py --check   # exit 1 if either is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from gateway.config.advanced import SettingsGroup
from gateway.config.loading import env_name
from gateway.config.names import known_variables
from gateway.config.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "configuration.md"
CHART_SCHEMA = ROOT / "deploy" / "helm" / "msal-gateway" / "values.schema.json"
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def _default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True, validated_data={})
    if value is None or value == () or value == {}:
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


def chart_schema(text: str) -> str:
    """The chart's values schema with its list of settings replaced by the gateway's."""
    schema = json.loads(text)
    schema["definitions"]["gatewaySetting"]["enum"] = sorted(known_variables())
    return json.dumps(schema, indent=2) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = PAGE.read_text(encoding="utf-8")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    outputs = {
        PAGE: (text, f"{before}{START}\n{table()}\n{END}{after}"),
        CHART_SCHEMA: (
            CHART_SCHEMA.read_text(encoding="utf-8"),
            chart_schema(CHART_SCHEMA.read_text(encoding="utf-8")),
        ),
    }
    stale = [path for path, (old, new) in outputs.items() if old != new]
    if args.write:
        for path in stale:
            path.write_text(outputs[path][1], encoding="utf-8")
        return 0
    for path in stale:
        print(f"{path.relative_to(ROOT)} is out of date: run scripts/settings_table.py --write")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
