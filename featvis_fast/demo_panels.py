"""The panels of `featvis demo` beyond similarity: one small run of each family on the bundled
model and sample photos (sizes and step counts chosen to finish in about a minute on 2 cores)."""
from __future__ import annotations

import os

import torch
from PIL import Image

from . import backprop, dissection, perturbation, reconstruction
from .images import load_image
from .render import attribution_heatmap, clipped_heatmap, colorize, grid, overlay, to_pil

# how saliency and guided backprop are shown: Captum's percentile clipping (2% outliers) or
# FeatureVis' division by the maximum (nearly black where a few pixels dominate)
ATTRIBUTION_DISPLAYS = {"clipped": clipped_heatmap, "featvis": attribution_heatmap}


def _rgb(heat: torch.Tensor, colormap: str = "gray") -> Image.Image:
    return Image.fromarray(colorize(heat, colormap, stretch=(0.0, 1.0)).numpy(), "RGBA").convert("RGB")


def _photos(preprocess, names, size: int, device):
    images = [load_image(n).resize((size, size)) for n in names]
    return images, torch.cat([preprocess(im, size=size) for im in images]).to(device)


def attributions(model, preprocess, names, device, display: str = "clipped",
                 backend: str | None = None) -> Image.Image:
    """Per photo: saliency, guided backprop and Grad-CAM (_blocks.15) for its top-1 class.

    Args:
        display: "clipped" (render.clipped_heatmap, Captum's default) or "featvis"
            (render.attribution_heatmap) for saliency and guided backprop.
        backend: kernel backend (None: automatic).
    Returns:
        a grid of (photo, saliency, guided backprop, Grad-CAM) rows.
    """
    if display not in ATTRIBUTION_DISPLAYS:
        raise ValueError(f"display must be one of {tuple(ATTRIBUTION_DISPLAYS)}, got {display!r}")
    show = ATTRIBUTION_DISPLAYS[display]
    images, x = _photos(preprocess, names, 224, device)
    target = model(x).argmax(1)
    maps = {"saliency": show(backprop.saliency(model, x, target, backend=backend)),
            "guided backprop": show(backprop.guided_backprop(model, x, target, backend=backend))}
    cam = backprop.gradcam(model, x, target, "_blocks.15", upsample=True, backend=backend)
    tiles, labels = [], []
    for b, image in enumerate(images):
        tiles += [image, _rgb(maps["saliency"][b]), _rgb(maps["guided backprop"][b]),
                  overlay(image, colorize(cam[b] / cam[b].max().clamp_min(1e-12), "fire", stretch=(0.0, 1.0)))]
        labels += [f"{names[b]} (class {int(target[b])})", "saliency", "guided backprop", "Grad-CAM"]
    return grid(tiles, 4, labels, cell=224)


def perturbations(model, preprocess, names, device, backend: str | None = None) -> Image.Image:
    """Per photo: occlusion (window 32, stride 16) and RISE (500 masks) for its top-1 class."""
    images, x = _photos(preprocess, names, 224, device)
    target = model(x).argmax(1)
    occ = perturbation.occlusion(model, x, target, window=32, stride=16, progress=False, backend=backend)
    rise = perturbation.rise(model, x, target, n_masks=500, progress=False, backend=backend)
    tiles, labels = [], []
    for b, image in enumerate(images):
        o = occ[b].clamp_min(0) / occ[b].clamp_min(0).max().clamp_min(1e-12)
        r = (rise[b] - rise[b].min()) / (rise[b].max() - rise[b].min()).clamp_min(1e-12)
        tiles += [image, overlay(image, colorize(o, "fire", stretch=(0.0, 1.0))),
                  overlay(image, colorize(r, "fire", stretch=(0.0, 1.0)))]
        labels += [names[b], "occlusion 32/16", "RISE 500 masks"]
    return grid(tiles, 3, labels, cell=224)


def reconstructions(model, preprocess, device, backend: str | None = None) -> dict[str, Image.Image]:
    """Four channels of _blocks.10 maximized together, and a photo inverted from _blocks.6."""
    channels = (3, 37, 58, 90)
    goal = reconstruction.Each([reconstruction.Channel("_blocks.10", c) for c in channels])
    maxi = reconstruction.maximize(model, goal, steps=128, size=128, progress=False, backend=backend)
    images, x = _photos(preprocess, ["chelsea"], 128, device)
    inv = reconstruction.invert(model, x, "_blocks.6", steps=100, progress=False, backend=backend)
    return {"maximize.png": grid([to_pil(i) for i in maxi], 4, [f"_blocks.10:{c}" for c in channels], cell=128),
            "invert.png": grid([images[0], to_pil(inv[0])], 2, ["chelsea", "inverted from _blocks.6"], cell=128)}


def dissection_report(out_dir: str, backend: str | None = None) -> str:
    """Network Dissection of the planted model on the synthetic shapes (known answers)."""
    result = dissection.dissect(dissection.PlantedNet(), dissection.SyntheticShapes(n=256), "detectors", top_n=4,
                                mean=(0, 0, 0), std=(1, 1, 1), progress=False, backend=backend)
    return str(result.save_report(os.path.join(out_dir, "dissection")))
