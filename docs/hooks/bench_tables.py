"""MkDocs hook: benchmark tables in the docs are generated from bench/results/, never copied,
and files from the repository root (CHANGELOG.md) are included, not duplicated.

Markers, each alone on a line of a docs page:

    <!-- bench-table: NAME | col, col, ... | key=value; key=value -->
        a table of the rows of bench/results/NAME.json: the columns named (numbers to 3
        significant digits), the rows whose fields equal every key=value given (optional)
    <!-- bench-md: NAME -->
        the Markdown table file bench/results/NAME.md that the same benchmark run wrote (for
        tables with derived columns), without its title line
    <!-- include: PATH -->
        the file PATH (relative to the repository root), its first heading dropped

Each table is followed by a line naming the run (device, torch, date) from the JSON environment.
"""
from __future__ import annotations

import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
MARKER = re.compile(r"^<!-- (bench-table|bench-md|include): (.+?) -->$", re.M)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "x".join(map(str, value))
    return str(value)


def _run_line(name: str) -> str:
    env = json.loads((RESULTS / f"{name}.json").read_text())["environment"]
    return f"*Run: {env.get('device')}, torch {env.get('torch')}, {env.get('date')} (`bench/results/{name}.json`).*"


def table(spec: str) -> str:
    """The Markdown table a bench-table marker's spec (NAME | columns | filters) stands for."""
    parts = [p.strip() for p in spec.split("|")]
    if len(parts) not in (2, 3):
        raise ValueError(f"bench-table needs 'NAME | columns [| filters]', got {spec!r}")
    name, columns = parts[0], [c.strip() for c in parts[1].split(",")]
    wanted = dict(f.split("=", 1) for f in parts[2].split(";")) if len(parts) == 3 and parts[2] else {}
    rows = json.loads((RESULTS / f"{name}.json").read_text())["rows"]
    rows = [r for r in rows if all(str(r.get(k.strip())) == v.strip() for k, v in wanted.items())]
    if not rows:
        raise ValueError(f"bench-table {name}: no row matches {wanted}")
    missing = [c for c in columns if not any(c in r for r in rows)]
    if missing:
        raise ValueError(f"bench-table {name}: no column {missing} in its rows")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n\n" + _run_line(name)


def markdown_file(name: str) -> str:
    """A bench-md marker: the run's own Markdown table, without its title line."""
    text = (RESULTS / f"{name}.md").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.startswith("# "))
    return body.strip() + ("\n\n" + _run_line(name) if (RESULTS / f"{name}.json").exists() else "")


def render(markdown: str) -> str:
    """markdown with every marker replaced by its table."""
    def replace(match: re.Match) -> str:
        kind, spec = match.groups()
        if kind == "bench-table":
            return table(spec)
        if kind == "bench-md":
            return markdown_file(spec.strip())
        return include(spec.strip())
    return MARKER.sub(replace, markdown)


def include(path: str) -> str:
    """An include marker: the file's text without its first line if that is a heading."""
    lines = (ROOT / path).read_text().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join(lines).strip()


def on_page_markdown(markdown, page, config, files, **kwargs):  # the MkDocs hook
    return render(markdown)
