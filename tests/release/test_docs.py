"""The documentation names only settings and files that exist, documents every setting, and the
README keeps what a visitor needs: the two quick-start commands first, links that resolve."""

from __future__ import annotations

import re
import subprocess
import sys
import unicodedata
from typing import Final

from support.paths import REPO

from gateway.config.advanced import SettingsGroup
from gateway.config.loading import env_name, unknown_variables
from gateway.config.settings import Settings

ROOT: Final = REPO
VARIABLE: Final = re.compile(r"\bGATEWAY_[A-Z0-9_]+")
SETTINGS_PAGE: Final = ROOT / "docs" / "configuration.md"
PAGES: Final = sorted((ROOT / "docs").rglob("*.md"))
# A repository path in a code span (`deploy/nginx/forward-auth.conf`, `gateway/upstream/`).
REPO_PATH: Final = re.compile(
    r"`((?:gateway|devidp|tests|bench|scripts|deploy|config|requirements|docs)/[\w./-]*)`"
)


def all_settings() -> set[str]:
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        group = field.annotation
        if isinstance(group, type) and issubclass(group, SettingsGroup):
            names.update(env_name((name, sub)) for sub in group.model_fields)
        else:
            names.add(env_name((name,)))
    return names


def test_every_setting_is_in_the_settings_table() -> None:
    page = SETTINGS_PAGE.read_text()
    missing = sorted(name for name in all_settings() if f"| `{name}` |" not in page)
    assert missing == []


def test_settings_table_is_generated_from_the_settings() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "settings_table.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_documents_name_only_real_settings() -> None:
    documents = [
        ROOT / "README.md",
        *PAGES,
        ROOT / "config/example.env",
        ROOT / "deploy/sidecar.yaml",
    ]
    for document in documents:
        named = {match.rstrip("_") for match in VARIABLE.findall(document.read_text())}
        named -= {"GATEWAY_"}
        assert unknown_variables({name: "x" for name in named}) == [], document


def test_documents_name_only_files_that_exist() -> None:
    named: set[str] = set()
    for document in [ROOT / "README.md", *PAGES]:
        named.update(REPO_PATH.findall(document.read_text()))
    assert len(named) >= 30
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert missing == []


def test_the_readme_starts_with_the_two_quick_start_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    headings = re.findall(r"^## (.+)$", readme, flags=re.MULTILINE)
    assert headings[0] == "Quick start"
    first_block = re.search(r"^```(\w*)\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL)
    assert first_block is not None and first_block.group(1) == "sh"
    assert readme.index("## Quick start") < first_block.start()
    commands = [line.split("#")[0].strip() for line in first_block.group(2).splitlines()]
    assert commands == ["./scripts/demo.sh", "./scripts/test.sh"]
    # CI runs exactly the README's test command.
    assert "exec bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def heading_id(heading: str) -> str:
    """The id MkDocs (Python-Markdown's toc) gives a heading; GitHub's agrees for our headings."""
    text = re.sub(r"[`*]", "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def test_heading_ids_are_computed_as_the_site_does() -> None:
    assert heading_id("Who may reach what: route policy") == "who-may-reach-what-route-policy"
    assert heading_id("Redis in production, and failover") == "redis-in-production-and-failover"
    assert heading_id("Kubernetes sidecar in 5 minutes") == "kubernetes-sidecar-in-5-minutes"


def test_readme_links_resolve() -> None:
    """mkdocs --strict checks the links between docs pages; the README is not part of the site,
    so its links into docs/ are checked here, anchors included."""
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert len(local) >= 15
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.is_file(), link
        if anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(), flags=re.MULTILINE)
            assert anchor in {heading_id(heading) for heading in headings}, link


def test_the_readme_names_what_the_test_command_installs() -> None:
    """The quick start's comment on ./scripts/test.sh names every system package bootstrap.sh
    installs for the tests (a driver package goes with its browser)."""
    script = (ROOT / "scripts" / "bootstrap.sh").read_text()
    # python3-venv is for both commands ("what else they need", the sentence above them says).
    packages = set(re.findall(r"want\+=\((\S+?)\)", script)) - {"python3-venv"}
    assert {"redis-server", "nginx", "chromium"} <= packages
    line = next(
        line
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith("./scripts/test.sh")
    ).lower()
    missing = [p for p in packages if p.removesuffix("-driver") not in line]
    assert missing == [], line
