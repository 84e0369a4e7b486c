"""The README figure: occlusion (Captum's score drop, and FeatureVis' activation change over two
window sizes) and RISE of the bundled EfficientNet-Lite0 on two sample photos, one row per photo.

    python examples/perturbation_figure.py [--out docs/perturbation.png] [--size 224] [--masks 2000]
"""
from __future__ import annotations

import argparse

import torch

import featvis_fast as fv


def make_figure(out: str, size: int = 224, masks: int = 2000, samples=("chelsea", "coffee")):
    model, preprocess = fv.load_model()
    images = [fv.sample_image(s).convert("RGB").resize((size, size)) for s in samples]
    x = torch.cat([preprocess(im, size=size) for im in images])
    target = model(x).argmax(1)
    w = max(4, size // 7)
    maps = {
        f"occlusion {w}px": fv.occlusion(model, x, target, window=w, stride=w // 2, progress=False),
        "FeatureVis occlusion": fv.occlusion(model, x, window=[w, w // 2], stride=[w // 2, w // 4], fill="mean",
                                             measure="_blocks.15", positions="overhang", progress=False),
        "RISE": fv.rise(model, x, target, n_masks=masks, progress=False),
    }
    panels, labels = [], []
    for b, image in enumerate(images):
        panels.append(image)
        labels.append(f"{samples[b]} (class {int(target[b])})")
        for name, m in maps.items():
            if name == "RISE":  # RISE maps sit on a large common offset (the mean score): stretch min-max
                heat = (m[b] - m[b].min()) / (m[b].max() - m[b].min()).clamp_min(1e-12)
            else:
                heat = m[b].clamp_min(0)
                heat = heat / heat.max().clamp_min(1e-12)
            panels.append(fv.overlay(image, fv.colorize(heat, "fire", stretch=(0.0, 1.0)), alpha=0.6))
            labels.append(name)
    figure = fv.grid(panels, columns=1 + len(maps), labels=labels, cell=size)
    figure.save(out)
    return figure


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="docs/perturbation.png")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--masks", type=int, default=2000)
    a = p.parse_args()
    make_figure(a.out, a.size, a.masks)
    print("wrote", a.out)
