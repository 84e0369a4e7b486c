"""Randomisation metrics for bench/metrics.py: ours beside Quantus 0.6's MPRT and RandomLogit.

Both sides explain with the same saliency (fv.saliency, channel sum of |gradient|: Inputs.explain
for Quantus, the same function in torch for ours) and normalise each map by its own largest |a|
(Quantus with normalise_func_kwargs={"normalise_axes": (1, 2, 3)}; its default divides by the
batch's largest). Random draws are replayed: MPRT's layer_seeds=[43] * L is Quantus' seed=42
(torch.manual_seed(43) before every layer's reset_parameters), Random Logit's other_class is what
Quantus' np.random.seed(42) draws. Captum has no randomisation metric.
"""
from __future__ import annotations

import numpy as np
import torch
from _metrics_common import Inputs, MetricCase, quantus, saliency_map

from featvis_fast import metrics
from featvis_fast.metrics.randomisation import randomisable_layers

SEED = 42  # Quantus' default seed of both metrics
PER_IMAGE = {"normalise_axes": (1, 2, 3)}




def _num_classes(inputs: Inputs) -> int:
    with torch.no_grad():
        return inputs.model(inputs.x[:1]).shape[1]


def quantus_other_classes(inputs: Inputs) -> torch.Tensor:
    """The other class of each image that Quantus' RandomLogit(seed=SEED) draws (one batch of all images)."""
    offsets = np.random.RandomState(SEED).randint(0, _num_classes(inputs) - 1, len(inputs.y_np))
    return torch.from_numpy(offsets + (offsets >= inputs.y_np)).to(inputs.target.device)


def _ours_mprt(inputs: Inputs) -> torch.Tensor:
    layers = randomisable_layers(inputs.model)
    return metrics.mprt(inputs.model, inputs.x, inputs.attributions, inputs.target, explain=saliency_map,
                        layer_seeds=[SEED + 1] * len(layers)).scores


def _quantus_mprt(inputs: Inputs) -> np.ndarray:
    metric = quantus().MPRT(seed=SEED, normalise_func_kwargs=PER_IMAGE, disable_warnings=True)
    layers = metric(model=inputs.model, x_batch=inputs.x_np, y_batch=inputs.y_np, a_batch=inputs.a_np,
                    explain_func=inputs.explain, device=inputs.device, batch_size=len(inputs.x_np))
    # the mean over the randomised layers (Quantus' own average also counts the unrandomised model)
    return np.array([scores for name, scores in layers.items() if name != "original"], dtype=np.float64).mean(0)


def _ours_random_logit(inputs: Inputs) -> torch.Tensor:
    return metrics.random_logit(inputs.model, inputs.x, inputs.attributions, inputs.target, explain=saliency_map,
                                similarity="ssim_flattened", num_classes=_num_classes(inputs),
                                other_class=quantus_other_classes(inputs))


def _quantus_random_logit(inputs: Inputs) -> np.ndarray:
    metric = quantus().RandomLogit(num_classes=_num_classes(inputs), seed=SEED, normalise_func_kwargs=PER_IMAGE,
                                    disable_warnings=True)
    scores = metric(model=inputs.model, x_batch=inputs.x_np, y_batch=inputs.y_np, a_batch=inputs.a_np,
                    explain_func=inputs.explain, device=inputs.device, batch_size=len(inputs.x_np))
    return np.asarray(scores, dtype=np.float64)


def cases() -> list[MetricCase]:
    """MPRT (every layer, cascading from the output) and Random Logit, each against Quantus."""
    return [
        MetricCase(
            "mprt",
            _ours_mprt,
            {"quantus": _quantus_mprt},
            note="top_down cascade over every module with reset_parameters (one saliency of the batch per "
                 "layer), Spearman, normalise + abs; score: mean over the layers. Same weights as Quantus on "
                 "the CPU only: on CUDA its reset_parameters draws from the CUDA generator, ours from the CPU "
                 "one, so the randomised models (and scores) differ there"),
        MetricCase(
            "random_logit",
            _ours_random_logit,
            {"quantus": _quantus_random_logit},
            note="SSIM of the flattened maps (Quantus' ssim: similarity='ssim_flattened'), normalise, no abs; "
                 "the other class replayed from Quantus' seed 42; one explanation of the batch"),
    ]
