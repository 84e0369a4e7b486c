"""The README figure of Network Dissection: the report's summary plot and each unit's top images
with its mask, for the hand-built PlantedNet on the synthetic shapes dataset (known answers:
units 0-4 are red, green, blue, horizontal and vertical bar detectors, unit 5 is noise).

    python examples/dissection_figure.py [--out docs/dissection.png] [--images 512]
"""
from __future__ import annotations

import argparse

from PIL import Image

import featvis_fast as fv
from featvis_fast.dissection import PlantedNet, SyntheticShapes
from featvis_fast.dissection.report import _masked, summary_plot


def make_figure(out: str, images: int = 512, top: int = 5) -> Image.Image:
    result = fv.dissect(PlantedNet(), SyntheticShapes(n=images, seed=0), "detectors", top_n=top,
                        mean=(0, 0, 0), std=(1, 1, 1), progress=False)
    index, best = result.best
    panels, labels = [], []
    for u in range(len(result.labels)):
        for rank, image in enumerate(result.top_images[u].tolist()):
            panels.append(_masked(result.thumbnails[image], result.unit_masks[u, image]))
            name = result.labels[u] or "uninterpretable"
            labels.append(f"{u}: {name} {float(best[u]):.2f}" if rank == 0 else f"top {rank + 1}")
    tiles = fv.grid(panels, columns=top, labels=labels, cell=96)
    summary = summary_plot(result)
    figure = Image.new("RGB", (max(tiles.width, summary.width), tiles.height + summary.height + 8), "white")
    figure.paste(summary, (0, 0))
    figure.paste(tiles, (0, summary.height + 8))
    figure.save(out)
    return figure


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="docs/dissection.png")
    p.add_argument("--images", type=int, default=512)
    a = p.parse_args()
    make_figure(a.out, a.images)
    print("wrote", a.out)
