"""The README figure: saliency, guided backprop, Grad-CAM, guided Grad-CAM and LRP of the bundled
EfficientNet-Lite0 on two sample photos, one row per photo.

    python examples/backprop_figure.py [--out docs/backprop.png] [--size 224]
"""
from __future__ import annotations

import argparse

import torch
from PIL import Image

import featvis_fast as fv


def _gray_rgba(heat: torch.Tensor, colormap: str, stretch=(0.0, 1.0)) -> Image.Image:
    return Image.fromarray(fv.colorize(heat, colormap, stretch=stretch).numpy(), "RGBA").convert("RGB")


def make_figure(out: str, size: int = 224, samples=("chelsea", "coffee")) -> Image.Image:
    model, preprocess = fv.load_model()
    images = [fv.sample_image(s).convert("RGB").resize((size, size)) for s in samples]
    x = torch.cat([preprocess(im, size=size) for im in images])
    target = model(x).argmax(1)
    layer = "_blocks.15"
    maps = {
        "saliency": fv.clipped_heatmap(fv.saliency(model, x, target)),  # Captum's display (2% outliers)
        "guided backprop": fv.clipped_heatmap(fv.guided_backprop(model, x, target)),
        "Grad-CAM": fv.gradcam(model, x, target, layer, upsample=True),
        "guided Grad-CAM": fv.clipped_heatmap(fv.guided_gradcam(model, x, target, layer)),
        "LRP-epsilon": fv.signed_map(fv.lrp(model, x, target)),
    }
    panels, labels = [], []
    for b, image in enumerate(images):
        panels.append(image)
        labels.append(f"{samples[b]} (class {int(target[b])})")
        for name, m in maps.items():
            if name == "Grad-CAM":
                cam = m[b] / m[b].max().clamp_min(1e-12)
                panels.append(fv.overlay(image, fv.colorize(cam, "fire", stretch=(0.0, 1.0)), alpha=0.6))
            elif name == "LRP-epsilon":
                panels.append(_gray_rgba(m[b], "bwr", stretch=(-1.0, 1.0)))
            else:
                panels.append(_gray_rgba(m[b], "gray"))
            labels.append(name)
    figure = fv.grid(panels, columns=1 + len(maps), labels=labels, cell=size)
    figure.save(out)
    return figure


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="docs/backprop.png")
    p.add_argument("--size", type=int, default=224)
    a = p.parse_args()
    make_figure(a.out, a.size)
    print("wrote", a.out)
