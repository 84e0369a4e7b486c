"""The README figures of the reconstruction family on the bundled EfficientNet-Lite0:
docs/maximize.png   channels of _blocks.10 maximized together (Lucid's defaults: FFT image,
                    standard transforms, Adam), one batch
docs/invert.png     a sample photo and its inversions from _blocks.2, _blocks.6 and _blocks.10
                    (FeatureVis preset)

    python examples/reconstruction_figure.py [--out docs] [--size 160] [--steps 256] [--invert-steps 200]
"""
from __future__ import annotations

import argparse
import os

import torch
from PIL import Image

import featvis_fast as fv

CHANNELS = (3, 12, 37, 41, 58, 77, 90, 101)
INVERT_LAYERS = ("_blocks.2", "_blocks.6", "_blocks.10")


def to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray((image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())


def maximize_figure(out: str, size: int = 160, steps: int = 256, channels=CHANNELS) -> Image.Image:
    model, _ = fv.load_model()
    goal = fv.reconstruction.Each([fv.reconstruction.Channel("_blocks.10", c) for c in channels])
    images = fv.maximize(model, goal, steps=steps, size=size, progress=False)
    figure = fv.grid([to_pil(i) for i in images], columns=len(channels) // 2 or 1,
                     labels=[f"_blocks.10:{c}" for c in channels], cell=size)
    figure.save(out)
    return figure


def invert_figure(out: str, size: int = 160, steps: int = 200, sample: str = "chelsea",
                  layers=INVERT_LAYERS) -> Image.Image:
    model, preprocess = fv.load_model()
    photo = fv.sample_image(sample).convert("RGB").resize((size, size))
    x = preprocess(photo, size=size)
    panels, labels = [photo], [sample]
    for layer in layers:
        panels.append(to_pil(fv.invert(model, x, layer, steps=steps, progress=False)[0]))
        labels.append(f"from {layer}")
    figure = fv.grid(panels, columns=len(panels), labels=labels, cell=size)
    figure.save(out)
    return figure


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="docs")
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--steps", type=int, default=256)
    p.add_argument("--invert-steps", type=int, default=200)
    a = p.parse_args()
    maximize_figure(os.path.join(a.out, "maximize.png"), a.size, a.steps)
    invert_figure(os.path.join(a.out, "invert.png"), a.size, a.invert_steps)
    print("wrote", os.path.join(a.out, "maximize.png"), os.path.join(a.out, "invert.png"))
