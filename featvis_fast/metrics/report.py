"""The evaluation report: per (method, metric) the mean and its 95% confidence interval, a ranking of
the methods per metric, the mean curves of the curve metrics; as results.json, results.csv and
index.html (a table, the rankings and the curves as inline SVG plots).

Confidence interval: mean +- t(0.975, n - 1) * sd / sqrt(n) over the images (Student's t; a
single image gives an interval of zero width, marked as such).
"""
from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..jobs import atomic_write, write_json
from .registry import REGISTRY
from .runner import Cell, json_safe

PALETTE = ("#d8572a", "#3a6ea5", "#5b8e3d", "#8e4fa3", "#c9a227", "#2a9d8f", "#b5446e", "#6b6b6b")


@dataclass
class Summary:
    """Mean, 95% confidence interval and rank (1 = best) of one method on one metric over n images."""
    method: str
    metric: str
    n: int
    mean: float
    ci_low: float
    ci_high: float
    rank: int = 0


def _t_quantile(dof: int) -> float:
    from scipy.stats import t  # scipy comes with scikit-learn, a dependency

    return float(t.ppf(0.975, dof))


def summarize(cells: Sequence[Cell]) -> list[Summary]:
    """One Summary per cell, ranked within each metric by the metric's better direction.

    Args:
        cells: the evaluation's cells (featvis_fast.metrics.evaluate).

    Returns:
        the summaries in the cells' order.
    """
    summaries = []
    for cell in cells:
        values = cell.scores[torch.isfinite(cell.scores)]
        n = int(values.numel())
        mean = float(values.mean()) if n else math.nan
        half = _t_quantile(n - 1) * float(values.std()) / math.sqrt(n) if n > 1 else 0.0
        summaries.append(Summary(cell.method, cell.metric, n, mean, mean - half, mean + half))
    for metric in dict.fromkeys(s.metric for s in summaries):
        group = [s for s in summaries if s.metric == metric]
        better = REGISTRY[metric].higher_is_better
        ordered = sorted(group, key=lambda s: (math.isnan(s.mean), -s.mean if better else s.mean))
        for rank, s in enumerate(ordered, 1):
            s.rank = rank
    return summaries


def _svg_curves(metric: str, cells: Sequence[Cell], width: int = 360, height: int = 220) -> str:
    """Mean curve per method as an inline SVG line plot (x from 0 to 1 over the curve's points)."""
    curves = [(c.method, c.curves.mean(0)) for c in cells if c.metric == metric and c.curves is not None]
    if not curves:
        return ""
    low = min(float(m.min()) for _, m in curves)
    high = max(float(m.max()) for _, m in curves)
    span = high - low or 1.0
    left, right, top, bottom = 46, 10, 10, 34
    pw, ph = width - left - right, height - top - bottom

    def point(i, n, v):
        return f"{left + pw * i / max(n - 1, 1):.1f},{top + ph * (1 - (float(v) - low) / span):.1f}"

    lines = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="curve">',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
             f'<text x="{left}" y="{height - 18}" font-size="10">0</text>',
             f'<text x="{left + pw - 6}" y="{height - 18}" font-size="10">1</text>',
             f'<text x="{left + pw / 2 - 60}" y="{height - 4}" font-size="10">'
             f'{html.escape(REGISTRY[metric].curve_label or "")}</text>',
             f'<text x="2" y="{top + 8}" font-size="10">{high:.3g}</text>',
             f'<text x="2" y="{top + ph}" font-size="10">{low:.3g}</text>']
    for i, (method, mean) in enumerate(curves):
        colour = PALETTE[i % len(PALETTE)]
        pts = " ".join(point(j, mean.numel(), v) for j, v in enumerate(mean))
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{pts}"/>')
        lines.append(f'<text x="{left + 6}" y="{top + 14 + 12 * i}" font-size="10" fill="{colour}">'
                     f'{html.escape(method)}</text>')
    lines.append("</svg>")
    return "\n".join(lines)


def _page(summaries: Sequence[Summary], cells: Sequence[Cell], title: str) -> str:
    methods = list(dict.fromkeys(s.method for s in summaries))
    metrics = list(dict.fromkeys(s.metric for s in summaries))
    by = {(s.method, s.metric): s for s in summaries}
    head = "".join(f"<th>{html.escape(m)} {'&uarr;' if REGISTRY[m].higher_is_better else '&darr;'}</th>"
                   for m in metrics)
    rows = []
    for method in methods:
        tds = []
        for metric in metrics:
            s = by[(method, metric)]
            best = ' class="best"' if s.rank == 1 and len(methods) > 1 else ""
            tds.append(f"<td{best}>{s.mean:.4g}<br><small>[{s.ci_low:.4g}, {s.ci_high:.4g}]</small></td>")
        rows.append(f"<tr><th>{html.escape(method)}</th>{''.join(tds)}</tr>")
    rankings = "".join(
        f"<li><b>{html.escape(metric)}</b>: "
        + " &gt; ".join(html.escape(s.method) for s in sorted((by[(m, metric)] for m in methods),
                                                              key=lambda s: s.rank)) + "</li>"
        for metric in metrics)
    plots = "".join(f"<figure>{svg}<figcaption>{html.escape(metric)}: mean curve per method</figcaption></figure>"
                    for metric in metrics if (svg := _svg_curves(metric, cells)))
    n = max((s.n for s in summaries), default=0)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
td.best {{ background: #fde8dc; font-weight: bold; }} small {{ color: #666; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(methods)} methods x {len(metrics)} metrics on {n} images. Each cell: the mean over the images and its
95% confidence interval (Student's t). &uarr; higher is better, &darr; lower is better; the best method per
metric is highlighted.</p>
<table><tr><th>method</th>{head}</tr>
{''.join(rows)}
</table>
<h2>Ranking per metric</h2><ul>{rankings}</ul>
{'<h2>Curves</h2>' + plots if plots else ''}
</body></html>
"""


def write_report(cells: Sequence[Cell], out: str | Path, title: str = "featvis evaluate") -> Path:
    """results.json, results.csv and index.html under `out`.

    Args:
        cells: the evaluation's cells.
        out: the output directory.
        title: the page's title.

    Returns:
        the path of index.html.
    """
    out = Path(out)
    summaries = summarize(cells)
    by = {(s.method, s.metric): s for s in summaries}
    write_json(out / "results.json", json_safe({"summary": [vars(s) for s in summaries], "cells": [
        {"method": c.method, "metric": c.metric, "images": c.names, "scores": c.scores.tolist(),
         "mean_curve": None if c.curves is None else c.curves.mean(0).tolist(),
         "higher_is_better": REGISTRY[c.metric].higher_is_better, **{k: getattr(by[(c.method, c.metric)], k)
                                                                      for k in ("mean", "ci_low", "ci_high", "rank")}}
        for c in cells]}))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["method", "metric", "n", "mean", "ci_low", "ci_high", "rank", "higher_is_better"])
    for s in summaries:
        writer.writerow([s.method, s.metric, s.n, repr(s.mean), repr(s.ci_low), repr(s.ci_high), s.rank,
                         REGISTRY[s.metric].higher_is_better])
    atomic_write(out / "results.csv", lambda fh: fh.write(buffer.getvalue()), "w")
    page = out / "index.html"
    atomic_write(page, lambda fh: fh.write(_page(summaries, cells, title)), "w")
    return page
