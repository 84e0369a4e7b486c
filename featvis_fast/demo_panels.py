"""The panels of `featvis demo` beyond similarity: one small run of each family on the bundled
model and sample photos (sizes and step counts chosen to finish in about a minute on 2 cores)."""
from __future__ import annotations

import os
import shutil

import torch
from PIL import Image

from . import backprop, dissection, metrics, perturbation, reconstruction
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


def _unit(maps: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> each map divided by its maximum (CAMs are >= 0), for display."""
    peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12)
    return maps / peak[:, None, None]


def attribution_maps(model, x: torch.Tensor, target: torch.Tensor, *, layer: str = "_blocks.15", samples: int = 8,
                     display: str = "clipped", backend: str | None = None) -> dict[str, tuple[torch.Tensor, str]]:
    """Every attribution method of the package on one batch, ready to show.

    Args:
        model: the CNN.
        x: images (B, 3, H, W).
        target: (B,) classes.
        layer: the CAM layer.
        samples: integration steps, noise samples and SHAP samples (small for a quick look).
        display: "clipped" or "featvis", for the pixel-space maps (see ATTRIBUTION_DISPLAYS).
        backend: kernel backend (None: automatic).

    Returns:
        name -> ((B, H, W) map in [0, 1], "pixels" (shown in gray) or "cam" (overlaid on the photo)).
    """
    if display not in ATTRIBUTION_DISPLAYS:
        raise ValueError(f"display must be one of {tuple(ATTRIBUTION_DISPLAYS)}, got {display!r}")
    show = ATTRIBUTION_DISPLAYS[display]
    gen = torch.Generator().manual_seed(0)
    baselines = torch.cat([torch.zeros_like(x[:1]), torch.randn(x[:1].shape, generator=gen).to(x)])
    pixels = {
        "saliency": backprop.saliency(model, x, target, backend=backend),
        "guided backprop": backprop.guided_backprop(model, x, target, backend=backend),
        "input x gradient": backprop.input_x_gradient(model, x, target, backend=backend),
        "integrated gradients": backprop.integrated_gradients(model, x, target, steps=samples, backend=backend),
        "SmoothGrad": backprop.smoothgrad(backprop.saliency, model, x, target, samples=samples, generator=gen,
                                          backend=backend),
        "GradientSHAP": backprop.gradient_shap(model, x, target, baselines, samples=samples, generator=gen,
                                               backend=backend),
    }
    cam_kw = dict(upsample=True, backend=backend)
    cams = {
        "Grad-CAM": backprop.gradcam(model, x, target, layer, **cam_kw),
        "Grad-CAM++": backprop.gradcam_pp(model, x, target, layer, **cam_kw),
        "XGrad-CAM": backprop.xgradcam(model, x, target, layer, **cam_kw),
        "LayerCAM": backprop.layercam(model, x, target, layer, **cam_kw),
        "HiResCAM": backprop.hirescam(model, x, target, layer, **cam_kw),
        "Eigen-CAM": backprop.eigencam(model, x, target, layer, **cam_kw),
        "EigenGrad-CAM": backprop.eigengradcam(model, x, target, layer, **cam_kw),
        "FullGrad": backprop.fullgrad(model, x, target),
        "Score-CAM": perturbation.scorecam(model, x, target, layer, progress=False, **cam_kw),
        "Ablation-CAM": perturbation.ablationcam(model, x, target, layer, progress=False, **cam_kw),
    }
    return {**{k: (show(v), "pixels") for k, v in pixels.items()}, **{k: (_unit(v), "cam") for k, v in cams.items()}}


def attribution_grid(images: list[Image.Image], target: torch.Tensor, names, maps: dict, cell: int) -> Image.Image:
    """Rows of (photo, every map), labelled. maps: name -> ((B, H, W) map, kind), kind "pixels"
    (in [0, 1], gray), "signed" (in [-1, 1], blue-white-red) or "cam" (in [0, 1], on the photo)."""
    tiles, labels = [], []
    for b, image in enumerate(images):
        tiles.append(image)
        labels.append(f"{names[b]} (class {int(target[b])})")
        for name, (m, kind) in maps.items():
            tile = m[b].detach().float().cpu()
            if kind == "signed":
                tiles.append(Image.fromarray(colorize(tile, "bwr", stretch=(-1.0, 1.0)).numpy(), "RGBA").convert("RGB"))
            else:
                tiles.append(_rgb(tile) if kind == "pixels" else
                             overlay(image, colorize(tile, "fire", stretch=(0.0, 1.0))))
            labels.append(name)
    return grid(tiles, 1 + len(maps), labels, cell=cell)


def attributions(model, preprocess, names, device, display: str = "clipped",
                 backend: str | None = None) -> Image.Image:
    """Per photo, for its top-1 class: every attribution method (attribution_maps), CAMs at _blocks.15.

    Args:
        display: "clipped" (render.clipped_heatmap, Captum's default) or "featvis"
            (render.attribution_heatmap) for the pixel-space maps.
        backend: kernel backend (None: automatic).
    Returns:
        a grid of rows (photo, saliency, guided backprop, ..., Ablation-CAM).
    """
    if display not in ATTRIBUTION_DISPLAYS:
        raise ValueError(f"display must be one of {tuple(ATTRIBUTION_DISPLAYS)}, got {display!r}")
    images, x = _photos(preprocess, names, 224, device)
    with torch.no_grad():
        target = model(x).argmax(1)
    return attribution_grid(images, target, names, attribution_maps(model, x, target, display=display,
                                                                    backend=backend), 224)


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


def evaluation_report(model, preprocess, names, out_dir: str, device, backend: str | None = None) -> str:
    """A small `featvis evaluate`: saliency and Grad-CAM scored by deletion, insertion and sparseness
    on the demo photos at 128 px (deletion / insertion in steps of 8 rows), with its HTML report."""
    out = os.path.join(out_dir, "evaluation")
    shutil.rmtree(out, ignore_errors=True)  # a demo starts afresh (evaluate would resume, or refuse other settings)
    images = [(name, preprocess(load_image(name), size=128).to(device)) for name in names]
    layer = metrics.default_cam_layer(model)
    step = {"step": 8 * 128, "backend": backend}
    cells = metrics.evaluate(model, images, ["saliency", "gradcam"], ["deletion", "insertion", "sparseness"],
                             out, method_kwargs={"saliency": {"backend": backend},
                                            "gradcam": {"layer": layer, "backend": backend}},
                             metric_settings={"deletion": step, "insertion": step}, progress=False)
    return str(metrics.write_report(cells, out, title="featvis demo: saliency vs Grad-CAM"))
