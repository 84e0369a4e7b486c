"""The metrics on the bundled EfficientNet-Lite0 (float64) and the bundled photos, against Quantus 0.6
and RISE's loop on the same inputs and draws: the parity the other metric tests show on ResNet-18,
on the model a newcomer runs first (its ReLU6 and depthwise blocks, real ImageNet weights)."""
import _quantus as Q
import numpy as np
import pytest
import torch
from _rise import causal_metric

import featvis_fast as fv

SIDE = 64


@pytest.fixture(scope="module")
def case():
    model, x, target = Q.default_case(batch=2, side=SIDE, dtype=torch.float64)
    a = fv.saliency(model, x, target, abs=True).detach()  # (2, 3, 64, 64): distinct values per channel
    return model, x, target, a


def _quantus(metric, model, x, a, target, **kwargs):
    xn, an, yn = Q.arrays(x, a, target)
    return np.asarray(metric(model=Q.quantus_model(model), x_batch=xn, y_batch=yn, a_batch=an, device="cpu",
                             **kwargs))


def test_pixel_flipping_and_region_perturbation_equal_quantus(case):
    quantus = Q.quantus()
    model, x, target, a = case
    theirs = _quantus(quantus.PixelFlipping(features_in_step=256, disable_warnings=True), model, x, a, target,
                      softmax=True)
    Q.assert_relative(fv.metrics.pixel_flipping(model, x, a, target, features_in_step=256).curves, theirs)
    theirs = _quantus(quantus.RegionPerturbation(patch_size=8, regions_evaluation=10, disable_warnings=True),
                      model, x, a.sum(1, keepdim=True), target, softmax=True)
    ours = fv.metrics.region_perturbation(model, x, a.sum(1, keepdim=True), target, patch_size=8, regions=10)
    Q.assert_relative(ours.curves, theirs)


def test_deletion_equals_rise_loop(case):
    model, x, target, a = case
    ours = fv.metrics.deletion(model, x, a, target, step=256)
    for b in range(2):
        curve, auc = causal_metric("del", model, x[b:b + 1], a[b].sum(0).numpy(), 256, torch.zeros_like,
                                   int(target[b]))
        Q.assert_relative(ours.curves[b], curve)
        Q.assert_relative(ours.scores[b], auc)


def test_faithfulness_correlation_equals_quantus_with_its_subsets(case, monkeypatch):
    quantus = Q.quantus()
    model, x, target, a = case
    drawn, choice = [], np.random.choice

    def recording_choice(*args, **kwargs):
        drawn.append(choice(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(np.random, "choice", recording_choice)
    np.random.seed(3)
    theirs = _quantus(quantus.FaithfulnessCorrelation(nr_runs=10, subset_size=200, return_aggregate=False,
                                                      disable_warnings=True), model, x, a, target, softmax=False)
    monkeypatch.undo()
    subsets = torch.from_numpy(np.stack(drawn).reshape(10, 2, 200))
    ours = fv.metrics.faithfulness_correlation(model, x, a, target, subsets=subsets)
    Q.assert_relative(ours, theirs)
    assert np.all(np.abs(theirs) > 1e-3)


def test_complexity_and_top_k_equal_quantus(case):
    quantus = Q.quantus()
    _, x, target, a = case
    maps = a.sum(1, keepdim=True)
    an, xn, yn = Q.arrays(maps, x, target)
    theirs = quantus.Complexity(disable_warnings=True)(model=None, x_batch=xn, y_batch=yn, a_batch=an)
    Q.assert_relative(fv.metrics.complexity(maps), theirs)
    masks = torch.zeros(2, 1, SIDE, SIDE)
    masks[:, :, 16:48, 8:40] = 1
    theirs = quantus.TopKIntersection(k=300, disable_warnings=True)(model=None, x_batch=xn, y_batch=yn, a_batch=an,
                                                                   s_batch=masks.numpy())
    Q.assert_relative(fv.metrics.top_k_intersection(maps, masks[:, 0].bool(), k=300), theirs)
