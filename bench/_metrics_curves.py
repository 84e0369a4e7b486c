"""Deletion, insertion, pixel flipping and region perturbation for bench/metrics.py.

References: Quantus 0.6's PixelFlipping and RegionPerturbation (the same settings; deletion is
Quantus' PixelFlipping with a 0 baseline and whole rows per step, beside the RISE loop), and RISE's
CausalMetric (its evaluation.py, not a package: tests/_rise.py, one image at a time as RISE runs it)
for deletion and insertion. Steps are coarser than the papers' one row (224 forwards per image) so
the references finish in minutes: every STEP_ROWS rows of a 224 px image per step.
"""
from __future__ import annotations

import numpy as np
import torch
from _metrics_common import Inputs, MetricCase, quantus

from featvis_fast import metrics

STEP_ROWS = 8  # deletion / insertion / pixel flipping: 8 image rows per step (29 points at 224 px)
PATCH, REGIONS = 16, 50  # region perturbation: 16 px regions, the first 50 of 196


def _step(inputs: Inputs) -> int:
    return STEP_ROWS * inputs.x.shape[3]


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
        curves = np.asarray(metric(model=inputs.model, x_batch=inputs.x_np, y_batch=inputs.y_np, a_batch=inputs.a_np,
                                   device=inputs.device, softmax=True, batch_size=len(inputs.y_np)))
        return np.trapezoid(curves, dx=1, axis=1)
    return run


def _quantus_deletion(inputs: Inputs) -> np.ndarray:
    """Quantus PixelFlipping as RISE's deletion: baseline 0, whole rows per step; its curve lacks the
    clean point, which is added back for RISE's area."""
    metric = quantus().PixelFlipping(features_in_step=3 * _step(inputs), perturb_baseline=0.0, disable_warnings=True)
    curves = np.asarray(metric(model=inputs.model, x_batch=inputs.x_np, y_batch=inputs.y_np, a_batch=inputs.a_np,
                               device=inputs.device, softmax=True, batch_size=len(inputs.y_np)))
    with torch.no_grad():
        clean = torch.softmax(inputs.model(inputs.x), 1).gather(1, inputs.target[:, None]).double().cpu().numpy()
    full = np.concatenate([clean, curves], 1)
    return (full.sum(1) - full[:, 0] / 2 - full[:, -1] / 2) / (full.shape[1] - 1)


def cases() -> list[MetricCase]:
    """The four curve metrics, scored by their areas."""
    return [
        MetricCase("deletion",
                   lambda i: metrics.deletion(i.model, i.x, i.attributions, i.target, step=_step(i)).scores,
                   {"quantus": _quantus_deletion, "rise": _rise("del")},
                   note=f"{STEP_ROWS} rows per step, substrate 0, softmax; Quantus PixelFlipping(baseline 0) + the "
                        "clean point; RISE's CausalMetric loop per image"),
        MetricCase("insertion",
                   lambda i: metrics.insertion(i.model, i.x, i.attributions, i.target, step=_step(i)).scores,
                   {"rise": _rise("ins")},
                   note=f"{STEP_ROWS} rows per step, RISE's blurred substrate, softmax; RISE's loop per image"),
        MetricCase("pixel_flipping",
                   lambda i: metrics.pixel_flipping(i.model, i.x, i.attributions, i.target,
                                                    features_in_step=3 * _step(i)).scores,
                   {"quantus": _quantus_curves("PixelFlipping", features_in_step=lambda i: 3 * _step(i))},
                   note=f"{STEP_ROWS} rows per step, black baseline, softmax, trapezoid area"),
        MetricCase("region_perturbation",
                   lambda i: metrics.region_perturbation(i.model, i.x, i.attributions, i.target, patch_size=PATCH,
                                                         regions=REGIONS).scores,
                   {"quantus": _quantus_curves("RegionPerturbation", patch_size=PATCH, regions_evaluation=REGIONS)},
                   note=f"{PATCH} px regions, the first {REGIONS}, MoRF, black baseline, softmax, trapezoid area"),
    ]
