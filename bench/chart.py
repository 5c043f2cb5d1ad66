"""The benchmark results as a picture: an SVG bar chart of authenticated requests per second (100 B
body, 32 and 128 connections) per system, drawn from the table in bench/RESULTS.md, so that
docs/benchmarks.md (through the symbolic link docs/assets/bench-results.svg) shows what the last
run measured. compare.py calls it after every run; it also runs alone:

    .venv/bin/python bench/chart.py [bench/RESULTS.md] [bench/RESULTS.svg]

Plain SVG written here, no plotting library: it must render on GitHub and in any browser.
"""

from __future__ import annotations

import sys
from html import escape
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parent.parent
WIDTH: Final = 760
LABEL_WIDTH: Final = 250
BAR_HEIGHT: Final = 14
ROW_GAP: Final = 10
SERIES: Final = (("32", "#0f6cbd", "32 connections"), ("128", "#8a5cd1", "128 connections"))


def read_rows(markdown: str) -> dict[str, dict[str, tuple[float, str]]]:
    """{system: {connections: (req/s, p99)}} for the 100 B rows of the results table, for the
    systems that compare with each other: the two authenticating proxies and the bare proxy."""
    rows: dict[str, dict[str, tuple[float, str]]] = {}
    for line in markdown.splitlines():
        cells = [cell.strip().strip("*") for cell in line.strip().strip("|").split("|")]
        if len(cells) < 6 or cells[1] != "100 B":
            continue
        system, _, connections, rate, _, p99 = cells[:6]
        if system.startswith(("direct", "nginx")):
            continue  # ten times faster and doing no authentication: they would flatten the rest
        try:
            value = float(rate.replace(",", ""))
        except ValueError:
            continue
        rows.setdefault(system, {})[connections] = (value, p99)
    return rows


FOOTER: Final = (
    "GET, 100-byte body, wrk -t2, one run on one 2-core machine; nginx and the direct rows are in "
    "bench/RESULTS.md."
)

Series = tuple[tuple[str, str, str], ...]  # (key, colour, legend)


def svg(
    rows: dict[str, dict[str, tuple[float, str]]],
    title: str,
    series_of: Series = SERIES,
    footer: str = FOOTER,
) -> str:
    """Bars of req/s (labelled with their p99) per system, one bar per entry of `series_of`."""
    most = max((rate for series in rows.values() for rate, _ in series.values()), default=1.0)
    scale = (WIDTH - LABEL_WIDTH - 180) / most
    group = len(series_of) * BAR_HEIGHT + ROW_GAP
    height = 60 + group * len(rows) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="system-ui,sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        f'<text x="10" y="22" font-size="14" font-weight="600">{escape(title)}</text>',
    ]
    for index, (_, colour, name) in enumerate(series_of):
        x = 10 + index * 150
        parts.append(f'<rect x="{x}" y="32" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{x + 18}" y="42">{name}</text>')
    y = 60
    for system, series in rows.items():
        parts.append(
            f'<text x="{LABEL_WIDTH - 8}" y="{y + BAR_HEIGHT + 2}" text-anchor="end">'
            f"{escape(system)}</text>"
        )
        for offset, (key, colour, _) in enumerate(series_of):
            if key not in series:
                continue
            rate, p99 = series[key]
            top = y + offset * BAR_HEIGHT
            length = max(1.0, rate * scale)
            parts.append(
                f'<rect x="{LABEL_WIDTH}" y="{top}" width="{length:.1f}" '
                f'height="{BAR_HEIGHT - 2}" fill="{colour}"/>'
            )
            parts.append(
                f'<text x="{LABEL_WIDTH + length + 6:.1f}" y="{top + BAR_HEIGHT - 3}">'
                f"{rate:,.0f}/s, p99 {escape(p99)}</text>"
            )
        y += group
    parts.append(f'<text x="10" y="{height - 10}" fill="#555">{escape(footer)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_chart(results: Path, chart: Path) -> None:
    text = results.read_text()
    title = "Requests per second (higher is better)"
    if "smoke" in text.lower():
        title += ": smoke run, not a measurement"
    chart.write_text(svg(read_rows(text), title))


def main(argv: list[str]) -> int:
    results = Path(argv[0]) if argv else REPO / "bench" / "RESULTS.md"
    chart = Path(argv[1]) if len(argv) > 1 else results.with_suffix(".svg")
    write_chart(results, chart)
    print(f"written to {chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
