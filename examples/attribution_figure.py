"""The docs figure of every attribution method: the gradient family and the CAM family of the
bundled EfficientNet-Lite0 on two sample photos, one row per photo (featvis_fast.demo_panels).

    python examples/attribution_figure.py [--out docs/attribution.jpg] [--size 224] [--samples 16]
"""
from __future__ import annotations

import argparse

import torch
from PIL import Image

import featvis_fast as fv
from featvis_fast import demo_panels


def make_figure(out: str, size: int = 224, samples: int = 16, names=("chelsea", "coffee")) -> Image.Image:
    model, preprocess = fv.load_model()
    images = [fv.sample_image(n).convert("RGB").resize((size, size)) for n in names]
    x = torch.cat([preprocess(im, size=size) for im in images])
    with torch.no_grad():
        target = model(x).argmax(1)
    maps = demo_panels.attribution_maps(model, x, target, samples=samples)
    figure = demo_panels.attribution_grid(images, target, names, maps, cell=size)
    figure.save(out)
    return figure


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="docs/attribution.jpg")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--samples", type=int, default=16)
    a = p.parse_args()
    make_figure(a.out, a.size, a.samples)
    print("wrote", a.out)
