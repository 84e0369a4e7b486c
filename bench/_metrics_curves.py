"""Deletion, insertion, pixel flipping and region perturbation for bench/metrics.py.

References: Quantus 0.6's PixelFlipping and RegionPerturbation (the same settings), and RISE's
CausalMetric (its evaluation.py, not a package: tests/_rise.py, one image at a time as RISE runs it)
for deletion and insertion. Steps are coarser than the papers' one row (224 forwards per image) so
the references finish in minutes: every STEP_ROWS rows of a 224 px image per step.
"""
from __future__ import annotations

import numpy as np
import torch
from _metrics_common import Inputs, MetricCase, quantus

import featvis_fast as fv
from featvis_fast import metrics

STEP_ROWS = 8  # deletion / insertion / pixel flipping: 8 image rows per step (29 points at 224 px)
PATCH, REGIONS = 16, 50  # region perturbation: 16 px regions, the first 50 of 196


def _step(inputs: Inputs) -> int:
    return STEP_ROWS * inputs.x.shape[3]


_CHANNEL_MAPS: dict[int, torch.Tensor] = {}


def channel_attributions(inputs: Inputs) -> torch.Tensor:
    """|gradient| per channel (B, 3, H, W), once per Inputs: pixel flipping's features are the C x H x W
    values, and Quantus wants H W divisible by the features per step, which no whole-pixel step of an
    RGB image is; one-channel maps broadcast to three would tie within pixels that a step splits, and
    NumPy's unstable argsort orders ties its own way."""
    if id(inputs) not in _CHANNEL_MAPS:
        _CHANNEL_MAPS[id(inputs)] = fv.saliency(inputs.model, inputs.x, inputs.target, abs=True).detach()
    return _CHANNEL_MAPS[id(inputs)]


def _rise(mode: str):
    from _rise import causal_metric

    def run(inputs: Inputs) -> np.ndarray:
        substrate = torch.zeros_like if mode == "del" else metrics.faithfulness.rise_blur
        model = inputs.model.cpu()
        out = [causal_metric(mode, model, inputs.x[b:b + 1].cpu(), inputs.a_np[b].sum(0), _step(inputs), substrate,
                             int(inputs.y_np[b]))[1] for b in range(len(inputs.y_np))]
        inputs.model.to(inputs.device)
        return np.asarray(out)
    return run


def _quantus_curves(name: str, **kwargs):
    def run(inputs: Inputs) -> np.ndarray:
        settings = {k: v(inputs) if callable(v) else v for k, v in kwargs.items()}
        metric = getattr(quantus(), name)(disable_warnings=True, **settings)
        a = channel_attributions(inputs).cpu().numpy() if name == "PixelFlipping" else inputs.a_np
        curves = np.asarray(metric(model=inputs.model, x_batch=inputs.x_np, y_batch=inputs.y_np, a_batch=a,
                                   device=inputs.device, softmax=True, batch_size=len(inputs.y_np)))
        return np.trapezoid(curves, dx=1, axis=1)
    return run


def cases() -> list[MetricCase]:
    """The four curve metrics, scored by their areas."""
    return [
        MetricCase("deletion",
                   lambda i: metrics.deletion(i.model, i.x, i.attributions, i.target, step=_step(i)).scores,
                   {"rise": _rise("del")},
                   note=f"{STEP_ROWS} rows per step, substrate 0, softmax; RISE's CausalMetric loop per image"),
        MetricCase("insertion",
                   lambda i: metrics.insertion(i.model, i.x, i.attributions, i.target, step=_step(i)).scores,
                   {"rise": _rise("ins")},
                   note=f"{STEP_ROWS} rows per step, RISE's blurred substrate, softmax; RISE's loop per image"),
        MetricCase("pixel_flipping",
                   lambda i: metrics.pixel_flipping(i.model, i.x, channel_attributions(i), i.target,
                                                    features_in_step=_step(i)).scores,
                   {"quantus": _quantus_curves("PixelFlipping", features_in_step=_step)},
                   note=f"{STEP_ROWS} x W features per step (of 3 H W), |gradient| per channel, black baseline, "
                        "softmax, trapezoid area"),
        MetricCase("region_perturbation",
                   lambda i: metrics.region_perturbation(i.model, i.x, i.attributions, i.target, patch_size=PATCH,
                                                         regions=REGIONS).scores,
                   {"quantus": _quantus_curves("RegionPerturbation", patch_size=PATCH, regions_evaluation=REGIONS)},
                   note=f"{PATCH} px regions, the first {REGIONS}, MoRF, black baseline, softmax, trapezoid area"),
    ]
