"""Every measurement of the second performance round (issue 17) in one command, with a PASS/FAIL
line per target: the hot path with access logs off and on for every system (bench/compare.py,
medians of several passes), the access log's CPU per line (bench/access_log.py), the idle sidecar
and its start (bench/footprint.py, one process and two workers), a sign-in storm
(bench/signin_storm.py) and the cost as the work grows (bench/growth.py), and each system's memory
idle and under load beside the peers' (bench/peer_footprint.py).

    .venv/bin/python bench/round2.py            # the full form, about 40 minutes on 2 cores
    .venv/bin/python bench/round2.py --quick    # every part in its quick form, one pass

Each part runs as its own process, one after the other, so that nothing else is busy while one
measures; run it on a quiet machine. The summary (a PASS/FAIL line per target, then each part's
tables) goes to stdout and to bench/ROUND2.md (or --output); the exit status is 0 only when every
target passed. A part that fails to run is a FAIL of its targets, with its output's last lines.
The full form also rewrites the README's performance section (between its `round2` markers) and
its chart, docs/assets/bench-round2.svg, from the hot-path medians of the run.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from chart import svg

BENCH: Final = Path(__file__).resolve().parent
README: Final = BENCH.parent / "README.md"
CHART: Final = BENCH.parent / "docs" / "assets" / "bench-round2.svg"
README_BEGIN: Final = "<!-- round2:begin (written by bench/round2.py) -->"
README_END: Final = "<!-- round2:end -->"
MODES: Final = ("off", "on")
PYTHON: Final = sys.executable
SYSTEMS: Final = ("msal-gateway", "Apache + mod_auth_openidc", "bare aiohttp proxy")
# The targets.
VS_APACHE: Final = 3.0
VS_BARE: Final = 1.2
ACCESS_LOG_MICROSECONDS: Final = 15.0
IDLE_RSS_MIB: Final = 45.0 * 1000 * 1000 / (1024 * 1024)  # 45 MB
READY_SECONDS: Final = 0.5
_VERDICT: Final = re.compile(r"^- (?P<target>.+?): \**(?P<mark>PASS|FAIL|n/a)\**[ ,(]")


@dataclass(frozen=True, slots=True)
class Verdict:
    part: str
    target: str
    passed: bool | None  # None: not measurable in this run
    measured: str

    def line(self) -> str:
        mark = "n/a" if self.passed is None else ("PASS" if self.passed else "FAIL")
        return f"- {self.part}: {self.target}: **{mark}**, {self.measured}"


def run(part: str, *arguments: str) -> tuple[int, str]:
    """One part's script, its output shown as it runs and returned."""
    print(f"\n## {part}: {' '.join(arguments)}", flush=True)
    started = time.monotonic()
    with subprocess.Popen(  # noqa: S603 - this interpreter and this directory's scripts
        [PYTHON, *arguments],
        cwd=BENCH.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            print(line, end="", flush=True)
            lines.append(line)
        status = process.wait()
    print(f"({part}: {time.monotonic() - started:.0f} s, exit {status})", flush=True)
    return status, "".join(lines)


def failed_to_run(part: str, target: str, output: str) -> Verdict:
    tail = " / ".join(line.strip() for line in output.strip().splitlines()[-3:])
    return Verdict(part, target, False, f"did not run: {tail[:300]}")


@dataclass(frozen=True, slots=True)
class Cells:
    rate: int
    p99: str
    cpu: str


def table_rows(markdown: str) -> dict[tuple[str, str, str], Cells]:
    """{(system, body, connections): req/s, p99, proxy CPU per request} from bench/compare.py's
    results table."""
    rows = {}
    for line in markdown.splitlines():
        cells = [cell.strip().strip("*") for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 10 and cells[0] in SYSTEMS:
            try:
                rate = int(cells[3].replace(",", ""))
            except ValueError:
                continue
            rows[(cells[0], cells[1], cells[2])] = Cells(rate, cells[5], cells[9])
    return rows


# {access-log mode: {system: one Cells per pass}}
HotPathFigures = dict[str, dict[str, list[Cells]]]


def median_pass(passes: list[Cells]) -> Cells:
    """The pass whose req/s is the median (the lower middle one of an even count)."""
    return sorted(passes, key=lambda cells: cells.rate)[(len(passes) - 1) // 2]


def hot_path(passes: int, quick: bool, figures: HotPathFigures) -> list[Verdict]:
    verdicts = []
    for logs in MODES:
        part = f"hot path, access logs {logs}"
        rates: dict[str, list[int]] = {system: [] for system in SYSTEMS}
        figures[logs] = {system: [] for system in SYSTEMS}
        for index in range(passes):
            with tempfile.NamedTemporaryFile(suffix=".md") as output:
                arguments = [
                    str(BENCH / "compare.py"),
                    "--gateway-workers",
                    "1",
                    "--only",
                    "msal",
                    "Apache",
                    "bare",
                    "--output",
                    output.name,
                ]
                if logs == "on":
                    arguments.append("--access-logs")
                arguments += ["--quick"] if quick else ["--duration", "8"]
                _, text = run(f"{part}, pass {index + 1}", *arguments)
                rows = table_rows(Path(output.name).read_text())
            for system in SYSTEMS:
                found = rows.get((system, "100 B", "32"))
                if found is not None:
                    rates[system].append(found.rate)
                    figures[logs][system].append(found)
        if not all(rates.values()):
            target = f"msal-gateway >= {VS_APACHE:g}x Apache and >= {VS_BARE:g}x the bare proxy"
            verdicts.append(failed_to_run(part, target, text))
            continue
        medians = {system: statistics.median(values) for system, values in rates.items()}
        ours = medians["msal-gateway"]
        shown = ", ".join(f"{system} {medians[system]:,.0f} req/s" for system in SYSTEMS)
        for other, wanted in (
            ("Apache + mod_auth_openidc", VS_APACHE),
            ("bare aiohttp proxy", VS_BARE),
        ):
            ratio = ours / medians[other]
            verdicts.append(
                Verdict(
                    part,
                    f"100 B at 32 connections, msal-gateway >= {wanted:g}x {other}",
                    ratio >= wanted,
                    f"{ratio:.2f}x (medians of {passes}: {shown})",
                )
            )
    return verdicts


def access_log(quick: bool) -> list[Verdict]:
    verdicts = []
    for log_format in ("json", "text"):
        part = f"access log ({log_format})"
        target = f"at most {ACCESS_LOG_MICROSECONDS:g} µs of CPU per request"
        requests = ["--requests", "5000", "--repeats", "3"] if quick else []
        status, text = run(part, str(BENCH / "access_log.py"), "--format", log_format, *requests)
        found = re.search(r"([\d.]+) µs of CPU per request", text)
        if status != 0 or found is None:
            verdicts.append(failed_to_run(part, target, text))
            continue
        cost = float(found.group(1))
        verdicts.append(Verdict(part, target, cost <= ACCESS_LOG_MICROSECONDS, f"{cost:g} µs"))
    return verdicts


def footprint(quick: bool) -> list[Verdict]:
    runs = "3" if quick else "10"
    part = "one idle process"
    status, text = run(part, str(BENCH / "footprint.py"), "--runs", runs)
    rss = re.search(r"gateway, idle: RSS ([\d.]+) MiB", text) or re.search(
        r"idle: RSS ([\d.]+) MiB", text
    )
    ready = re.search(r"exec to ready: ([\d.]+) s", text)
    cpu = re.search(r"CPU time to ready \(user \+ system\): ([\d.]+) s", text)
    verdicts = []
    if status != 0 or rss is None or ready is None:
        verdicts.append(failed_to_run(part, "idle RSS <= 45 MB, exec to ready <= 0.5 s", text))
    else:
        megabytes = float(rss.group(1))
        verdicts.append(
            Verdict(part, "idle RSS <= 45 MB", megabytes <= IDLE_RSS_MIB, f"{megabytes:g} MiB")
        )
        seconds = float(ready.group(1))
        cpu_note = f" (CPU {cpu.group(1)} s)" if cpu else ""
        verdicts.append(
            Verdict(
                part,
                "exec to ready <= 0.5 s with a local identity provider",
                seconds <= READY_SECONDS,
                f"{seconds:g} s wall{cpu_note}",
            )
        )
    # Workers: reported, no target of their own (shared pages are the point).
    status, text = run(
        "two workers",
        str(BENCH / "footprint.py"),
        "--runs",
        runs,
        "--workers",
        "2",
        "--store",
        "redis",
    )
    total = re.search(r"all processes, idle: PSS ([\d.]+) MiB", text)
    verdicts.append(
        Verdict(
            "two workers",
            "RSS and PSS per worker reported",
            None if total is None else True,
            f"all processes' PSS {total.group(1)} MiB" if total else "not measured",
        )
    )
    return verdicts


def script_verdicts(part: str, status: int, text: str) -> list[Verdict]:
    """The PASS/FAIL lines a script prints itself (signin_storm.py, growth.py)."""
    found = []
    for line in text.splitlines():
        match = _VERDICT.match(line.strip())
        if match:
            mark = match["mark"]
            passed = None if mark == "n/a" else mark == "PASS"
            found.append(
                Verdict(part, match["target"], passed, line.strip()[match.end() :].strip(" ()*,"))
            )
    if not found:
        found.append(failed_to_run(part, "its targets", text))
    elif status not in (0, 1):
        found.append(failed_to_run(part, "ran to the end", text))
    return found


def hot_path_table(figures: HotPathFigures) -> list[str]:
    lines = [
        "| access logs | system | req/s, median (each pass) | p99 | proxy CPU per request |",
        "|---|---|---:|---:|---:|",
    ]
    for mode, systems in figures.items():
        for system, passes in systems.items():
            if not passes:
                continue
            middle = median_pass(passes)
            each = " / ".join(f"{cells.rate:,}" for cells in passes)
            lines.append(
                f"| {mode} | {system} | {middle.rate:,} ({each}) | {middle.p99} | {middle.cpu} |"
            )
    return lines


def output_tables(text: str) -> list[str]:
    """A part's Markdown tables under their headings (one level down); the other lines, and
    headings with no table under them, left out."""
    sections: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in text.splitlines():
        if line.startswith("## "):
            sections.append(("#" + line, []))
        elif line.startswith("|"):
            sections[-1][1].append(line)
    kept = []
    for heading, rows in sections:
        if rows:
            kept += ["", heading, "", *rows] if heading else ["", *rows]
    return kept


def readme_section(figures: HotPathFigures, passes: int, date: str, verdicts: list[Verdict]) -> str:
    medians = {
        mode: {system: median_pass(p).rate for system, p in systems.items() if p}
        for mode, systems in figures.items()
    }
    rows = []
    for mode in MODES:
        rate = medians.get(mode, {})
        if len(rate) != len(SYSTEMS):
            continue
        ours, apache, bare = (rate[system] for system in SYSTEMS)
        rows.append(
            f"| {mode} for every system | {ours:,} req/s | {apache:,} req/s | {bare:,} req/s | "
            f"{ours / apache:.2f}x | {ours / bare:.2f}x |"
        )
    passed = sum(1 for verdict in verdicts if verdict.passed)
    return "\n".join(
        [
            README_BEGIN,
            "On a 2-core machine, with the production defaults (one process, Redis, sealed "
            "sessions, identity",
            "headers, a bearer token, metrics on), medians of "
            f"{passes} passes of `bench/compare.py --gateway-workers 1`,",
            f"run by `bench/round2.py` on {date}, authenticated GET of 100 B at 32 connections:",
            "",
            "![Requests per second with access logs off and on: msal-gateway, Apache + "
            "mod_auth_openidc and a bare aiohttp proxy](docs/assets/bench-round2.svg)",
            "",
            "| access logs | msal-gateway | Apache + mod_auth_openidc | bare aiohttp proxy "
            "| vs Apache | vs bare proxy |",
            "|---|---:|---:|---:|---:|---:|",
            *rows,
            "",
            "The bare proxy does no authentication at all. The same run's other figures (start-up, "
            "memory beside",
            "the peers, a sign-in storm, growth) and every target of the round, "
            f"{passed} of {len(verdicts)} met, are in",
            "[bench/ROUND2.md](bench/ROUND2.md); the harness and earlier runs: "
            "[benchmarks](docs/benchmarks.md).",
            README_END,
        ]
    )


def rewrite_readme(section: str) -> None:
    text = README.read_text()
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        raise RuntimeError(f"README.md has no {README_BEGIN!r} ... {README_END!r} markers")
    README.write_text(text[:begin] + section + text[end + len(README_END) :])


def draw_chart(figures: HotPathFigures, date: str) -> None:
    rows: dict[str, dict[str, tuple[float, str]]] = {}
    for mode, systems in figures.items():
        for system, passes in systems.items():
            if passes:
                middle = median_pass(passes)
                rows.setdefault(system, {})[mode] = (float(middle.rate), middle.p99)
    series = (("off", "#0f6cbd", "access logs off"), ("on", "#8a5cd1", "access logs on"))
    footer = (
        f"GET, 100-byte body, 32 connections, wrk -t2, one process each, medians of passes; "
        f"2 cores, {date}"
    )
    CHART.write_text(svg(rows, "Requests per second (higher is better)", series, footer))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="every part in its quick form")
    parser.add_argument("--passes", type=int, help="passes of the hot path per mode (3; quick 1)")
    parser.add_argument("--output", type=Path, default=BENCH / "ROUND2.md")
    parser.add_argument(
        "--no-readme", action="store_true", help="leave README.md and its chart alone"
    )
    args = parser.parse_args()
    passes = args.passes or (1 if args.quick else 3)
    quick = ["--quick"] if args.quick else []
    figures: HotPathFigures = {}
    verdicts = [
        *hot_path(passes, args.quick, figures),
        *access_log(args.quick),
        *footprint(args.quick),
    ]
    peers_arguments = ["--duration", "2"] if args.quick else []
    _, peers = run("memory beside the peers", str(BENCH / "peer_footprint.py"), *peers_arguments)
    storm_status, storm = run("sign-in storm", str(BENCH / "signin_storm.py"), *quick)
    verdicts += script_verdicts("sign-in storm", storm_status, storm)
    growth_status, growth = run("growth", str(BENCH / "growth.py"), *quick)
    verdicts += script_verdicts("growth", growth_status, growth)
    date = time.strftime("%Y-%m-%d", time.gmtime())
    summary = "\n".join(
        [
            "# Performance round 2: every target",
            "",
            f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
            f"- form: {'quick (smoke test, not figures)' if args.quick else 'full'}",
            "",
            *(verdict.line() for verdict in verdicts),
            "",
            "## The hot path (100 B at 32 connections)",
            "",
            *hot_path_table(figures),
            "",
            "## Memory beside the peers",
            "",
            *output_tables(peers),
            "",
            "## Sign-in storm",
            "",
            *output_tables(storm),
            "",
            "## Growth",
            *output_tables(growth),
            "",
        ]
    )
    print("\n" + summary)
    args.output.write_text(summary)
    if not args.quick and not args.no_readme:
        rewrite_readme(readme_section(figures, passes, date, verdicts))
        draw_chart(figures, date)
        print(f"README.md's performance section and {CHART.name} rewritten from this run")
    return 0 if all(v.passed is not False for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
