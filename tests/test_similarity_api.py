"""FeatureSimilarity: metrics against independent float64 formulas, storage dtypes, rendering, errors."""
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _oracle import angular_bounds
from conftest import backend_params
from PIL import Image

import featvis_fast as fv
from featvis_fast import BackendUnavailableError, FeatureSimilarity


def _features(C=23, h=11, w=13, seed=0, zero_pixels=((2, 3), (10, 12))):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(C, h, w, generator=g).abs() * torch.rand(1, h, w, generator=g) * 4 - 1
    for i, j in zero_pixels:
        f[:, i, j] = 0
    return f


def _oracle(f, point, metric):
    """Independent float64 formula on the raw (un-prepared) features."""
    f = f.double()
    ref = f[:, point[0], point[1]]
    if metric == "euclidean":
        return (f - ref[:, None, None]).norm(dim=0)
    if metric == "dot":
        return torch.einsum("chw,c->hw", f, ref)
    cos = F.cosine_similarity(f, ref[:, None, None].expand_as(f), dim=0, eps=1e-300)
    if metric == "cosine":
        return cos
    return (1 - torch.acos(cos.clamp(-1, 1)) / (math.pi / 2)).clamp(0, 1)


def _half_torch_error(f, point, metric, dtype):
    """Error of the plain PyTorch pipeline run in `dtype` (the bar: ours at most twice it)."""
    flat = f.reshape(f.shape[0], -1)
    ref = flat[:, point[0] * f.shape[2] + point[1]]
    if metric == "cosine":
        flat = flat / flat.norm(dim=0, keepdim=True).clamp_min(1e-30)
        ref = ref / ref.norm().clamp_min(1e-30)
    fl, rl = flat.to(dtype), ref.to(dtype)
    if metric == "euclidean":
        low = (fl - rl[:, None]).float().pow(2).sum(0).sqrt().to(dtype)
    else:
        low = (rl[None] @ fl)[0]
    return (low.double().reshape(f.shape[1:]) - _oracle(f, point, metric)).abs().max().item()


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("metric", fv.METRICS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_metrics_match_independent_formula(device, backend, metric, dtype, poison_outputs):
    f = _features(seed=hash((metric, str(dtype))) % 1000)
    sim = FeatureSimilarity(f.to(device), metric=metric, dtype=dtype, backend=backend)
    for point in [(0, 0), (5, 7), (2, 3)]:
        got = sim.query(point).cpu()
        assert got.shape == (11, 13) and got.dtype == torch.float32
        # angular is judged in the cosine domain: acos near 1 amplifies any rounding of the cosine
        base = "cosine" if metric == "angular" else metric
        if dtype == torch.float32:
            bound = 1e-5 * max(1.0, _oracle(f, point, base).abs().max().item())
        else:
            bound = 2 * _half_torch_error(f, point, base, dtype) + 1e-6
        if metric == "angular":
            lo, hi = angular_bounds(_oracle(f, point, "cosine"), bound)
            ok = (got.double() >= lo) & (got.double() <= hi)
            assert bool(ok.all()), f"angular {dtype} at {point}: {int((~ok).sum())} values outside the bound"
            continue
        err = (got.double() - _oracle(f, point, metric)).abs().max().item()
        assert err <= bound, f"{metric} {dtype} at {point}: error {err:.3g} > {bound:.3g}"


@pytest.mark.parametrize("metric", ["cosine", "angular"])
def test_zero_vectors_give_zero(metric):
    sim = FeatureSimilarity(_features(), metric=metric, dtype=torch.float32)
    assert torch.all(sim.query((2, 3)) == 0)
    m = sim.query((5, 5))
    assert m[2, 3] == 0 and m[10, 12] == 0 and abs(m[5, 5].item() - 1) < 1e-3


def test_batched_queries_equal_single_queries():
    sim = FeatureSimilarity(_features(), metric="cosine", dtype=torch.float16)
    pts = torch.tensor([[0, 0], [5, 7], [10, 12], [3, 1], [9, 9]])
    batch = sim.query(pts)
    assert batch.shape == (5, 11, 13)
    for k, p in enumerate(pts.tolist()):
        assert torch.allclose(batch[k], sim.query(tuple(p)), atol=1e-6, rtol=0)  # BLAS gemm vs gemv rounding
    assert torch.allclose(sim.query(np.array([[5, 7]]))[0], sim.query([5, 7]), atol=1e-6, rtol=0)


def test_non_contiguous_feature_map():
    f = _features(C=8, h=11, w=13)
    nc = f.permute(0, 2, 1).contiguous().permute(0, 2, 1)  # same values, channel-last-ish strides
    assert not nc.is_contiguous()
    a = FeatureSimilarity(nc, dtype=torch.float32).query((4, 6))
    b = FeatureSimilarity(f, dtype=torch.float32).query((4, 6))
    assert torch.allclose(a, b, atol=1e-6)


def test_query_image_xy_maps_to_cell():
    sim = FeatureSimilarity(_features(h=7, w=14, zero_pixels=()), dtype=torch.float32)
    assert sim.image_to_cell(0, 0, (224, 112)) == (0, 0)
    assert sim.image_to_cell(223.9, 111.9, (224, 112)) == (6, 13)
    assert sim.image_to_cell(100, 50, (224, 112)) == (3, 6)
    assert torch.equal(sim.query_image_xy(100, 50, (224, 112)), sim.query((3, 6)))
    with pytest.raises(ValueError, match="outside"):
        sim.query_image_xy(224, 0, (224, 112))


@pytest.mark.parametrize("device,backend", backend_params())
def test_render_minmax_fixed_and_upsampled(device, backend, poison_outputs):
    f = _features()
    sim = FeatureSimilarity(f.to(device), metric="cosine", dtype=torch.float32, backend=backend)
    lut = fv.colormap("fire")
    rgba = sim.render((5, 7)).cpu()
    assert rgba.shape == (11, 13, 4) and rgba.dtype == torch.uint8
    # the reference pixel is the maximum -> last LUT entry; the minimum pixel -> first entry
    assert torch.equal(rgba[5, 7], lut[255])
    m = sim.query((5, 7)).cpu()
    k = int(m.argmin())
    assert torch.equal(rgba.view(-1, 4)[k], lut[0])
    fixed = sim.render((5, 7), colormap="gray", stretch=(-1.0, 1.0)).cpu()
    expected = ((m + 1) / 2 * 255 + 0.5).clamp(0, 255).to(torch.uint8)
    assert (fixed[..., 0].int() - expected.int()).abs().max() <= 1
    big = sim.render((5, 7), size=(44, 52)).cpu()
    assert big.shape == (44, 52, 4)
    assert set(map(tuple, big.view(-1, 4).tolist())) <= set(map(tuple, lut.tolist()))
    two = sim.render([[5, 7], [0, 0]], colormap="viridis").cpu()
    assert two.shape == (2, 11, 13, 4) and torch.equal(two[0], sim.render((5, 7), colormap="viridis").cpu())


def test_overlay_blends_heat_map_over_image():
    image = Image.new("RGB", (40, 30), (0, 0, 255))
    heat = torch.zeros(15, 20, 4, dtype=torch.uint8)
    heat[..., 0] = 255
    heat[..., 3] = 255
    out = np.asarray(fv.overlay(image, heat, alpha=0.5))
    assert out.shape == (30, 40, 3)
    assert abs(int(out[10, 10, 0]) - 128) <= 1 and abs(int(out[10, 10, 2]) - 127) <= 1
    with pytest.raises(ValueError, match="alpha"):
        fv.overlay(image, heat, alpha=1.5)


@pytest.mark.parametrize("bad,exc,match", [
    (torch.zeros(3, 4), ValueError, "shape"),
    (torch.zeros(0, 4, 4), ValueError, "empty"),
    (torch.zeros(3, 4, 4, dtype=torch.int64), TypeError, "floating"),
    ("features", TypeError, "torch.Tensor"),
])
def test_bad_feature_maps(bad, exc, match):
    with pytest.raises(exc, match=match):
        FeatureSimilarity(bad)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_features_rejected(value):
    f = _features()
    f[1, 2, 3] = value
    with pytest.raises(ValueError, match="non-finite"):
        FeatureSimilarity(f)


def test_bad_arguments_are_named():
    f = _features()
    with pytest.raises(ValueError, match="unknown metric 'cosin'"):
        FeatureSimilarity(f, metric="cosin")
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        FeatureSimilarity(f, backend="gpu")
    with pytest.raises(TypeError, match="dtype"):
        FeatureSimilarity(f, dtype=torch.float64)
    with pytest.raises(ValueError, match="overflow"):
        FeatureSimilarity(f * 1e6, metric="dot", dtype=torch.float16)
    sim = FeatureSimilarity(f)
    with pytest.raises(ValueError, match=r"\(11, 0\) lies outside the 11x13"):
        sim.query((11, 0))
    with pytest.raises(ValueError, match="outside"):
        sim.query((-1, 0))
    with pytest.raises(ValueError, match="shape"):
        sim.query([[1, 2, 3]])
    with pytest.raises(TypeError, match="integer"):
        sim.query((1.5, 2))
    with pytest.raises(ValueError, match="unknown colormap 'jet'"):
        sim.render((1, 1), colormap="jet")
    with pytest.raises(ValueError, match="stretch"):
        sim.render((1, 1), stretch=(1.0, 0.0))


def test_explicit_unavailable_backend_raises():
    with pytest.raises(BackendUnavailableError, match="cuda"):
        FeatureSimilarity(_features(), backend="cuda")


def test_environment_selects_backend(monkeypatch):
    monkeypatch.setenv("FEATVIS_BACKEND", "torch")
    assert FeatureSimilarity(_features()).backend == "torch"
    monkeypatch.setenv("FEATVIS_BACKEND", "nope")
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        FeatureSimilarity(_features())


def test_backends_report():
    report = fv.backends()
    assert list(report) == ["cuda", "triton", "cpp", "torch"]
    assert report["torch"].available and "cpu" in report["torch"].devices
    for status in report.values():
        assert status.available or status.reason != "ok"


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("metric", ["cosine", "angular", "dot"])
def test_int8_storage_within_quantization_bound(device, backend, metric, poison_outputs):
    f = _features(C=37, seed=5)
    sim = FeatureSimilarity(f.to(device), metric=metric, dtype=torch.int8, backend=backend)
    flat = f.reshape(37, -1).double()
    if metric != "dot":
        flat = flat / flat.norm(dim=0, keepdim=True).clamp_min(1e-300)
    codes, scales = sim.cache.cpu().double(), sim.scales.cpu().double()
    assert sim.cache.dtype == torch.int8 and codes.abs().max() <= 127
    assert torch.all((codes * scales - flat).abs() <= scales / 2 + 1e-12), "codes * scale must round-trip"
    for point in [(5, 7), (0, 0)]:
        k = point[0] * 13 + point[1]
        # |<a,b> - <a^,b^>| <= sum |a||db| + |b^||da|, with |d| <= scale / 2 per component
        bound = (0.5 * scales[k] * flat.abs().sum(0) + 0.5 * scales * (codes[:, k] * scales[k]).abs().sum()) + 1e-6
        base = "cosine" if metric == "angular" else metric
        exact = _oracle(f, point, base).reshape(-1)
        got = sim.query(point).cpu().double().reshape(-1)
        if metric == "angular":
            lo = (1 - torch.acos((exact - bound).clamp(0, 1)) / (math.pi / 2)) - 1e-6
            hi = (1 - torch.acos((exact + bound).clamp(0, 1)) / (math.pi / 2)) + 1e-6
            assert bool(((got >= lo) & (got <= hi)).all())
        else:
            assert bool(((got - exact).abs() <= bound).all())
    with pytest.raises(ValueError, match="euclidean"):
        FeatureSimilarity(f, metric="euclidean", dtype=torch.int8)


_NO_EXTENSIONS_SCRIPT = r"""
import warnings
import torch
import featvis_fast as fv
feats = torch.randn(7, 5, 6, generator=torch.Generator().manual_seed(0))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    auto = fv.FeatureSimilarity(feats)
    first, second = auto.query((1, 2)), auto.query((3, 4))
fallbacks = [w for w in caught if "falling back" in str(w.message)]
assert len(fallbacks) == 1 and "FEATVIS_NO_EXTENSIONS" in str(fallbacks[0].message), [str(w.message) for w in caught]
assert auto.backend == "torch", auto.backend
ref = fv.FeatureSimilarity(feats, backend="torch")
assert torch.equal(first, ref.query((1, 2))) and torch.equal(second, ref.query((3, 4)))
report = fv.backends()
assert not report["cpp"].available and "FEATVIS_NO_EXTENSIONS" in report["cpp"].reason, report["cpp"]
try:
    fv.FeatureSimilarity(feats, backend="cpp")
except fv.BackendUnavailableError as exc:
    assert "FEATVIS_NO_EXTENSIONS" in str(exc), exc
else:
    raise AssertionError("backend='cpp' must raise with extensions disabled")
print("OK")
"""


def test_without_compiled_extensions_import_works_and_falls_back_once():
    """FEATVIS_NO_EXTENSIONS=1: import works, the auto backend falls back with one warning, explicit cpp raises."""
    import subprocess
    import sys

    env = dict(os.environ, FEATVIS_NO_EXTENSIONS="1")
    env.pop("FEATVIS_BACKEND", None)
    proc = subprocess.run([sys.executable, "-c", _NO_EXTENSIONS_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "OK", proc.stderr


@pytest.mark.parametrize("name", fv.render.COLORMAPS)
def test_the_index_colormap_gives_indices_that_the_lut_turns_into_the_colours(name):
    torch.manual_seed(3)
    sim = fv.FeatureSimilarity(torch.randn(6, 9, 7))
    index = sim.render((4, 2), colormap="index")
    assert torch.equal(index[..., 0], index[..., 1]) and torch.equal(index[..., 3], torch.full_like(index[..., 3], 255))
    assert torch.equal(fv.colormap(name)[index[..., 0].long()], sim.render((4, 2), colormap=name))
    values = torch.randn(5, 8)
    assert torch.equal(fv.colormap(name)[fv.colorize(values, "index")[..., 0].long()], fv.colorize(values, name))
