"""Faithfulness correlation (featvis_fast.metrics.faithfulness_correlation) against Quantus 0.6.

Quantus draws each run's subsets with np.random.choice; the parity tests record those draws and
pass them to ours (`subsets=`), so both perturb the same features of the same images: the scores
agree to float rounding. A linear model gives a known answer (correlation exactly +-1).
"""
from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import scipy.stats
import torch
from _quantus import arrays, distinct_attributions, float64_default, quantus, resnet18_case

from featvis_fast.metrics import faithfulness_correlation
from featvis_fast.metrics.correlation import pearson, random_subsets


@pytest.fixture(scope="module")
def case():
    """(model, x (2, 3, 32, 32), target) on float64 ResNet-18; tests copy the model before changing it."""
    return resnet18_case(2, 32)



@pytest.mark.parametrize("channels, baseline, softmax, absolute", [
    (1, "black", False, False),  # Quantus' defaults, one attribution per pixel (broadcast over channels)
    (3, "mean", True, True),
    (3, 0.25, False, False),
])
def test_equals_quantus_with_replayed_subsets(monkeypatch, case, channels, baseline, softmax, absolute):
    q = quantus()
    model, x, target = case
    a = distinct_attributions((2, channels, 32, 32), seed=channels)
    x_np, a_np, y_np = arrays(x, a, target)
    drawn, choice = [], np.random.choice

    def recording_choice(*args, **kwargs):
        drawn.append(choice(*args, **kwargs))
        return drawn[-1]

    metric = q.FaithfulnessCorrelation(nr_runs=12, subset_size=150, perturb_baseline=baseline, abs=absolute,
                                       return_aggregate=False, disable_warnings=True)
    monkeypatch.setattr(np.random, "choice", recording_choice)
    np.random.seed(7)
    with float64_default():
        expected = np.asarray(metric(model=model, x_batch=x_np, y_batch=y_np, a_batch=a_np, device="cpu",
                                     softmax=softmax))
    monkeypatch.undo()
    subsets = torch.from_numpy(np.stack(drawn).reshape(12, 2, 150))
    ours = faithfulness_correlation(model, x, a, target, subsets=subsets, baseline=baseline,
                                    activation="softmax" if softmax else None, abs=absolute)
    assert ours.shape == (2,) and ours.dtype == torch.float64
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-9, atol=1e-12)
    assert np.all(np.abs(expected) > 1e-3)  # informative correlations, not zeros


def test_linear_model_known_answer():
    """f(x) = w_t . x: removing S to the image's minimum m drops f by sum_{i in S} w_ti (x_i - m),
    which are the attributions a = w_t * (x - m) summed over S: correlation exactly 1 (-1 for -a)."""
    generator = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5)).double().eval()
    x = torch.randn(2, 3, 8, 8, generator=generator, dtype=torch.float64)
    target = torch.tensor([1, 4])
    weights = model[1].weight.detach()[target].reshape(2, 3, 8, 8)
    a = weights * (x - x.amin(dim=(1, 2, 3), keepdim=True))
    ones = torch.ones(2, dtype=torch.float64)
    torch.testing.assert_close(faithfulness_correlation(model, x, a, target, n_samples=20, subset_size=30), ones,
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(faithfulness_correlation(model, x, -a, target, n_samples=20, subset_size=30), -ones,
                               rtol=0, atol=1e-12)
    # with the "white" baseline the drops are sum w_ti (x_i - M): the attributions must follow
    white = weights * (x - x.amax(dim=(1, 2, 3), keepdim=True))
    torch.testing.assert_close(faithfulness_correlation(model, x, white, target, n_samples=20, subset_size=30,
                                                        baseline="white"), ones, rtol=0, atol=1e-12)
    # constant attributions do not vary over the runs: NaN, as Quantus (scipy's pearsonr)
    assert torch.isnan(faithfulness_correlation(model, x, torch.ones(2, 8, 8), target, n_samples=5,
                                                subset_size=10)).all()


def test_seeded_batched_and_typed(case):
    model, x, target = case
    a = distinct_attributions((2, 1, 32, 32))
    first = faithfulness_correlation(model, x, a, target, n_samples=8, subset_size=100, seed=2)
    again = faithfulness_correlation(model, x, a, target, n_samples=8, subset_size=100,
                                     generator=torch.Generator().manual_seed(2), batch_size=3)
    torch.testing.assert_close(again, first, rtol=1e-12, atol=0)
    other = faithfulness_correlation(model, x, a, target, n_samples=8, subset_size=100, seed=3)
    assert not torch.equal(other, first)
    single = faithfulness_correlation(copy.deepcopy(model).float(), x.float(), a.float(), target, n_samples=8,
                                      subset_size=100, seed=2)
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), first, rtol=0, atol=1e-3)


@pytest.mark.parametrize("subset_size", [3, 7])  # drawn with replacement and redrawn / by random keys
def test_random_subsets_are_uniform(subset_size):
    subsets = random_subsets(3000, 4, 10, subset_size, torch.Generator().manual_seed(0))
    assert subsets.shape == (3000, 4, subset_size) and subsets.dtype == torch.int64
    rows = subsets.reshape(-1, subset_size).sort(dim=1).values
    assert bool((rows[:, 1:] > rows[:, :-1]).all()) and int(rows.min()) >= 0 and int(rows.max()) < 10
    # every one of the C(10, k) subsets equally likely (a chi-square test at the 0.1% level)
    index = {s: i for i, s in enumerate(itertools.combinations(range(10), subset_size))}
    counts = np.bincount([index[tuple(r)] for r in rows.tolist()], minlength=len(index))
    assert scipy.stats.chisquare(counts).pvalue > 1e-3
    again = random_subsets(3000, 4, 10, subset_size, torch.Generator().manual_seed(0))
    assert torch.equal(again, subsets)


def test_pearson_equals_scipy():
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(5, 40, generator=generator, dtype=torch.float64)
    b = 0.3 * a + torch.randn(5, 40, generator=generator, dtype=torch.float64)
    expected = scipy.stats.pearsonr(a.numpy(), b.numpy(), axis=1).statistic
    np.testing.assert_allclose(pearson(a, b).numpy(), expected, rtol=1e-13, atol=0)
    torch.testing.assert_close(pearson(a, 2 * a + 1), torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-15)


def test_bad_inputs(case):
    model, x, target = case
    a = distinct_attributions((2, 32, 32))
    with pytest.raises(ValueError, match="needs a target"):
        faithfulness_correlation(model, x, a, None)
    with pytest.raises(ValueError, match="do not fit the images"):
        faithfulness_correlation(model, x, a[:1], target)
    with pytest.raises(ValueError, match="smaller than the C \\* H \\* W = 3072"):
        faithfulness_correlation(model, x, a, target, subset_size=3072)
    with pytest.raises(ValueError, match="n_samples must be at least 2"):
        faithfulness_correlation(model, x, a, target, n_samples=1)
    with pytest.raises(ValueError, match="baseline must be"):
        faithfulness_correlation(model, x, a, target, n_samples=2, subset_size=4, baseline="uniform")
    good = random_subsets(2, 2, 3072, 4, torch.Generator())
    with pytest.raises(ValueError, match="outside \\[0, 3072\\)"):
        faithfulness_correlation(model, x, a, target, subsets=good + 3072)
    with pytest.raises(ValueError, match="repeat a feature"):
        faithfulness_correlation(model, x, a, target, subsets=good[..., [0, 0, 1, 2]])
    with pytest.raises(ValueError, match="subsets must be integer indices"):
        faithfulness_correlation(model, x, a, target, subsets=good[:, :1])
