"""The docs figure of every LRP composite and excitation backprop: the bundled EfficientNet-Lite0
on two sample photos, one row per photo; relevance shown signed (blue < 0 < red), excitation
backprop's maps in [0, 1].

    python examples/lrp_figure.py [--out docs/lrp.jpg] [--size 224]
"""
from __future__ import annotations

import argparse

import torch
from PIL import Image

import featvis_fast as fv
from featvis_fast import demo_panels
from featvis_fast.backprop.lrp import COMPOSITES
from featvis_fast.models import IMAGENET_MEAN, IMAGENET_STD


def make_figure(out: str, size: int = 224, samples=("chelsea", "coffee")) -> Image.Image:
    model, preprocess = fv.load_model()
    images = [fv.sample_image(s).convert("RGB").resize((size, size)) for s in samples]
    x = torch.cat([preprocess(im, size=size) for im in images])
    with torch.no_grad():
        target = model(x).argmax(1)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    box = {"low": (0 - mean) / std, "high": (1 - mean) / std}  # the pixels' range after normalization
    maps = {}
    for composite in COMPOSITES:
        kwargs = box if composite == "epsilon-gamma-box" else {}
        maps[composite] = (fv.signed_map(fv.lrp(model, x, target, composite=composite, **kwargs)), "signed")
    for name, kwargs in (("excitation backprop", {}),
                         ("contrastive EB", {"contrastive": True, "contrast_layer": "_blocks.15"})):
        m = fv.excitation_backprop(model, x, target, "_blocks.10", upsample=True, **kwargs)
        maps[name] = (m / m.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None], "cam")
    figure = demo_panels.attribution_grid(images, target, samples, maps, cell=size)
    figure.save(out)
    return figure


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="docs/lrp.jpg")
    p.add_argument("--size", type=int, default=224)
    a = p.parse_args()
    make_figure(a.out, a.size)
    print("wrote", a.out)
