"""The `threat` marker, which names the THREATS.md catalogue rows a test checks:
`@pytest.mark.threat("RD-01", "RD-03")`, or `pytestmark = pytest.mark.threat(...)` for a module.

Checked when the tests are collected, so that every run, however narrow, enforces it: each id has
a catalogue id's shape (one to four capital letters, a dash, two digits: RD-01, JW-17, F-19; the
catalogue itself is not in this repository, so the shape is what can be checked), and every test
under tests/security names at least one. `pytest --threat RD-01` runs only the tests that name
RD-01; `pytest -m threat` runs every test that names any.
"""

from __future__ import annotations

import re
from typing import Final

import pytest

THREAT_ID: Final = re.compile(r"[A-Z]{1,4}-\d{2}")
SECURITY: Final = ("tests", "security")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--threat",
        action="append",
        default=[],
        metavar="ID",
        help="run only the tests whose threat marker names ID (repeatable)",
    )


def threat_ids(item: pytest.Item) -> set[str]:
    return {str(arg) for mark in item.iter_markers("threat") for arg in mark.args}


def marker_problems(item: pytest.Item, security: bool) -> list[str]:
    marks = list(item.iter_markers("threat"))
    found = []
    for mark in marks:
        if not mark.args or mark.kwargs:
            found.append("threat() takes one or more catalogue ids and nothing else")
        found += [
            f"{arg!r} is not a THREATS.md id (like RD-01 or F-19)"
            for arg in mark.args
            if not (isinstance(arg, str) and THREAT_ID.fullmatch(arg))
        ]
    if security and not marks:
        found.append("a test under tests/security names no threat: add @pytest.mark.threat(...)")
    return found


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    security = config.rootpath.joinpath(*SECURITY)
    problems = [
        f"{item.nodeid}: {problem}"
        for item in items
        for problem in marker_problems(item, item.path.is_relative_to(security))
    ]
    if problems:
        raise pytest.UsageError("threat markers:\n  " + "\n  ".join(problems))
    wanted = set(config.getoption("threat"))
    if wanted:
        selected = [item for item in items if threat_ids(item) & wanted]
        config.hook.pytest_deselected(items=[item for item in items if item not in selected])
        items[:] = selected
