"""The benchmark harness (bench/compare.py) end to end in its --quick form: every system starts,
the sign-ins to msal-gateway and Apache work, wrk runs against each system, the report names
every row and target, and nothing is left running or on disk afterwards. The same for the sign-in
storm (bench/signin_storm.py --quick): 20 browsers sign in to each system at once. And the whole
second performance round in one command (bench/round2.py --quick), for the shape of its report.

Opt-in: it needs what bench/bootstrap.sh installs (apache2, mod_auth_openidc, wrk, uvloop) and
takes about 20 s of both cores, so it runs only with MSAL_GATEWAY_BENCH=1.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.paths import BENCH

COMPARE = BENCH / "compare.py"
STORM = BENCH / "signin_storm.py"

pytestmark = pytest.mark.skipif(
    os.environ.get("MSAL_GATEWAY_BENCH") != "1",
    reason="benchmark harness: set MSAL_GATEWAY_BENCH=1 (after bench/bootstrap.sh) to run it",
)


def _command_lines() -> list[str]:
    lines = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            lines.append(raw.replace(b"\0", b" ").decode(errors="replace"))
    return lines


def test_quick_run_reports_every_system_and_cleans_up(tmp_path: Path) -> None:
    output = tmp_path / "RESULTS.md"
    result = subprocess.run(
        [sys.executable, str(COMPARE), "--quick", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = output.read_text()
    for system in (
        "direct to nginx",
        "nginx proxy_pass",
        "Apache + mod_auth_openidc",
        "bare aiohttp proxy",
        "msal-gateway",
    ):
        for body in ("100 B", "64 KiB"):
            assert f"| {system} | {body} | 32 |" in text
    for system in ("Apache + mod_auth_openidc", "msal-gateway"):
        assert f"| {system} | 302 to sign-in | 32 |" in text
    # Three targets measurable at 32 connections, the 128-connection one reported as n/a.
    assert len(re.findall(r"\*\*(PASS|FAIL)\*\*", text)) == 3
    assert "n/a (not measured in this run)" in text
    assert "<msal-gateway session>" in text and "<Apache session>" in text
    match = re.search(r"starting the systems in (\S+) ", result.stdout)
    assert match is not None
    root = match.group(1)
    assert not Path(root).exists()
    assert not [line for line in _command_lines() if root in line]


def test_quick_sign_in_storm_reports_both_systems_and_cleans_up() -> None:
    result = subprocess.run(
        [sys.executable, str(STORM), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    for system in ("msal-gateway", "Apache + mod_auth_openidc"):
        row = re.search(rf"^\| {re.escape(system)} \| 20 \| (\d+) \| (\S+) \|", text, re.M)
        assert row is not None, text
        # Every browser completed its sign-in and its first proxied request.
        assert row.groups() == ("20", "0"), text
    assert len(re.findall(r": (PASS|FAIL) \(", text)) == 3, text
    match = re.search(r"starting the systems in (\S+) ", text)
    assert match is not None
    root = match.group(1)
    assert not Path(root).exists()
    assert not [line for line in _command_lines() if root in line]


ROUND2 = BENCH / "round2.py"
ROUND2_PARTS = (
    "hot path, access logs off",
    "hot path, access logs on",
    "access log (json)",
    "access log (text)",
    "one idle process",
    "two workers",
    "sign-in storm",
    "growth",
)


@pytest.mark.timeout(1500)
def test_every_round_two_target_in_one_command(tmp_path: Path) -> None:
    """bench/round2.py --quick runs every part and writes a verdict per target of each; the
    figures of a quick run mean nothing, so only the report's shape is checked (exit 0 when every
    target passed, 1 when one failed, never a part that did not run)."""
    output = tmp_path / "ROUND2.md"
    readme = (BENCH.parent / "README.md").read_text()
    result = subprocess.run(
        [sys.executable, str(ROUND2), "--quick", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-3000:]
    lines = [line for line in output.read_text().splitlines() if line.startswith("- ")]
    verdicts = [line for line in lines if re.search(r"\*\*(PASS|FAIL|n/a)\*\*", line)]
    assert verdicts, output.read_text()
    for part in ROUND2_PARTS:
        assert any(line.startswith(f"- {part}: ") for line in verdicts), (part, verdicts)
    assert not [line for line in verdicts if "did not run" in line], verdicts
    report = output.read_text()
    hot_path = report.split("## The hot path", 1)[1].split("\n## ", 1)[0]
    for mode in ("off", "on"):
        for system in ("msal-gateway", "Apache + mod_auth_openidc", "bare aiohttp proxy"):
            assert f"| {mode} | {system} | " in hot_path, (mode, system, hot_path)
    peers = report.split("## Memory beside the peers", 1)[1].split("\n## ", 1)[0]
    for system in ("msal-gateway", "Apache + mod_auth_openidc", "nginx proxy_pass"):
        assert re.search(rf"^\| {re.escape(system)} \| \d+ ", peers, re.MULTILINE), (system, peers)
    assert "| msal-gateway | 500 |" not in report  # the quick storm has 20 browsers
    assert re.search(r"^\| msal-gateway \| 20 \| 20 \|", report, re.MULTILINE), report
    # Only the full form rewrites the README's performance section.
    assert (BENCH.parent / "README.md").read_text() == readme
