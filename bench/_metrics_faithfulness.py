"""ROAD and faithfulness correlation for bench/metrics.py: ours beside Quantus 0.6 and pytorch-grad-cam 1.5.7.

ROAD runs without noise here (noise=0, both references' imputers too), so ours and the references
score the same imputed images and the difference column means something; the noise is one
(B, C, H, W) draw per percentage and costs nothing beside the imputation. The percentages are
multiples of 12.5 %, for which H * W * p / 100 is whole at 224 px (and at 32 px): grad-cam's
percentile threshold then removes the same pixels as our count.

Faithfulness correlation replays Quantus' own subset draws: np.random.seed(0), then per run one
np.random.choice per image and the B uniforms its "black" baseline draws alongside (Quantus builds
all its baselines each run). Ours takes those subsets (`subsets=`), drawn once per input shape and
cached, so its time is the metric's alone.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from _metrics_common import Inputs, MetricCase, quantus

from featvis_fast import metrics

PERCENTAGES = (12.5, 25.0, 37.5, 50.0, 62.5, 75.0, 87.5)
NR_RUNS, SUBSET_SIZE = 20, 224  # Quantus' subset size, a fifth of its 100 runs



def _pixel_order(inputs: Inputs) -> np.ndarray:
    """(B, H * W) pixels by descending attribution summed over channels (ROAD's MoRF order)."""
    return np.argsort(-inputs.a_np.sum(1).reshape(len(inputs.a_np), -1), axis=1, kind="stable")


def _predict(inputs: Inputs, images: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return inputs.model(torch.from_numpy(images).to(device=inputs.x.device, dtype=inputs.x.dtype))


def _quantus_road_accuracy(inputs: Inputs) -> np.ndarray:
    """Quantus 0.6 ROAD's loop (MoRF, y == argmax) with its noisy_linear_imputation, on pixel indices:
    its ROAD class indexes the H * W mask with C * H * W broadcast indices and fails on RGB images."""
    quantus()
    from quantus.functions.perturb_func import noisy_linear_imputation

    order, (b, _, h, w) = _pixel_order(inputs), inputs.x_np.shape
    correct = []
    for p in PERCENTAGES:
        k = int(h * w * p / 100)
        imputed = np.stack([noisy_linear_imputation(arr=inputs.x_np[i], indices=order[i, :k], noise=0.0)
                            for i in range(b)])
        correct.append(_predict(inputs, imputed).argmax(1).cpu().numpy() == inputs.y_np)
    return np.mean(correct, axis=0)


def _grad_cam_road(inputs: Inputs) -> np.ndarray:
    """pytorch-grad-cam's ROADMostRelevantFirst(percentile=100 - p) score differences (noise off),
    averaged over the percentages, plus the clean probability: the mean target probability."""
    quantus()  # torchvision's schemas, which pytorch-grad-cam imports
    from pytorch_grad_cam.metrics.road import ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in inputs.y_np]
    cams = inputs.a_np.sum(1)
    diffs = []
    for p in PERCENTAGES:
        metric = ROADMostRelevantFirst(percentile=100 - p)
        metric.perturbation.imputer.noise = 0.0
        diffs.append(metric(inputs.x, cams, targets, inputs.model))
    clean = torch.softmax(_predict(inputs, inputs.x_np), 1).cpu().numpy()[np.arange(len(cams)), inputs.y_np]
    return np.mean(diffs, axis=0) + clean


@functools.lru_cache(maxsize=4)
def _quantus_subsets(batch: int, n_features: int) -> np.ndarray:
    """(NR_RUNS, B, SUBSET_SIZE): what FaithfulnessCorrelation draws after np.random.seed(0)."""
    state = np.random.get_state()
    np.random.seed(0)
    subsets = []
    for _ in range(NR_RUNS):
        subsets.append([np.random.choice(n_features, SUBSET_SIZE, replace=False) for _ in range(batch)])
        np.random.uniform(size=batch)  # the "uniform" entry of Quantus' baseline dictionary
    np.random.set_state(state)
    return np.asarray(subsets)


def _ours_correlation(inputs: Inputs) -> torch.Tensor:
    subsets = torch.from_numpy(_quantus_subsets(len(inputs.x_np), inputs.x_np[0].size))
    return metrics.faithfulness_correlation(inputs.model, inputs.x, inputs.attributions, inputs.target,
                                            subsets=subsets)


def _quantus_correlation(inputs: Inputs) -> np.ndarray:
    metric = quantus().FaithfulnessCorrelation(nr_runs=NR_RUNS, subset_size=SUBSET_SIZE, return_aggregate=False,
                                                disable_warnings=True)
    np.random.seed(0)
    scores = metric(model=inputs.model, x_batch=inputs.x_np, y_batch=inputs.y_np, a_batch=inputs.a_np,
                    device=inputs.device, batch_size=len(inputs.x_np))
    return np.asarray(scores, dtype=np.float64)


def cases() -> list[MetricCase]:
    """road (mean target probability, beside grad-cam), road with accuracy (Quantus), faithfulness_correlation."""
    percentages = ", ".join(f"{p:g}" for p in PERCENTAGES)
    return [
        MetricCase(
            "road",
            lambda i: metrics.road(i.model, i.x, i.attributions, i.target, percentages=PERCENTAGES,
                                   noise_std=0.0).scores,
            {"grad-cam": _grad_cam_road},
            note=f"MoRF at {percentages} %, noise 0, softmax probability averaged over the percentages "
                 "(grad-cam: ROADMostRelevantFirst(100 - p) differences + the clean probability)",
        ),
        MetricCase(
            "road (accuracy)",
            lambda i: metrics.road(i.model, i.x, i.attributions, i.target, percentages=PERCENTAGES, noise_std=0.0,
                                   accuracy=True).scores,
            {"quantus": _quantus_road_accuracy},
            note=f"MoRF at {percentages} %, noise 0, share of percentages still classified as the target "
                 "(Quantus: ROAD's loop with its noisy_linear_imputation on pixel indices; its ROAD class "
                 "fails on RGB images)",
        ),
        MetricCase(
            "faithfulness_correlation",
            _ours_correlation,
            {"quantus": _quantus_correlation},
            note=f"{NR_RUNS} runs of {SUBSET_SIZE} features set to each image's minimum, raw outputs "
                 "(Quantus' defaults but 20 runs); ours replays Quantus' subset draws",
        ),
    ]
