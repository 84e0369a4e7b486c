"""ROAD (featvis_fast.metrics.road) and its linear imputation (featvis_fast.metrics._imputation).

The imputation equals scipy's sparse LU solve of the same system (built here independently),
Quantus' noisy_linear_imputation and, on odd sizes, border pixels and fully removed
neighbourhoods, to 1e-10 in float64. ROAD equals Quantus 0.6 ROAD (one-channel images: its
ROAD fails on RGB, shown below) and pytorch-grad-cam's ROAD metrics on the same inputs with the
noise draws replayed.
"""
from __future__ import annotations

import copy
import importlib

import numpy as np
import pytest
import torch
from _quantus import arrays, distinct_attributions, float64_default, quantus, resnet18_case

from featvis_fast.metrics import road
from featvis_fast.metrics._imputation import NEIGHBOUR_WEIGHTS, linear_imputation

road_module = importlib.import_module("featvis_fast.metrics.road")  # the attribute `road` is the function

OFFSETS = [(dy, dx, NEIGHBOUR_WEIGHTS[dy + 1][dx + 1]) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def spsolve_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The reference: the system of the module docstring assembled pixel by pixel, solved by scipy."""
    from scipy.sparse import lil_matrix
    from scipy.sparse.linalg import spsolve

    channels, height, width = image.shape
    cells = [(i, j) for i in range(height) for j in range(width) if removed[i, j]]
    unknown = {cell: k for k, cell in enumerate(cells)}
    matrix, rhs = lil_matrix((len(cells), len(cells))), np.zeros((len(cells), channels))
    for k, (i, j) in enumerate(cells):
        for dy, dx, weight in OFFSETS:
            ni, nj = i + dy, j + dx
            if not (0 <= ni < height and 0 <= nj < width):
                continue
            matrix[k, k] += weight
            if removed[ni, nj]:
                matrix[k, unknown[(ni, nj)]] = -weight
            else:
                rhs[k] += weight * image[:, ni, nj]
    solution = spsolve(matrix.tocsc(), rhs).reshape(len(cells), channels)
    out = image.copy()
    for k, (i, j) in enumerate(cells):
        out[:, i, j] = solution[k]
    return out


def mask_cases(height: int, width: int) -> list[np.ndarray]:
    rng = np.random.default_rng(height * 100 + width)
    border = np.zeros((height, width), bool)
    border[0], border[:, -1], border[-1, 0] = True, True, True  # a full row and column, and a corner
    block = np.zeros((height, width), bool)
    block[1:5, 2:6] = True  # (2..3, 3..4) have all 8 neighbours removed
    almost_all = np.ones((height, width), bool)
    almost_all[height // 2, width - 1] = False  # one kept pixel, on the border
    return [rng.random((height, width)) < 0.3, rng.random((height, width)) < 0.9, border, block, almost_all]


@pytest.mark.parametrize("size", [(7, 9), (12, 12), (15, 11)])
def test_imputation_equals_sparse_solve(size):
    height, width = size
    masks = mask_cases(height, width)
    images = torch.randn(len(masks), 3, height, width, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    removed = torch.from_numpy(np.stack(masks))
    ours = linear_imputation(images, removed).numpy()
    for k, mask in enumerate(masks):
        expected = spsolve_imputation(images[k].numpy(), mask)
        np.testing.assert_allclose(ours[k], expected, rtol=0, atol=1e-10)
        np.testing.assert_array_equal(ours[k][:, ~mask], images[k].numpy()[:, ~mask])


def test_imputation_equals_quantus_noisy_linear_imputation():
    quantus()
    from quantus.functions.perturb_func import noisy_linear_imputation

    images = torch.randn(3, 2, 13, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    removed = torch.from_numpy(np.stack(mask_cases(13, 10)[:3]))
    ours = linear_imputation(images, removed).numpy()
    for k in range(3):
        expected = noisy_linear_imputation(images[k].numpy(), np.flatnonzero(removed[k].numpy()), noise=0.0)
        np.testing.assert_allclose(ours[k], expected, rtol=0, atol=1e-10)


def test_imputation_known_answers():
    # one removed pixel: the weighted mean of its 8 neighbours
    image = torch.arange(25, dtype=torch.float64).reshape(1, 1, 5, 5) ** 2
    removed = torch.zeros(1, 5, 5, dtype=torch.bool)
    removed[0, 2, 2] = True
    window = image[0, 0, 1:4, 1:4]
    expected = (window * torch.tensor(NEIGHBOUR_WEIGHTS, dtype=torch.float64)).sum()
    assert torch.allclose(linear_imputation(image, removed)[0, 0, 2, 2], expected, rtol=1e-14, atol=0)
    # a linear ramp is harmonic for the symmetric weights: an interior hole is filled exactly
    rows, cols = torch.meshgrid(*[torch.arange(16, dtype=torch.float64)] * 2, indexing="ij")
    ramp = (0.3 * rows - 0.7 * cols + 2.0)[None, None].repeat(1, 2, 1, 1)
    hole = torch.zeros(1, 16, 16, dtype=torch.bool)
    hole[0, 3:12, 4:13] = True
    torch.testing.assert_close(linear_imputation(ramp, hole), ramp, rtol=0, atol=1e-12)
    # a constant image stays constant, even when one pixel is left
    almost_all = torch.ones(1, 16, 16, dtype=torch.bool)
    almost_all[0, 0, 0] = False
    torch.testing.assert_close(linear_imputation(torch.full((1, 1, 16, 16), 0.25, dtype=torch.float64), almost_all),
                               torch.full((1, 1, 16, 16), 0.25, dtype=torch.float64), rtol=0, atol=1e-12)
    # nothing removed: unchanged
    assert torch.equal(linear_imputation(ramp, torch.zeros(1, 16, 16, dtype=torch.bool)), ramp)


def test_imputation_float32_matches_float64():
    images = torch.randn(2, 3, 20, 20, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    removed = torch.rand(2, 20, 20, generator=torch.Generator().manual_seed(4)) < 0.8
    single = linear_imputation(images.float(), removed)
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), linear_imputation(images, removed), rtol=0, atol=2e-5)


def test_imputation_bad_inputs():
    images = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    everything = torch.ones(2, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="at least one kept pixel"):
        linear_imputation(images, everything)
    with pytest.raises(ValueError, match=r"removed must be a \(2, 4, 4\) bool"):
        linear_imputation(images, torch.ones(2, 3, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="removed must be"):
        linear_imputation(images, torch.ones(2, 4, 4))


class Recorder(torch.nn.Module):
    """The model, keeping a copy of every batch it sees (what a reference perturbed)."""

    def __init__(self, model: torch.nn.Module, gray: bool = False) -> None:
        super().__init__()
        self.model, self.gray, self.seen = model, gray, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.model(x.expand(-1, 3, -1, -1) if self.gray else x)



def replay_noise(monkeypatch, fields: list[torch.Tensor]) -> list[int]:
    """Make road draw `fields` (one per percentage, in order) instead of its own noise; returns a
    counter of the draws (reset it to replay again)."""
    drawn = [0]

    def replay(shape, dtype, generator):
        field = fields[drawn[0] % len(fields)]
        assert tuple(field.shape) == tuple(shape)
        drawn[0] += 1
        return field.to(dtype)

    monkeypatch.setattr(road_module, "imputation_noise", replay)
    return drawn


PERCENTAGES = [5, 40, 95]


@pytest.fixture(scope="module")
def case():
    """(model, x (2, 3, 32, 32), target) on float64 ResNet-18; tests copy the model before changing it."""
    return resnet18_case(2, 32)


def test_road_equals_quantus_road_with_replayed_noise(monkeypatch, case):
    q = quantus()
    model, x_rgb, _ = case
    gray = Recorder(model, gray=True).eval()
    x = x_rgb.mean(dim=1, keepdim=True)
    with torch.no_grad():
        target = gray(x).argmax(1)
        target[0] = (target[0] + 1) % 1000  # one target that is not the predicted class
    a = distinct_attributions((2, 1, 32, 32), seed=5)
    x_np, a_np, y_np = arrays(x, a, target)

    metric = q.ROAD(percentages=PERCENTAGES, noise=0.01, disable_warnings=True)
    per_image = []
    evaluate = metric.evaluate_batch
    metric.evaluate_batch = lambda **kw: per_image.append(evaluate(**kw)[0]) or [per_image[-1]]
    gray.seen.clear()
    np.random.seed(11)
    with float64_default():
        metric(model=gray, x_batch=x_np, y_batch=y_np, a_batch=a_np, device="cpu")
    quantus_copies = torch.cat(gray.seen)  # (P * B, 1, H, W), percentage-major
    assert quantus_copies.shape == (len(PERCENTAGES) * 2, 1, 32, 32)

    # Quantus draws np.random.randn(C, k) per percentage and image, in the order of its top-k indices
    np.random.seed(11)
    order = np.argsort(-a_np.reshape(2, -1), axis=1)
    fields = []
    for p in PERCENTAGES:
        k = int(32 * 32 * p / 100)
        field = torch.zeros(2, 1, 32 * 32, dtype=torch.float64)
        for b in range(2):
            field[b, 0, order[b, :k]] = torch.from_numpy(np.random.randn(1, k)[0])
        fields.append(field.reshape(2, 1, 32, 32))
    drawn = replay_noise(monkeypatch, fields)

    accuracy = road(gray, x, a, target, percentages=PERCENTAGES, accuracy=True)
    assert drawn[0] == len(PERCENTAGES)
    np.testing.assert_array_equal(accuracy.curves.numpy(), per_image[0])
    torch.testing.assert_close(accuracy.scores, accuracy.curves.mean(1), rtol=0, atol=0)
    # Quantus' own result: per percentage, the batch's accuracy
    np.testing.assert_allclose(list(metric.evaluation_scores.values()), accuracy.curves.mean(0).numpy(), rtol=1e-15)

    probabilities = road(gray, x, a, target, percentages=PERCENTAGES)
    with torch.no_grad():
        expected = torch.softmax(gray.model(quantus_copies.expand(-1, 3, -1, -1)), dim=1)
    expected = expected.gather(1, target.repeat(len(PERCENTAGES))[:, None]).reshape(len(PERCENTAGES), 2).T
    torch.testing.assert_close(probabilities.curves, expected, rtol=1e-9, atol=0)


@pytest.mark.parametrize("order", ["morf", "lerf"])
@pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")  # grad-cam's np.float32(tensor)
def test_road_equals_grad_cam_road_with_replayed_noise(monkeypatch, case, order):
    model, x, target = case  # built first: that makes torchvision importable (grad-cam imports it)
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cams = distinct_attributions((2, 32, 32), seed=6)
    # grad-cam's imputer writes float32 solutions into the image: it runs on float32 images only
    model32, x32 = copy.deepcopy(model).float(), x.float()
    percentages = [25, 75]  # H * W * p / 100 whole: grad-cam's percentile threshold removes the same pixels
    metric_class = ROADMostRelevantFirst if order == "morf" else ROADLeastRelevantFirst
    targets = [ClassifierOutputTarget(int(t)) for t in target]
    diffs, fields = [], []
    for p in percentages:
        torch.manual_seed(20 + p)
        diffs.append(metric_class(percentile=100 - p)(x32, cams.numpy(), targets, model32))
        # grad-cam draws (C, k) standard normals per image (randn_like of its solution's transpose, which
        # is contiguous: spsolve returns it in Fortran order), for its removed pixels in index order
        torch.manual_seed(20 + p)
        k = 32 * 32 * p // 100
        ranked = torch.argsort(cams.reshape(2, -1), dim=1, descending=order == "morf")[:, :k]
        field = torch.zeros(2, 3, 32 * 32, dtype=torch.float64)
        for b in range(2):
            field[b, :, ranked[b].sort().values] = torch.randn(3, k).double()
        fields.append(field.reshape(2, 3, 32, 32))
    replay_noise(monkeypatch, fields)

    # ours in float64 on the same (float32-valued) images and weights
    result = road(model, x32.double(), cams, target, percentages=percentages, order=order, activation=None)
    with torch.no_grad():
        clean = model(x32.double()).gather(1, target[:, None])[:, 0]
    expected = torch.from_numpy(np.stack(diffs, axis=1)).double()
    torch.testing.assert_close(result.curves - clean[:, None], expected, rtol=1e-5, atol=1e-5)
    assert float((expected[:, -1] - expected[:, 0]).abs().min()) > 1e-2  # the removals change the score


def test_road_known_answers(case):
    model, x, target = case
    a = distinct_attributions((2, 32, 32))
    with torch.no_grad():
        logits = model(x)
    # removing 0% scores the clean image; a constant image is imputed exactly, whatever is removed
    result = road(model, x, a, target, percentages=[0], activation=None)
    torch.testing.assert_close(result.curves[:, 0], logits.gather(1, target[:, None])[:, 0], rtol=1e-12, atol=0)
    flat = torch.full_like(x, 0.3)
    with torch.no_grad():
        flat_score = torch.softmax(model(flat), 1).gather(1, target[:, None])
    result = road(model, flat, a, target, percentages=[10, 60, 99], noise_std=0.0)
    torch.testing.assert_close(result.curves, flat_score.expand(2, 3), rtol=1e-9, atol=0)
    torch.testing.assert_close(result.scores, flat_score[:, 0], rtol=1e-9, atol=0)


def test_road_seeded_batched_and_typed(case):
    model, x, target = case
    a = distinct_attributions((2, 3, 32, 32))
    first = road(model, x, a, target, percentages=[20, 80], seed=3)
    again = road(model, x, a, target, percentages=[20, 80], generator=torch.Generator().manual_seed(3), batch_size=1)
    torch.testing.assert_close(again.curves, first.curves, rtol=1e-12, atol=0)
    other = road(model, x, a, target, percentages=[20, 80], seed=4)
    assert not torch.equal(other.curves, first.curves)
    # without noise the seed does not matter; MoRF and LeRF differ
    quiet = [road(model, x, a, target, percentages=[20, 80], noise_std=0.0, seed=s, order=o).curves
             for s, o in ((0, "morf"), (1, "morf"), (0, "lerf"))]
    assert torch.equal(quiet[0], quiet[1]) and not torch.allclose(quiet[0], quiet[2])
    assert first.scores.shape == (2,) and first.curves.shape == (2, 2) and first.curves.dtype == torch.float64
    single = road(copy.deepcopy(model).float(), x.float(), a.float(), target, percentages=[20, 80], noise_std=0.0)
    assert single.curves.dtype == torch.float32 and single.scores.dtype == torch.float32
    torch.testing.assert_close(single.curves.double(), quiet[0], rtol=1e-3, atol=1e-6)


def test_road_bad_inputs(case):
    model, x, target = case
    a = distinct_attributions((2, 32, 32))
    with pytest.raises(ValueError, match="needs a target"):
        road(model, x, a, None)
    with pytest.raises(ValueError, match="do not fit the images"):
        road(model, x, a[:, :16], target)
    with pytest.raises(ValueError, match=r"\[0, 100\)"):
        road(model, x, a, target, percentages=[10, 100])
    with pytest.raises(ValueError, match="non-empty sequence"):
        road(model, x, a, target, percentages=[])
    with pytest.raises(ValueError, match="unknown order"):
        road(model, x, a, target, order="random")
    with pytest.raises(ValueError, match="noise_std must be"):
        road(model, x, a, target, noise_std=-0.1)
    with pytest.raises(ValueError, match="not a callable"):
        road(model, x, a, lambda out: out[:, 0], accuracy=True)
