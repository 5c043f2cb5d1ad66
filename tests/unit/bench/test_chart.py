"""The README's benchmark chart is drawn from the results table (bench/chart.py, run as a script
the way compare.py's users run it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support.paths import BENCH

TABLE = """
| system | body | conn | req/s | p50 | p99 | errors |
|---|---|---:|---:|---:|---:|---:|
| direct to nginx | 100 B | 32 | 74,311 | 0.25 ms | 4.72 ms | 0 |
| Apache + mod_auth_openidc | 100 B | 32 | 2,730 | 11.2 ms | 42.1 ms | 0 |
| msal-gateway | 100 B | 32 | 5,746 | 5.25 ms | 19.9 ms | 0 |
| msal-gateway | 64 KiB | 32 | 4,463 | 6.65 ms | 20.3 ms | 0 |
| **msal-gateway** | 100 B | 128 | 4,963 | 24.0 ms | 83.7 ms | 3 |
| a <b> & c | 100 B | 32 | 1,000 | 1.00 ms | 2.00 ms | 0 |
"""


def draw(results: Path, chart: Path) -> str:
    subprocess.run(
        [sys.executable, str(BENCH / "chart.py"), str(results), str(chart)],
        check=True,
        capture_output=True,
    )
    return chart.read_text()


def bars(drawing: str) -> list[str]:
    return [line for line in drawing.splitlines() if "<rect" in line or "/s, p99" in line]


def test_the_chart_holds_the_100_byte_rows_of_the_compared_systems(tmp_path: Path) -> None:
    (tmp_path / "RESULTS.md").write_text(TABLE)
    drawing = draw(tmp_path / "RESULTS.md", tmp_path / "RESULTS.svg")
    assert drawing.startswith("<svg") and drawing.rstrip().endswith("</svg>")
    assert "5,746/s, p99 19.9 ms" in drawing and "4,963/s, p99 83.7 ms" in drawing
    assert "2,730/s, p99 42.1 ms" in drawing
    assert "74,311" not in drawing  # nginx rows do no authentication: they stay in the table
    assert "4,463" not in drawing  # 64 KiB rows too
    assert "a &lt;b&gt; &amp; c" in drawing  # text is escaped
    # Background, legend, one bar per 100 B measurement of the compared systems.
    assert drawing.count("<rect") == 1 + 2 + 4


def test_the_committed_chart_is_drawn_from_the_committed_results(tmp_path: Path) -> None:
    drawn = draw(BENCH / "RESULTS.md", tmp_path / "RESULTS.svg")
    # Same bars and figures (the title depends on whether the run was a smoke run).
    assert bars(drawn) == bars((BENCH / "RESULTS.svg").read_text())
