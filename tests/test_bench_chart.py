"""The README's benchmark chart is drawn from the results table (bench/chart.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from chart import read_rows, svg

TABLE = """
| system | body | conn | req/s | p50 | p99 | errors |
|---|---|---:|---:|---:|---:|---:|
| direct to nginx | 100 B | 32 | 74,311 | 0.25 ms | 4.72 ms | 0 |
| Apache + mod_auth_openidc | 100 B | 32 | 2,730 | 11.2 ms | 42.1 ms | 0 |
| msal-gateway | 100 B | 32 | 5,746 | 5.25 ms | 19.9 ms | 0 |
| msal-gateway | 64 KiB | 32 | 4,463 | 6.65 ms | 20.3 ms | 0 |
| **msal-gateway** | 100 B | 128 | 4,963 | 24.0 ms | 83.7 ms | 3 |
"""


def test_the_chart_holds_the_100_byte_rows_of_the_compared_systems() -> None:
    rows = read_rows(TABLE)
    assert rows == {
        "Apache + mod_auth_openidc": {"32": (2730.0, "42.1 ms")},
        "msal-gateway": {"32": (5746.0, "19.9 ms"), "128": (4963.0, "83.7 ms")},
    }
    drawing = svg(rows, "a <title> & more")
    assert drawing.startswith("<svg") and drawing.rstrip().endswith("</svg>")
    assert "5,746/s, p99 19.9 ms" in drawing and "4,963/s, p99 83.7 ms" in drawing
    assert "a &lt;title&gt; &amp; more" in drawing  # text is escaped
    assert drawing.count("<rect") == 1 + 2 + 3  # background, legend, one bar per measurement


def test_the_committed_chart_is_drawn_from_the_committed_results() -> None:
    bench = Path(__file__).resolve().parent.parent / "bench"
    drawn = svg(read_rows((bench / "RESULTS.md").read_text()), "")
    committed = (bench / "RESULTS.svg").read_text()
    # Same bars and figures (the title depends on whether the run was a smoke run).
    assert [line for line in drawn.splitlines() if "<rect" in line or "/s, p99" in line] == [
        line for line in committed.splitlines() if "<rect" in line or "/s, p99" in line
    ]
