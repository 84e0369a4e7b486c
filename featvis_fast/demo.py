"""`featvis demo`: every visualization the package has, on the bundled model and sample photos."""
from __future__ import annotations

import os

import torch

from .images import load_image
from .models import load_model
from .render import grid
from .similarity import similarity_overlay

DEMO_IMAGES = ("chelsea", "coffee", "astronaut")
DEMO_LAYERS = ("_blocks.3", "_blocks.10", "_blocks.15")


def _reference_pixels(width: int, height: int) -> list[tuple[int, int]]:
    """Two reference pixels (y, x): the centre and a point in the upper left third."""
    return [(height // 2, width // 2), (height // 4, width // 4)]


def similarity_grid(model, preprocess, device: str = "cpu", backend: str | None = None):
    """Rows: sample photos; columns: the photo, then a similarity map per (layer, pixel)."""
    tiles, labels = [], []
    for name in DEMO_IMAGES:
        image = load_image(name)
        with torch.no_grad():
            top1 = int(model(preprocess(image).to(device)).argmax())
        tiles.append(image)
        labels.append(f"{name} (class {top1})")
        for layer in DEMO_LAYERS:
            for y, x in _reference_pixels(image.width, image.height):
                tiles.append(similarity_overlay(model, preprocess, image, layer, (y, x), backend=backend,
                                                device=device))
                labels.append(f"{layer} @ y={y},x={x}")
    columns = 1 + len(DEMO_LAYERS) * 2
    return grid(tiles, columns, labels, cell=224)


def run_demo(out_dir: str = "featvis-demo", device: str = "cpu", backend: str | None = None,
             attribution_display: str = "clipped") -> list[str]:
    """Write the demo images (and the dissection report) under out_dir.

    Args:
        out_dir: the output directory (created if missing).
        device: where the bundled model runs.
        backend: kernel backend for every panel (None: automatic per device).
        attribution_display: "clipped" (Captum's 2% outlier clipping) or "featvis" (divided by
            the maximum) for saliency and guided backprop.

    Returns:
        the paths written: similarity_grid.png, attributions.png, perturbation.png,
        maximize.png, invert.png, the dissection report's index.html and the evaluation
        report's (evaluation/index.html: saliency and Grad-CAM scored by three metrics).
    """
    from . import demo_panels

    os.makedirs(out_dir, exist_ok=True)
    model, preprocess = load_model(device=device)
    paths = []

    def save(name: str, image) -> None:
        paths.append(os.path.join(out_dir, name))
        image.save(paths[-1])

    save("similarity_grid.png", similarity_grid(model, preprocess, device, backend))
    save("attributions.png", demo_panels.attributions(model, preprocess, DEMO_IMAGES, device,
                                                    attribution_display, backend=backend))
    save("perturbation.png", demo_panels.perturbations(model, preprocess, DEMO_IMAGES, device, backend=backend))
    for name, image in demo_panels.reconstructions(model, preprocess, device, backend=backend).items():
        save(name, image)
    paths.append(demo_panels.dissection_report(out_dir, backend=backend))
    paths.append(demo_panels.evaluation_report(model, preprocess, DEMO_IMAGES, out_dir, device, backend=backend))
    return paths
