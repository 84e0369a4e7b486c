"""The dissection report: index.html with a summary plot (interpretable units per category, and
the most frequent concepts) and, per unit, its label, IoU, threshold and top images with the
unit's mask (up(A_u) > T_u) outlined. Plain HTML and PNGs drawn with Pillow."""
from __future__ import annotations

import html
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

BAR = (216, 90, 40)


def _bars(title: str, items: list[tuple[str, int]], width: int = 420) -> Image.Image:
    row, left = 18, 110
    im = Image.new("RGB", (width, 24 + row * max(1, len(items))), "white")
    d = ImageDraw.Draw(im)
    d.text((4, 4), title, fill="black")
    top = max([v for _, v in items] + [1])
    for i, (name, value) in enumerate(items):
        y = 22 + i * row
        d.text((4, y + 2), name[:16], fill="black")
        d.rectangle([left, y + 2, left + int((width - left - 40) * value / top), y + row - 3], fill=BAR)
        d.text((width - 34, y + 2), str(value), fill="black")
    return im


def summary_plot(result) -> Image.Image:
    """Interpretable units per category, beside the concepts most units were labelled with."""
    per_category = list(result.counts_per_category().items())
    per_concept = Counter(label for label in result.labels if label is not None).most_common(12)
    a = _bars(f"interpretable units per category ({int(result.interpretable.sum())} of "
              f"{len(result.labels)}, IoU >= {result.iou_threshold})", per_category)
    b = _bars("most frequent labels", per_concept)
    out = Image.new("RGB", (a.width + b.width + 10, max(a.height, b.height)), "white")
    out.paste(a, (0, 0))
    out.paste(b, (a.width + 10, 0))
    return out


def _masked(thumb: torch.Tensor, mask: torch.Tensor) -> Image.Image:
    """The thumbnail dimmed outside the unit's mask, with the mask's edge in orange."""
    img = thumb.permute(1, 2, 0).numpy().astype(np.float32)
    m = mask.numpy()
    img = np.where(m[..., None], img, img * 0.35)
    edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
    img[edge] = BAR
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def write_report(result, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "units").mkdir(exist_ok=True)
    summary_plot(result).save(directory / "summary.png")
    index, best = result.best
    rows = []
    for u, (label, ok) in enumerate(zip(result.labels, result.interpretable.tolist())):
        cells = []
        for rank, image in enumerate(result.top_images[u].tolist()):
            thumb, mask = result.thumbnails.get(image), result.unit_masks.get((u, image))
            if thumb is None or mask is None:
                continue
            name = f"units/unit-{u:04d}-{rank}.png"
            _masked(thumb, mask).save(directory / name)
            cells.append(f'<img src="{name}" title="image {image}">')
        concept = result.concepts[int(index[u])]
        verdict = html.escape(label) if ok else "<i>uninterpretable</i>"
        rows.append(f"<tr><td>{u}</td><td>{verdict}</td><td>{html.escape(concept.name)} "
                    f"({html.escape(concept.category)})</td><td>{float(best[u]):.4f}</td>"
                    f"<td>{float(result.thresholds[u]):.4g}</td><td>{''.join(cells)}</td></tr>")
    page = f"""<!doctype html><meta charset="utf-8"><title>Dissection of {html.escape(result.layer)}</title>
<style>body{{font-family:sans-serif}} td{{padding:2px 8px;vertical-align:middle}} img{{margin:1px}}</style>
<h1>Network Dissection: {html.escape(result.layer)}</h1>
<p>{result.n_images} images, {len(result.concepts)} concepts, quantile {result.quantile}, IoU threshold
{result.iou_threshold}. Masks: the unit's upsampled activation above its threshold.</p>
<img src="summary.png">
<table><tr><th>unit</th><th>label</th><th>best concept</th><th>IoU</th><th>threshold</th><th>top images</th></tr>
{''.join(rows)}
</table>
"""
    (directory / "index.html").write_text(page)
    return directory / "index.html"
