"""Deletion, insertion, pixel flipping and region perturbation (featvis_fast.metrics.faithfulness).

Parity: Quantus 0.6's PixelFlipping and RegionPerturbation on the same float64 model, inputs and
attributions (distinct values: NumPy's argsort is not stable); RISE's CausalMetric (deletion /
insertion), which is not a package, as a line-by-line loop of its code in this file. Known answers:
a linear model explained by its exact contributions has the steepest possible deletion curve.
"""
import copy
import math

import _quantus as Q
import numpy as np
import pytest
import torch
from _rise import causal_metric

import featvis_fast as fv
from featvis_fast.metrics import faithfulness as F

_close = Q.assert_relative  # ours == theirs to 1e-9 of the largest |theirs|


@pytest.fixture(scope="module")
def case():
    model, x, target = Q.resnet18_case(batch=2, side=24)
    return model, x, target, Q.distinct_attributions((2, 1, 24, 24), seed=3)


def _quantus_curves(metric, model, x, a, target):
    xn, an, yn = Q.arrays(x, a, target)
    return np.asarray(metric(model=Q.quantus_model(model), x_batch=xn, y_batch=yn, a_batch=an, device="cpu",
                             softmax=True))


@pytest.mark.parametrize("features_in_step,channels", [(48, 1), (16, 3)])  # whole pixels (fused masks), elements
def test_pixel_flipping_equals_quantus(case, features_in_step, channels):
    quantus = Q.quantus()
    model, x, target, a = case
    if channels == 3:
        a = Q.distinct_attributions((2, 3, 24, 24), seed=4)
    theirs = _quantus_curves(quantus.PixelFlipping(features_in_step=features_in_step, disable_warnings=True),
                             model, x, a, target)
    ours = fv.metrics.pixel_flipping(model, x, a, target, features_in_step=features_in_step)
    assert ours.curves.shape == theirs.shape == (2, 3 * 24 * 24 // features_in_step)
    _close(ours.curves, theirs)
    # Quantus' return_auc_per_sample calls np.trapz (gone in NumPy 2.4): the same rule on its curves
    _close(ours.scores, np.trapezoid(theirs, dx=1, axis=1))


def test_pixel_flipping_split_pixels_differ_from_quantus_only_by_its_unstable_sort(case, monkeypatch):
    """One attribution channel broadcast to three ties every pixel's channels; flipping 16 features
    per step splits pixels, so which channel goes first is the sort's choice: NumPy's default
    quicksort decides differently from our stable order. With a stable argsort Quantus agrees."""
    quantus = Q.quantus()
    model, x, target, a = case
    ours = fv.metrics.pixel_flipping(model, x, a, target, features_in_step=16)
    unstable = _quantus_curves(quantus.PixelFlipping(features_in_step=16, disable_warnings=True), model, x, a, target)
    assert np.abs(ours.curves.numpy() - unstable).max() > 1e-6
    argsort = np.argsort
    monkeypatch.setattr(np, "argsort", lambda arr, axis=-1, **kw: argsort(arr, axis=axis, kind="stable"))
    stable = _quantus_curves(quantus.PixelFlipping(features_in_step=16, disable_warnings=True), model, x, a, target)
    _close(ours.curves, stable)


def test_pixel_flipping_of_tied_pixels_does_not_depend_on_the_channel_count(case):
    """A map of few distinct values (many tied pixels) and the same map repeated over C channels
    flip the same whole pixels in the same order."""
    model, x, target, _ = case
    g = torch.Generator().manual_seed(5)
    tied = torch.randint(0, 4, (2, 1, 24, 24), generator=g).double()
    one = fv.metrics.pixel_flipping(model, x, tied, target, features_in_step=3 * 40)
    three = fv.metrics.pixel_flipping(model, x, tied.expand(2, 3, 24, 24), target, features_in_step=3 * 40)
    torch.testing.assert_close(one.curves, three.curves, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("order,patch", [("morf", 5), ("lerf", 8)])
def test_region_perturbation_equals_quantus(case, order, patch):
    quantus = Q.quantus()
    model, x, target, a = case
    metric = quantus.RegionPerturbation(patch_size=patch, regions_evaluation=7, order=order, disable_warnings=True)
    theirs = _quantus_curves(metric, model, x, a, target)
    ours = fv.metrics.region_perturbation(model, x, a, target, patch_size=patch, regions=7, order=order)
    assert ours.curves.shape == theirs.shape == (2, 7)
    _close(ours.curves, theirs)
    _close(ours.scores, np.trapezoid(theirs, dx=1, axis=1))


@pytest.mark.parametrize("mode,step", [("deletion", 50), ("insertion", 24)])
def test_deletion_and_insertion_equal_rise(case, mode, step):
    model, x, target, a = case
    fn = getattr(fv.metrics, mode)
    ours = fn(model, x, a, target, step=step)
    substrate = torch.zeros_like if mode == "deletion" else F.rise_blur
    for b in range(x.shape[0]):
        curve, auc = causal_metric(mode[:3], model, x[b:b + 1].clone(), a[b].numpy(), step, substrate,
                                         int(target[b]))
        _close(ours.curves[b], curve)
        _close(ours.scores[b], auc)
    assert ours.curves.shape == (2, math.ceil(24 * 24 / step) + 1)


def test_rise_blur_kernel_is_gkern():
    from scipy.ndimage import gaussian_filter

    delta = np.zeros((11, 11))
    delta[5, 5] = 1
    gkern = gaussian_filter(delta, 5)
    x = torch.zeros(1, 3, 11, 11, dtype=torch.float64)
    x[0, 1, 5, 5] = 1.0
    blurred = F.rise_blur(x)  # a delta at the centre returns the (symmetric) kernel in its channel
    _close(blurred[0, 1], gkern, rel=1e-14)
    assert float(blurred[0, 0].abs().max()) == 0.0


class _Linear(torch.nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(weight)

    def forward(self, x):
        return torch.stack([(x * self.weight).flatten(1).sum(1), torch.zeros(x.shape[0], dtype=x.dtype)], 1)


def test_exact_contributions_give_the_steepest_deletion_curve():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 1, 9, 11, generator=g, dtype=torch.float64)
    model = _Linear(w).eval()
    x = torch.randn(2, 1, 9, 11, generator=g, dtype=torch.float64)
    contributions = x * w
    best = fv.metrics.deletion(model, x, contributions, 0, step=1, activation=None)
    expected = model(x)[:, :1] - torch.cat([torch.zeros(2, 1, dtype=torch.float64),
                                            contributions.flatten(1).sort(1, descending=True).values.cumsum(1)], 1)
    _close(best.curves, expected.detach())
    for seed in range(3):
        shuffled = contributions.flatten(1)[:, torch.randperm(99, generator=g.manual_seed(seed))].reshape(x.shape)
        other = fv.metrics.deletion(model, x, shuffled, 0, step=1, activation=None)
        assert bool((best.curves <= other.curves + 1e-12).all())
        assert bool((best.scores < other.scores).all())
    inserted = fv.metrics.insertion(model, x, contributions, 0, step=1, activation=None, baseline=0.0)
    assert bool((inserted.scores > fv.metrics.insertion(model, x, -contributions, 0, step=1, activation=None,
                                                         baseline=0.0).scores).all())


def test_batching_and_backends_give_the_same_curves(case):
    model, x, target, a = case
    whole = fv.metrics.deletion(model, x, a, target, step=40)
    assert whole.curves.shape == (2, 24 * 24 // 40 + 2) and bool(torch.isfinite(whole.curves).all())
    for kwargs in ({"batch_size": 3}, {"backend": "torch"}):
        _close(fv.metrics.deletion(model, x, a, target, step=40, **kwargs).curves, whole.curves, rel=1e-13)
    one = fv.metrics.deletion(model, x[1:], a[1:], target[1:], step=40)
    _close(one.curves[0], whole.curves[1], rel=1e-13)


def test_float32_channels_last_and_list_attributions(case):
    model, x, target, a = case
    model32 = copy.deepcopy(model).float()
    x32 = x.float().contiguous(memory_format=torch.channels_last)
    ours = fv.metrics.region_perturbation(model32, x32, [m.float() for m in a], target, patch_size=6, regions=5)
    ref = fv.metrics.region_perturbation(model, x, a, target, patch_size=6, regions=5)
    assert ours.curves.dtype == torch.float32
    assert float((ours.curves.double() - ref.curves).abs().max()) < 1e-4


def test_bad_input_is_named(case):
    model, x, target, a = case
    with pytest.raises(ValueError, match="do not fit the images"):
        fv.metrics.deletion(model, x, a[:, :, :20], target)
    with pytest.raises(ValueError, match="needs a target"):
        fv.metrics.insertion(model, x, a, None)
    with pytest.raises(ValueError, match="features_in_step"):
        fv.metrics.pixel_flipping(model, x, a, target, features_in_step=0)
    with pytest.raises(ValueError, match="order"):
        fv.metrics.region_perturbation(model, x, a, target, order="random")
    with pytest.raises(ValueError, match="regions"):
        fv.metrics.region_perturbation(model, x, a, target, patch_size=8, regions=10)
    with pytest.raises(ValueError, match="baseline"):
        fv.metrics.pixel_flipping(model, x, a, target, baseline="grey")
    with pytest.raises(ValueError, match="NaN"):
        fv.metrics.deletion(model, x, a * float("nan"), target)


class _LayoutRecorder(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.channels_last = model, []

    def forward(self, x):
        self.channels_last.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return self.model(x)


@pytest.mark.parametrize("channels,features_in_step", [(1, 48), (3, 16)])  # fused masks; per-element copies
def test_perturbed_copies_keep_the_channels_last_layout(case, channels, features_in_step):
    """The model sees its copies in the layout it was given (index_select alone drops channels-last,
    and the NCHW path of a channels-last-tuned model is up to 2x slower)."""
    model, x, target, _ = case
    recorder = _LayoutRecorder(copy.deepcopy(model).float()).eval()
    a = torch.rand(2, channels, 24, 24, generator=torch.Generator().manual_seed(0))
    fv.metrics.pixel_flipping(recorder, x.float().contiguous(memory_format=torch.channels_last), a, target,
                              features_in_step=features_in_step)
    assert len(recorder.channels_last) > 3 and all(recorder.channels_last)
