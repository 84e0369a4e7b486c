"""Complexity metrics (featvis_fast.metrics.complexity_measures): Sparseness (Gini) and Complexity (entropy).

Parity: Quantus 0.6's Sparseness and Complexity on the same float64 maps, to 1e-12. Quantus scales
the whole batch by its largest |attribution| and ours scale each map by its own: the tests show the
scores agree exactly where the two scalings coincide (one image per call, or maps whose largest
|value| is the batch's) and differ only through Sparseness' 1e-7 otherwise.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _quantus import arrays, distinct_attributions, quantus

from featvis_fast.metrics import complexity, sparseness

B, SIDE = 3, 32


def quantus_scores(metric, a: torch.Tensor, **kwargs) -> np.ndarray:
    """A Quantus 0.6 complexity metric on (B, Ca, H, W) maps (Ca = 1 or 3), as a float array."""
    (a_np,) = arrays(a)
    x = np.zeros((a_np.shape[0], 3, *a_np.shape[2:]))  # only its shape is read
    scores = metric(disable_warnings=True, **kwargs)(model=None, x_batch=x, y_batch=np.zeros(len(x), dtype=int),
                                                      a_batch=a_np)
    return np.asarray(scores, dtype=np.float64)


def varied_maps(channels: int = 1) -> torch.Tensor:
    """(B, channels, SIDE, SIDE) maps from sparse to dense, at different scales."""
    a = distinct_attributions((B, channels, SIDE, SIDE), seed=11)
    a[0] = a[0] ** 5  # heavy tails: sparse
    a[1] = a[1].abs() + 3.0  # nearly constant: dense
    return a * torch.tensor([2.0, 0.5, 30.0], dtype=torch.float64)[:, None, None, None]


@pytest.mark.filterwarnings("ignore:invalid value encountered in log")  # Quantus, on negative shares
@pytest.mark.parametrize("metric, ours", [("Sparseness", sparseness), ("Complexity", complexity)])
@pytest.mark.parametrize("absolute", [True, False])
def test_matches_quantus_image_by_image(metric, ours, absolute):
    q = quantus()
    a = varied_maps()
    a[2, 0, :4] = -a[2, 0, :4].abs()  # some negative values for abs=False
    got = ours(a, abs=absolute)
    assert got.dtype == torch.float64 and got.shape == (B,)
    expected = np.concatenate([quantus_scores(getattr(q, metric), a[i:i + 1], abs=absolute) for i in range(B)])
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=0)  # NaN where both are NaN
    if metric == "Complexity" and not absolute:
        assert np.isnan(expected[[0, 2]]).all() and np.isfinite(expected[1])  # logs of negative shares
    else:
        assert np.isfinite(expected).all() and len(set(expected.round(6).tolist())) == B


@pytest.mark.parametrize("channels", [1, 3])
def test_matches_quantus_batched_when_the_scalings_agree(channels):
    q = quantus()
    a = varied_maps(channels)
    a = a / a.abs().amax((1, 2, 3), keepdim=True)  # every map's largest |value| is 1, the batch's
    np.testing.assert_allclose(sparseness(a).numpy(), quantus_scores(q.Sparseness, a), rtol=1e-12, atol=0)
    np.testing.assert_allclose(complexity(a).numpy(), quantus_scores(q.Complexity, a), rtol=1e-12, atol=0)


def test_quantus_batch_scaling_is_the_only_difference():
    q = quantus()
    a = varied_maps()  # maxima 2x, 0.5x and 30x apart
    gini, entropy = sparseness(a).numpy(), complexity(a).numpy()
    batched = quantus_scores(q.Sparseness, a)
    assert 1e-9 < np.abs(batched - gini).max() < 1e-4  # the 1e-7 weighs more on maps Quantus shrank
    # Quantus with the batch's scaling is ours with that scaling and the same 1e-7
    scaled = (a / a.abs().max()).abs().reshape(B, -1) + 1e-7
    values = torch.sort(scaled, dim=1).values
    n = values.shape[1]
    weights = 2 * torch.arange(1, n + 1, dtype=torch.float64) - n - 1
    np.testing.assert_allclose(((weights * values).sum(1) / (n * values.sum(1))).numpy(), batched, rtol=1e-12)
    # the entropy does not depend on the scale
    np.testing.assert_allclose(entropy, quantus_scores(q.Complexity, a), rtol=1e-12, atol=0)


def test_known_answers():
    n = 16 * 16
    one_hot = torch.zeros(1, 16, 16, dtype=torch.float64)
    one_hot[0, 3, 7] = -2.5
    constant = torch.full((1, 16, 16), 0.25, dtype=torch.float64)
    zero = torch.zeros(1, 16, 16, dtype=torch.float64)
    maps = torch.cat([one_hot, constant, zero])
    gini, entropy = sparseness(maps), complexity(maps)
    assert gini[0].item() == pytest.approx((n - 1) / (n * (1 + 1e-7 * n)), rel=1e-14)  # about 1: the 1e-7
    assert abs(gini[1].item()) < 1e-15 and abs(gini[2].item()) < 1e-15  # constant; zero (made constant by 1e-7)
    assert entropy[0].item() == pytest.approx(-math.log(1 + 1e-12), abs=1e-20)  # 0, up to the 1e-12
    assert entropy[1].item() == pytest.approx(-math.log(1 / n + 1e-12), rel=1e-14)  # log(n), up to the 1e-12
    assert abs(entropy[1].item() - math.log(n)) < 1e-8
    assert math.isnan(entropy[2].item())  # a zero map has no distribution (Quantus: NaN too)
    # two equal values among zeros: half the mass each
    two = zero.clone()
    two[0, 0, :2] = 1.0
    assert complexity(two).item() == pytest.approx(math.log(2), rel=1e-11)


def test_channels_are_features_and_images_are_independent():
    a = distinct_attributions((2, 3, 12, 12), seed=12)
    flat = a.reshape(2, 1, 36, 12)  # the same 432 values per image, one channel
    assert torch.allclose(sparseness(a), sparseness(flat), rtol=1e-14, atol=0)
    assert torch.allclose(complexity(a), complexity(flat), rtol=1e-14, atol=0)
    assert not torch.allclose(sparseness(a), sparseness(a.sum(1)))  # channels are not summed
    for metric in (sparseness, complexity):
        both = metric(a)
        assert torch.equal(metric(a[1:]), both[1:])  # an image's score does not depend on its batch
        assert torch.allclose(metric(7.0 * a), both, rtol=1e-13, atol=0)  # nor on its scale
        assert torch.equal(metric(list(a)), both) and torch.equal(metric(a.numpy()), both)
        out32 = metric(a.to(torch.float32))
        assert out32.dtype == torch.float32 and torch.allclose(out32.double(), both, rtol=1e-4)


@pytest.mark.parametrize("metric", [sparseness, complexity])
def test_bad_inputs_name_the_problem(metric):
    with pytest.raises(ValueError, match=r"attributions must be \(B, H, W\), \(B, 1, H, W\) or \(B, C, H, W\)"):
        metric(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="NaN or infinite"):
        metric(torch.full((1, 4, 4), float("nan")))
    with pytest.raises(TypeError, match="tensor, an array or a list"):
        metric("map.png")
