"""The chart's list of gateway settings is the gateway's own.

deploy/helm/msal-gateway/values.schema.json refuses, at `helm install`, any gateway.env key and any
GATEWAY_* name in gateway.extraEnv that is not in its `gatewaySetting` list: a typo stops the
install instead of the pod. The list is a copy (helm reads nothing but the chart), so this test
holds it to the names the gateway's loader accepts (gateway.config.names.known_variables, built
from the Settings model): a setting added, renamed or removed in gateway/config fails here until
the schema follows, which scripts/settings_table.py --write does (with the settings table).
"""

from __future__ import annotations

import json
from typing import Final

from support.paths import DEPLOY

from gateway.config.names import known_variables

SCHEMA: Final = DEPLOY / "helm" / "msal-gateway" / "values.schema.json"


def chart_settings() -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    names: list[str] = schema["definitions"]["gatewaySetting"]["enum"]
    return names


def test_the_chart_knows_exactly_the_gateways_settings() -> None:
    names = chart_settings()
    known = known_variables()
    missing, extra = sorted(known - set(names)), sorted(set(names) - known)
    assert (missing, extra) == ([], []), (
        f"values.schema.json definitions.gatewaySetting: add {missing}, remove {extra} "
        "(.venv/bin/python scripts/settings_table.py --write regenerates it)"
    )


def test_the_list_is_sorted_and_without_repeats() -> None:
    names = chart_settings()
    assert names == sorted(set(names))


def test_every_place_that_takes_settings_uses_the_list() -> None:
    """gateway.env's keys and gateway.extraEnv's names; nowhere a looser pattern."""
    schema = json.loads(SCHEMA.read_text())
    gateway = schema["properties"]["gateway"]["properties"]
    reference = {"$ref": "#/definitions/gatewaySetting"}
    assert gateway["env"]["propertyNames"] == reference
    assert gateway["extraEnv"]["items"] == {"$ref": "#/definitions/envEntry"}
    entry = schema["definitions"]["envEntry"]
    assert entry["if"] == {"properties": {"name": {"pattern": "^GATEWAY_"}}}
    assert entry["then"] == {"properties": {"name": reference}}
