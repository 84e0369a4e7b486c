"""The README figures of the reconstruction family on the bundled EfficientNet-Lite0:
docs/maximize.png   channels of _blocks.10 maximized together (Lucid's defaults: FFT image,
                    standard transforms, Adam), one batch
docs/invert.png     a sample photo and its inversions from _blocks.2, _blocks.6 and _blocks.10
                    (FeatureVis preset)
docs/class_agnostic.png
                    class-agnostic visualization of _blocks.15 (Stergiou preset) from crops and
                    flips of the sample photos: each cluster's weighted start blend and its result

    python examples/reconstruction_figure.py [--out docs] [--size 160] [--steps 256] [--invert-steps 200]
                                             [--class-agnostic-steps 400]
"""
from __future__ import annotations

import argparse
import os

import torch
from PIL import Image

import featvis_fast as fv

CHANNELS = (3, 12, 37, 41, 58, 77, 90, 101)
INVERT_LAYERS = ("_blocks.2", "_blocks.6", "_blocks.10")


def maximize_figure(out: str, size: int = 160, steps: int = 256, channels=CHANNELS) -> Image.Image:
    model, _ = fv.load_model()
    goal = fv.reconstruction.Each([fv.reconstruction.Channel("_blocks.10", c) for c in channels])
    images = fv.maximize(model, goal, steps=steps, size=size, progress=False)
    figure = fv.grid([fv.render.to_pil(i) for i in images], columns=len(channels) // 2 or 1,
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
        panels.append(fv.render.to_pil(fv.invert(model, x, layer, steps=steps, progress=False)[0]))
        labels.append(f"from {layer}")
    figure = fv.grid(panels, columns=len(panels), labels=labels, cell=size)
    figure.save(out)
    return figure


def photo_set(preprocess, size: int) -> torch.Tensor:
    """(20, 3, size, size): each sample photo and its four corner crops of 70%, every other view
    mirrored: a small set with several views of each photo."""
    views = []
    for name in fv.sample_images():
        photo = fv.sample_image(name).convert("RGB")
        w, h = photo.size
        cw, ch = int(0.7 * w), int(0.7 * h)
        crops = [photo] + [photo.crop((x, y, x + cw, y + ch)) for x in (0, w - cw) for y in (0, h - ch)]
        views += [c if k % 2 == 0 else c.transpose(Image.FLIP_LEFT_RIGHT) for k, c in enumerate(crops)]
    return torch.cat([preprocess(v, size=size) for v in views])


def class_agnostic_figure(out: str, size: int = 160, steps: int = 400, clusters: int = 4,
                          layer: str = "_blocks.15") -> Image.Image:
    model, preprocess = fv.load_model()
    x = photo_set(preprocess, size)
    result = fv.class_agnostic(model, x, layer, steps, size=size, clusters=clusters, per_cluster=4, pca=16,
                               progress=False)
    k = result.images.shape[0]
    panels = [fv.render.to_pil(i) for i in result.start_images] + [fv.render.to_pil(i) for i in result.images]
    labels = [f"cluster {c}: start" for c in range(k)] + [f"cluster {c}: result" for c in range(k)]
    figure = fv.grid(panels, columns=k, labels=labels, cell=size)
    figure.save(out)
    return figure


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="docs")
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--steps", type=int, default=256)
    p.add_argument("--invert-steps", type=int, default=200)
    p.add_argument("--class-agnostic-steps", type=int, default=400)
    p.add_argument("--only", choices=["maximize", "invert", "class_agnostic"], default=None)
    a = p.parse_args()
    for name, make, steps in (("maximize", maximize_figure, a.steps), ("invert", invert_figure, a.invert_steps),
                              ("class_agnostic", class_agnostic_figure, a.class_agnostic_steps)):
        if a.only in (None, name):
            make(os.path.join(a.out, f"{name}.png"), a.size, steps)
            print("wrote", os.path.join(a.out, f"{name}.png"))
