"""Incremental inference (engine.incremental, Krypton): each layer recomputes only what a window
changes. Checked against the full recompute of explicitly occluded copies, in float64 to 1e-12,
on small models that exercise every kind of call the replay patches (and the ones it must hand
back to the plain forward), and on the geometry of changed regions by brute force."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from featvis_fast.engine import incremental as inc
from featvis_fast.engine.changed_regions import Regions, Window, from_boxes, through, union
from featvis_fast.engine.patched import occluded


def rel_err(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


# --- changed regions ------------------------------------------------------------------------

def _reached(lo: int, hi: int, win: Window, in_size: int, out_size: int) -> set[int]:
    """Output positions whose window reads an input position in [lo, hi) (brute force)."""
    return {o for o in range(out_size)
            if any(lo <= o * win.stride - win.pad + win.dilation * i < hi for i in range(win.kernel))}


@pytest.mark.parametrize("seed", range(6))
def test_regions_hold_every_output_cell_a_change_reaches(seed):
    """For random sliding windows and boxes: the carried box holds every output cell that reads a
    changed input cell, lies inside the output, and its tile is exactly the input the layer reads."""
    gen = np.random.default_rng(seed)
    for _ in range(40):
        k, s, d = int(gen.integers(1, 6)), int(gen.integers(1, 4)), int(gen.integers(1, 3))
        p = int(gen.integers(0, d * (k - 1) + 1))
        size = int(gen.integers(d * (k - 1) + 1, 30))
        out = (size + 2 * p - d * (k - 1) - 1) // s + 1
        if out < 1:
            continue
        win = Window(k, s, p, d)
        n = 5
        lo = gen.integers(0, size, n)
        length = int(gen.integers(1, size + 1))
        hi = np.minimum(lo + length, size)
        regions = from_boxes(lo, hi, lo, hi, size, size)
        carried = through(regions, win, win, out, out)
        for i in range(n):
            y0, y1 = (int(v) for v in regions.bounds()[i, :2])
            need = _reached(y0, y1, win, size, out)
            exact = set(range(*(int(v) for v in carried.out.bounds()[i, :2])))
            box = set(range(int(carried.out.y[i]), int(carried.out.y[i]) + carried.out.h))
            assert need <= exact <= box, (win, size, need, exact, box)  # dilation holes: exact may hold more
            if d == 1 and s <= k:
                assert need == exact
            assert 0 <= carried.out.y[i] and carried.out.y[i] + carried.out.h <= out
            assert carried.tile_y[i] == carried.out.y[i] * s - p
        if carried.out.h:
            assert carried.tile_h == (carried.out.h - 1) * s + d * (k - 1) + 1


def test_union_and_edges():
    a = Regions(np.array([0, 5]), np.array([2, 6]), 3, 3)
    b = Regions(np.array([2, 0]), np.array([2, 6]), 2, 2)
    u = union([a, b], 8, 9)
    # rows: [0, 4) and [0, 8) -> one height 8; columns [2, 5) and [6, 9)
    assert (u.h, u.w) == (8, 3)
    assert u.y.tolist() == [0, 0] and u.x.tolist() == [2, 6]
    # columns [0, 4) and [7, 9): one width 4, the second box moved inward to [5, 9)
    shifted = union([Regions(np.array([0, 0]), np.array([0, 7]), 2, 2),
                     Regions(np.array([0, 0]), np.array([2, 7]), 2, 2)], 8, 9)
    assert (shifted.h, shifted.w) == (2, 4) and shifted.x.tolist() == [0, 5]
    assert union([Regions(a.y, a.x, 0, 0), b], 8, 9).same_as(b)
    edge = from_boxes(np.array([14]), np.array([16]), np.array([0]), np.array([4]), 16, 16)
    assert (edge.h, edge.w, int(edge.y[0])) == (2, 4, 14)


# --- the replay on small models ---------------------------------------------------------------

class Everything(nn.Module):
    """Every kind of call the replay patches, spelled the ways models spell them."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 7, stride=2, padding=3, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.grouped = nn.Conv2d(8, 12, 3, padding=1, groups=4)
        self.depthwise = nn.Conv2d(12, 12, 5, padding="same", groups=12)
        self.scale = nn.Parameter(torch.rand(1, 12, 1, 1) + 0.5)
        self.valid = nn.Conv2d(12, 6, 3)
        self.side = nn.Conv2d(12, 6, 1, stride=1)
        self.head = nn.Conv2d(12, 5, 1)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)), inplace=True)
        x = self.pool(x)
        y = self.dilated(x)
        y.relu_()
        x = x + 0.5 * y                       # __rmul__, __add__
        x = F.hardtanh(self.grouped(x), -2.0, 3.0)
        x = self.depthwise(x) * self.scale    # per-channel parameter
        x = F.silu(x) - 0.25
        z = self.valid(F.pad(x, (1, 1, 1, 1)))
        s = self.side(x)
        s += z                                # in place sum
        x = torch.cat([torch.sigmoid(s), F.hardswish(z)], dim=1)
        x = F.avg_pool2d(self.drop(x).clone().contiguous(), 2)
        x = torch.add(x, x.clamp(min=0.1), alpha=2.0)
        return self.head(x)                   # a map: the placeholder is materialized at the end


class Classifier(nn.Module):
    """Ends in global pooling, a reshape and a linear layer: the incremental part ends there."""

    def __init__(self):
        super().__init__()
        self.features = Everything()
        self.fc = nn.Linear(5, 4)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.fc(x.view(x.size(0), -1))


class BatchDependent(nn.Module):
    """Takes another path for a batch of one than for larger batches: the replay must notice."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        x = self.a(x)
        if x.shape[0] > 2:
            x = x * 2.0
        return self.b(torch.relu(x))


class Fallbacks(nn.Module):
    """Calls the replay must not patch: average pooling leaving padding out of its divisor, a
    reflect pad, a ceil-mode average pool hanging over the edge, and an unknown op (softmax over
    the spatial positions)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3)

    def forward(self, x):
        x = F.avg_pool2d(self.a(x), 3, 1, 1, count_include_pad=False)
        x = self.b(F.pad(x, (1, 1, 1, 1), mode="reflect"))
        x = F.avg_pool2d(x, 2, ceil_mode=True)
        return x.flatten(2).softmax(-1).view_as(x)


def _randomized(model: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
    return model.eval().double()


def _windows(height, width, size, stride, images):
    boxes, src = [], []
    for b in range(images):
        for y0, x0 in itertools.product(range(0, height, stride), range(0, width, stride)):
            boxes.append([y0, min(y0 + size, height), x0, min(x0 + size, width), 0, 3])
            src.append(b)
    return torch.tensor(src, dtype=torch.int32), torch.tensor(boxes, dtype=torch.int32)


def _explicit(x, fill, src, boxes):
    copies = x[src.long()].clone()
    for n, (y0, y1, x0, x1, c0, c1) in enumerate(boxes.tolist()):
        copies[n, c0:c1, y0:y1, x0:x1] = fill[int(src[n]), c0:c1, y0:y1, x0:x1]
    return copies


def _compare(model, x, size=5, stride=6, *, layout=torch.contiguous_format):
    x = x.contiguous(memory_format=layout)
    fill = torch.randn_like(x)
    src, boxes = _windows(x.shape[2], x.shape[3], size, stride, x.shape[0])
    probe = inc.IncrementalProbe(model, inc.record(model, x))
    got = probe(occluded(x, fill, src, boxes, "torch"))
    with torch.no_grad():
        expected = model(_explicit(x, fill, src, boxes))
    return rel_err(got, expected), probe.stats


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_every_patched_call_equals_the_full_recompute(layout):
    torch.manual_seed(0)
    model = _randomized(Everything())
    err, stats = _compare(model, torch.randn(2, 3, 121, 113, dtype=torch.float64), stride=23, layout=layout)
    assert err <= 1e-12
    for kind in ("conv2d", "batch_norm", "relu", "relu_", "max_pool2d", "hardtanh", "silu", "sigmoid", "hardswish",
                 "mul", "add", "add_", "sub", "cat", "pad", "avg_pool2d", "clamp", "dropout", "clone", "contiguous"):
        assert stats[kind] > 0, f"{kind} was not patched: {dict(stats)}"


def test_global_pooling_ends_the_incremental_part():
    torch.manual_seed(1)
    model = _randomized(Classifier())
    err, stats = _compare(model, torch.randn(1, 3, 121, 113, dtype=torch.float64), stride=23)
    assert err <= 1e-12
    assert stats["adaptive_avg_pool2d (full)"] == 1 and stats["conv2d"] > 0


def test_a_changed_region_covering_the_map_runs_in_full():
    torch.manual_seed(2)
    model = _randomized(Classifier())
    err, stats = _compare(model, torch.randn(1, 3, 24, 24, dtype=torch.float64), size=20, stride=30)
    assert err <= 1e-12
    assert any(k.endswith("(full)") and k.startswith("conv2d") for k in stats)


def test_a_model_that_takes_another_path_is_recomputed_in_full():
    torch.manual_seed(3)
    model = BatchDependent().double().eval()
    err, stats = _compare(model, torch.randn(1, 3, 20, 20, dtype=torch.float64), size=4, stride=5)
    assert err <= 1e-12
    assert stats["conv2d"] == 1  # the first convolution, before the paths part


def test_calls_that_can_not_be_patched_are_handed_back():
    torch.manual_seed(4)
    model = Fallbacks().double().eval()
    err, stats = _compare(model, torch.randn(2, 3, 21, 19, dtype=torch.float64), size=3, stride=7)
    assert err <= 1e-12
    assert stats["conv2d"] == 1 and stats["avg_pool2d (full)"] == 1


def test_hooks_are_detected():
    model = BatchDependent()
    assert not inc.has_hooks(model)
    handle = model.b.register_forward_hook(lambda *a: None)
    try:
        assert inc.has_hooks(model)
    finally:
        handle.remove()


def test_float32_error_is_within_twice_pytorchs_own():
    torch.manual_seed(5)
    m64 = _randomized(Classifier())
    m32 = Classifier().eval()
    m32.load_state_dict({k: v.float() for k, v in m64.state_dict().items()})
    x64 = torch.randn(2, 3, 45, 39, dtype=torch.float64)
    fill = torch.zeros_like(x64)
    src, boxes = _windows(45, 39, 7, 8, 2)
    with torch.no_grad():
        expected = m64(_explicit(x64, fill, src, boxes))
        torch_err = rel_err(m32(_explicit(x64, fill, src, boxes).float()).double(), expected)
    x32 = x64.float()
    got = inc.IncrementalProbe(m32, inc.record(m32, x32))(occluded(x32, fill.float(), src, boxes, "cpp"))
    assert rel_err(got.double(), expected) <= 2 * max(torch_err, 4 * torch.finfo(torch.float32).eps)


def test_placeholders_are_released():
    """Values die with the model's references to them (no pass keeps every layer's maps)."""
    torch.manual_seed(6)
    model = _randomized(Everything())
    x = torch.randn(1, 3, 33, 33, dtype=torch.float64)
    src, boxes = _windows(33, 33, 4, 9, 1)
    mode = inc.IncrementalMode(inc.record(model, x))
    with torch.no_grad(), mode:
        out = model(mode.hold(occluded(x, torch.zeros_like(x), src, boxes, "torch")))
    assert len(mode.values) <= 2  # the input's placeholder is gone too once the call returned
    assert math.isfinite(float(mode.real(out).sum()))


# --- fv.occlusion on real architectures -------------------------------------------------------

ISSUE_MODELS = ["vgg16", "resnet18", "resnet50", "resnext50_32x4d", "mobilenet_v2", "densenet121",
                "efficientnet-lite0"]


def _real_model(name):
    import _zoo

    if name == "efficientnet-lite0":
        import featvis_fast as fv

        return fv.load_model()[0].double()
    torch.manual_seed(0)
    model = getattr(_zoo.torchvision_models(), name)(weights=None)
    return _zoo.realistic(model, 64, batch=2).double()


@pytest.fixture
def patched_stats(monkeypatch):
    """The kinds of call every IncrementalProbe of the test ran on patches."""
    stats = {}
    original = inc.IncrementalProbe.__call__

    def call(self, copies):
        try:
            return original(self, copies)
        finally:
            for kind, n in self.stats.items():
                stats[kind] = stats.get(kind, 0) + n

    monkeypatch.setattr(inc.IncrementalProbe, "__call__", call)
    return stats


@pytest.mark.zoo
@pytest.mark.parametrize("name", ISSUE_MODELS)
def test_incremental_occlusion_equals_the_full_recompute_on_real_architectures(name, patched_stats):
    """float64 to 1e-12 on two calls (score and a layer measure), with convolutions patched."""
    import featvis_fast as fv

    model = _real_model(name)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    kwargs = dict(window=12, stride=16, progress=False)
    expected = fv.occlusion(model, x, 3, incremental=False, **kwargs)
    for call in range(2):
        got = fv.occlusion(model, x, 3, **kwargs)
        assert got.dtype == torch.float64 and got.shape == (1, 64, 64)
        assert rel_err(got, expected) <= 1e-12, f"call {call}"
    assert patched_stats.get("conv2d", 0) > 0, patched_stats


@pytest.mark.zoo
@pytest.mark.parametrize("kwargs", [
    dict(measure="layer2"), dict(measure=("layer3", 5)), dict(layer="layer1", window=3, stride=2),
    dict(layer="layer2", window=2, stride=1, measure="layer3"), dict(per_channel=True, window=16, stride=16),
    dict(positions="overhang", fill="blur"), dict(window=[12, 20], stride=[8, 10], fill="mean"),
], ids=["measure", "measure-filter", "feature-map", "feature-map-measure", "per-channel", "overhang-blur",
        "two-specs"])
def test_every_occlusion_option_runs_incrementally(kwargs, patched_stats):
    import featvis_fast as fv

    model = _real_model("resnet18")
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    kwargs = {"window": 12, "stride": 16, "progress": False, **kwargs}
    expected = fv.occlusion(model, x, incremental=False, **kwargs)
    got = fv.occlusion(model, x, **kwargs)
    assert got.shape == expected.shape and expected.abs().max() > 0
    assert rel_err(got, expected) <= 1e-12
    assert patched_stats.get("conv2d", 0) > 0, patched_stats


def test_a_model_with_hooks_runs_the_full_recompute(patched_stats):
    import featvis_fast as fv

    model = _randomized(Classifier())
    x = torch.randn(1, 3, 41, 41, dtype=torch.float64)
    seen = []
    handle = model.features.head.register_forward_hook(lambda m, i, o: seen.append(o.sum().item()))
    try:
        got = fv.occlusion(model, x, 1, window=8, stride=8, progress=False)
    finally:
        handle.remove()
    assert patched_stats == {} and all(math.isfinite(v) for v in seen)
    assert rel_err(got, fv.occlusion(model, x, 1, window=8, stride=8, progress=False)) <= 1e-12
    assert patched_stats.get("conv2d", 0) > 0
