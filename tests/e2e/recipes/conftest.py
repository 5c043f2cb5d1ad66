"""The recipe tests (docs/recipes.md): real applications from PyPI behind a real gateway.

They form the opt-in group marked `recipes`. MSAL_GATEWAY_RECIPES chooses how much of it runs:

    unset or "quick"   one application of each kind: JupyterLab in Chromium, Datasette scripted
                       (what ./scripts/test.sh runs, within CI's time)
    "all"              every recipe
    "none"             none

A test marked `recipes(quick=True)` is in the quick form; the others skip, saying how to run them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from support.recipes_browser import chromium as start_chromium

CHOICES: Final = ("quick", "all", "none")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "recipes(quick=False): a recipe test of docs/recipes.md; MSAL_GATEWAY_RECIPES=all runs "
        "every one, unset or quick only those with quick=True, none none",
    )


def recipes_choice() -> str:
    choice = os.environ.get("MSAL_GATEWAY_RECIPES", "quick").strip().lower() or "quick"
    if choice not in CHOICES:
        raise pytest.UsageError(f"MSAL_GATEWAY_RECIPES={choice!r}: use one of {', '.join(CHOICES)}")
    return choice


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    choice = recipes_choice()
    for item in items:
        marker = item.get_closest_marker("recipes")
        if marker is None or choice == "all":
            continue
        if choice == "none":
            item.add_marker(pytest.mark.skip(reason="MSAL_GATEWAY_RECIPES=none"))
        elif not marker.kwargs.get("quick", False):
            item.add_marker(
                pytest.mark.skip(reason="in the full recipe set: MSAL_GATEWAY_RECIPES=all")
            )


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Any]:
    yield from start_chromium(tmp_path / "profile")
