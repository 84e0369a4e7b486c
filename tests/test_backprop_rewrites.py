"""Forward rewrites learnt per model (batch norm folded into its convolution, rectifiers in place):
later calls rewrite and still equal the references; a plan that stops holding (dynamic models,
escapes, caught errors) is found and the call reruns without it; weights changed between calls
are used. Also the input check that the attributions run first."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from _backprop_models import FORMS, FormNet, ReluOnlyNet, reference_attribution, rewrites_off

import featvis_fast as fv
from featvis_fast.engine import rewrites as _rewrites

METHODS = {"gradient": fv.saliency, "deconvnet": fv.deconvnet, "guided": fv.guided_backprop}


def assert_close(ours, expected, rtol=2e-5):
    scale = expected.abs().max().item()
    assert scale > 0, "the reference is all zero: the test would prove nothing"
    err = (ours.double() - expected.double()).abs().max().item()
    assert err <= rtol * scale, f"max error {err:.3g} vs scale {scale:.3g}"


@pytest.fixture
def rewrite_counts(monkeypatch):
    """The `rewritten` counter of every forward, in call order."""
    seen = []
    original = _rewrites.ForwardRewrites.check_no_escapes

    def spy(self):
        seen.append(dict(self.rewritten))
        return original(self)

    monkeypatch.setattr(_rewrites.ForwardRewrites, "check_no_escapes", spy)
    return seen


OUT_OF_PLACE = ["nn.ReLU", "F.relu", "nn.ReLU6", "nn.Hardtanh", "torch.clamp(min=0)", "nn.LeakyReLU(0.1)"]


@pytest.mark.parametrize("rule", list(METHODS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_later_calls_rewrite_and_still_equal_the_reference(rule, dtype, rewrite_counts):
    model = FormNet(OUT_OF_PLACE + ["F.relu_", "Tensor.clamp_(0,6)"], width=7, seed=11).to(dtype)
    x = (torch.randn(3, 3, 9, 10, generator=torch.Generator().manual_seed(5)) * 2).to(dtype)
    expected = reference_attribution(model, x, 2, rule, dtype=dtype)
    first = METHODS[rule](model, x, 2)
    again = [METHODS[rule](model, x, 2) for _ in range(2)]
    assert rewrite_counts[0] == {}, "the first call only watches"
    convs = len(model.forms)
    assert rewrite_counts[1] == {"batch_norm": convs, "rectifier": len(OUT_OF_PLACE)}
    assert rewrite_counts[2] == rewrite_counts[1]
    rtol = 1e-7 if dtype == torch.float64 else 1e-4
    for result in [first] + again:
        assert_close(result, expected, rtol)
    assert_close(again[0], first, 1e-7 if dtype == torch.float64 else 1e-5)


def test_gradcam_rewrites_before_and_after_its_layer(rewrite_counts):
    model = ReluOnlyNet()
    x = torch.randn(2, 3, 12, 13, generator=torch.Generator().manual_seed(1))
    with rewrites_off():
        plain = fv.gradcam(model, x, 3, "layer.0", relu=False)
    first = fv.gradcam(model, x, 3, "layer.0", relu=False)
    second = fv.gradcam(model, x, 3, "layer.0", relu=False)
    assert rewrite_counts[0] == {}
    # stem conv-BN-ReLU and body conv-BN-ReLU: BN in place on the conv output, ReLU in place (a
    # pass that takes a gradient keeps torch's values: no folding, no oneDNN post-op, also before
    # the layer); body's last BN feeds an add, and layer.0 is the captured layer: its output
    # escapes, so it is never rewritten
    assert rewrite_counts[1] == {"batch_norm": 3, "rectifier": 2}
    assert_close(first, plain, 1e-6)
    assert_close(second, plain, 1e-5)


class Dynamic(nn.Module):
    """conv -> BN -> ReLU; `mode` switches on another use of the conv or BN output."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.conv, self.bn = nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5)
        self.head = nn.Linear(5, 4)
        with torch.no_grad():
            self.bn.running_mean.copy_(torch.randn(5, generator=gen) * 0.2)
            self.bn.running_var.copy_(torch.rand(5, generator=gen) + 0.5)
            self.bn.weight.copy_(torch.rand(5, generator=gen) + 0.5)
        self.mode, self.kept = None, None
        self.eval()

    def forward(self, x):
        z = self.conv(x)
        a = self.bn(z)
        r = F.relu(a)
        if self.mode == "conv output again":
            r = r + z
        elif self.mode == "bn output again":
            r = r * a.sigmoid()
        elif self.mode == "caught":
            try:
                r = r + z  # the mismatch is raised here, and swallowed by the model
            except Exception:
                r = r * 1.0
        elif self.mode == "stored":
            self.kept = z
        out = self.head(r.mean(dim=(2, 3)))
        return (out, z) if self.mode == "returned" else out


def _plain_gradient(model, x, target):
    leaf = x.clone().requires_grad_()
    scores = target(model(leaf)) if callable(target) else model(leaf)[:, target]
    (grad,) = torch.autograd.grad(scores.sum(), leaf)
    return grad


@pytest.mark.parametrize("mode", ["conv output again", "bn output again", "caught", "stored", "returned"])
def test_a_plan_that_stops_holding_is_found_and_the_call_reruns(mode, rewrite_counts):
    model = Dynamic()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    target = (lambda out: out[0][:, 1] + 0.1 * out[1].sum(dim=(1, 2, 3))) if mode == "returned" else 1
    fv.saliency(model, x, 1)  # learns: BN folded into conv, ReLU in place
    fv.saliency(model, x, 1)
    assert rewrite_counts[-1] == {"batch_norm": 1, "rectifier": 1}
    model.mode = mode
    got = fv.saliency(model, x, target)
    expected = _plain_gradient(model, x, target)
    assert_close(got, expected, 1e-5)
    plan = _rewrites._PLANS[model]
    assert plan.refused, "the layer whose plan failed is refused from now on"
    again = fv.saliency(model, x, target)  # no mismatch left: one forward
    assert_close(again, expected, 1e-5)
    if mode == "stored":
        assert torch.allclose(model.kept, model.conv(x), atol=1e-6), "the stored tensor is the convolution's own output"


def test_weights_changed_between_calls_are_used():
    model = ReluOnlyNet()
    x = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(2))
    fv.guided_backprop(model, x, 1)
    fv.guided_backprop(model, x, 1)
    with torch.no_grad():
        model.stem[0].weight.data.mul_(-1.5)  # .data: no version bump for anyone to notice
        model.stem[1].running_var.data.mul_(3.0)
        model.body[1].bias.data.add_(0.5)
    got = fv.guided_backprop(model, x, 1)
    with rewrites_off():
        expected = fv.guided_backprop(model, x, 1)
    assert_close(got, expected, 1e-5)


def test_no_rewrites_with_hooks_training_lrp_or_switched_off(rewrite_counts):
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(3))
    model = ReluOnlyNet()
    handle = model.stem[0].register_forward_hook(lambda *a: None)
    for _ in range(2):
        fv.saliency(model, x, 1)
    handle.remove()
    fv.lrp(model, x, 1)
    fv.lrp(model, x, 1)
    assert rewrite_counts == [], "hooks and LRP: no rewrite state at all"
    fv.saliency(model, x, 1)
    previous = _rewrites.set_forward_rewrites(False)
    assert previous is True
    fv.saliency(model, x, 1)
    _rewrites.set_forward_rewrites(True)
    assert len(rewrite_counts) == 1
    model.train()
    with pytest.warns(RuntimeWarning, match="training mode"):
        fv.saliency(model, x, 1)
    assert len(rewrite_counts) == 1


def test_unit_targets_use_the_plan_but_do_not_teach_it(rewrite_counts):
    model = FormNet(["F.relu", "nn.ReLU6", "F.relu"], seed=2)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(6)) * 2
    unit = ("norms.1", 2)
    fv.guided_backprop(model, x, unit)
    assert _rewrites._PLANS[model].rewrites == {}, "a stopped forward leaves consumers unknown"
    fv.guided_backprop(model, x, 0)  # a full forward teaches
    first = fv.guided_backprop(model, x, unit)
    # the captured batch norm's output was planned for an in-place ReLU; reading the capture
    # mismatches, the call reruns and that batch norm is refused; the conv-BN pairs still fold
    assert len(_rewrites._PLANS[model].refused) == 1
    got = fv.guided_backprop(model, x, unit)
    assert rewrite_counts[-1] == {"batch_norm": 2, "rectifier": 1}
    assert_close(first, got, 1e-6)
    with rewrites_off():
        expected = fv.guided_backprop(model, x, unit)
    assert_close(got, expected, 1e-5)


def test_input_check_rejects_nan_and_inf_but_not_large_finite_values():
    model = ReluOnlyNet()
    big = torch.full((1, 3, 6, 6), 3e38)  # its sum overflows to inf: the exact check decides
    assert torch.isinf(big.sum())
    assert fv.saliency(model, big, 0).shape == big.shape
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.randn(1, 3, 6, 6)
        x[0, 1, 2, 3] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            fv.saliency(model, x, 0)


def test_forms_list_covers_the_out_of_place_forms():
    assert set(OUT_OF_PLACE) <= set(FORMS)


# Models from a review of the rewrites: each once gave a later call a different result than
# rewrites switched off (or crashed). Every call must equal the rewrites-off result.
class _GateRelu(nn.Module):  # conv -> ReLU under no_grad: a stop-gradient gate
    def __init__(self, bn=False):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4) if bn else None
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        y = self.c1(x)
        with torch.no_grad():
            gate = self.bn(y) if self.bn is not None else F.relu(y)
        return self.fc((self.c2(x) * gate).flatten(1))


class _CatKeyword(nn.Module):  # the conv output reaches torch.cat through a keyword list
    def __init__(self):
        super().__init__()
        self.c, self.bn, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(8, 5)

    def forward(self, x):
        y = self.c(x)
        r = F.relu(self.bn(y))
        return self.fc(torch.cat(tensors=[r, y], dim=1).mean(dim=(2, 3)))


class _PerSample(nn.Module):  # unbatched conv outputs are views: folding them would apply BN twice
    def __init__(self):
        super().__init__()
        self.c, self.bn, self.fc = nn.Conv1d(3, 6, 3), nn.BatchNorm1d(6), nn.Linear(6, 5)

    def forward(self, x):
        x = x.flatten(2)[..., :8]
        return self.fc(torch.stack([self.bn(self.c(xi)) for xi in x]).mean(dim=2))


class _ClampOut(nn.Module):  # clamp(out=...) under no_grad is no in-place rectifier of its input
    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 5)

    def forward(self, x):
        y = self.c1(x)
        buf = torch.empty_like(y)
        with torch.no_grad():
            torch.clamp(y, min=0, out=buf)
        return self.fc((self.c2(x) * buf).mean(dim=(2, 3)))


class _StatsChanged(nn.Module):  # the BN's statistics change between its conv and its call
    def __init__(self):
        super().__init__()
        self.c, self.bn, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, 5)

    def forward(self, x):
        y = self.c(x)
        with torch.no_grad():
            self.bn.running_mean.fill_(float(x.mean()))  # set from this input: the fold saw the last one's
        return self.fc(F.relu(self.bn(y)).mean(dim=(2, 3)))


class _Reraise(nn.Module):  # the model turns any error of a branch into its own
    def __init__(self):
        super().__init__()
        self.c, self.bn, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, 5)
        self.extra = False

    def forward(self, x):
        y = self.c(x)
        r = F.relu(self.bn(y))
        if self.extra:
            try:
                r = r + y
            except Exception as exc:
                raise RuntimeError("extra branch failed") from exc
        return self.fc(r.mean(dim=(2, 3)))


class _RandomBranch(nn.Module):  # a random draw decides whether the conv output is used again
    def __init__(self):
        super().__init__()
        self.c, self.bn, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, 5)

    def forward(self, x):
        y = self.c(x)
        r = F.relu(self.bn(y))
        if float(torch.rand(())) > 0.5:
            r = r + y
        return self.fc(r.mean(dim=(2, 3)))


def _calibrated(model):
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


@pytest.mark.parametrize("make", [lambda: _GateRelu(), lambda: _GateRelu(bn=True), _CatKeyword, _PerSample,
                                  _ClampOut, _StatsChanged],
                         ids=["no_grad relu", "no_grad bn", "cat keyword", "unbatched", "clamp out", "stats"])
def test_reviewed_models_equal_rewrites_off_in_every_call(make):
    gen = torch.Generator().manual_seed(8)
    xs = [torch.randn(2, 3, 8, 8, generator=gen) * (1 + 0.2 * k) for k in range(3)]
    for method in METHODS.values():
        torch.manual_seed(0)
        model = _calibrated(make())
        state = {k: v.clone() for k, v in model.state_dict().items()}
        with rewrites_off():
            expected = [method(model, x, 1) for x in xs]
        model.load_state_dict(state)
        got = [method(model, x, 1) for x in xs]
        for g, e in zip(got, expected):
            assert_close(g, e, 1e-6)


def test_a_mismatch_reraised_as_another_error_still_reruns():
    torch.manual_seed(0)
    model = _calibrated(_Reraise())
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    fv.saliency(model, x, 1)
    fv.saliency(model, x, 1)
    model.extra = True
    got = fv.saliency(model, x, 1)
    with rewrites_off():
        expected = fv.saliency(model, x, 1)
    assert_close(got, expected, 1e-6)
    assert fv.saliency(model, x, 1).shape == x.shape, "no lasting failure"


def test_the_rerun_draws_the_same_random_numbers():
    torch.manual_seed(0)
    model = _calibrated(_RandomBranch())
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(10))
    for seed in range(6):  # some seeds take the branch in the first attempt, some not
        torch.manual_seed(seed)
        got = fv.saliency(model, x, 1)
        with rewrites_off():
            torch.manual_seed(seed)
            expected = fv.saliency(model, x, 1)
        assert_close(got, expected, 1e-6)


class _Padded(nn.Module):
    """TF-style 'same' padding as EfficientNet-Lite does it: symmetric zero pads (folded into the
    next convolution's padding), an asymmetric one (left alone), and `mode` adds a second use."""

    def __init__(self):
        super().__init__()
        self.pad = nn.ZeroPad2d(1)
        self.c1, self.bn1 = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 4, 3, stride=2)
        self.c3 = nn.Conv2d(4, 4, 5, padding=1)
        self.fc = nn.Linear(4, 5)
        self.mode = None

    def forward(self, x):
        p = self.pad(x)
        h = F.relu(self.bn1(self.c1(p)))
        h = self.c2(F.pad(h, (0, 1, 0, 1)))  # asymmetric: never folded
        q = F.pad(h, [1, 1, 1, 1], value=0.0)
        h = F.relu(self.c3(q))
        if self.mode == "pad output again":
            h = h + q[:, :, 2:-2, 2:-2].mean()
        return self.fc(h.mean(dim=(2, 3)))


def test_symmetric_zero_pads_fold_into_the_convolution(rewrite_counts):
    torch.manual_seed(0)
    model = _calibrated(_Padded())
    x = torch.randn(2, 3, 11, 12, generator=torch.Generator().manual_seed(11))
    with rewrites_off():
        expected = fv.guided_backprop(model, x, 2)
        expected_cam = fv.gradcam(model, x, 2, "c3", relu=False)
    for _ in range(3):
        assert_close(fv.guided_backprop(model, x, 2), expected, 1e-6)
    assert rewrite_counts[-1].get("pad") == 2, "the two symmetric pads fold; the asymmetric one does not"
    assert_close(fv.gradcam(model, x, 2, "c3", relu=False), expected_cam, 1e-5)
    model.mode = "pad output again"  # the stand-in for q is read: a mismatch, a rerun, then refused
    with rewrites_off():
        expected = fv.guided_backprop(model, x, 2)
    assert_close(fv.guided_backprop(model, x, 2), expected, 1e-6)
    assert_close(fv.guided_backprop(model, x, 2), expected, 1e-6)
    assert rewrite_counts[-1].get("pad") == 1


@pytest.mark.parametrize("form", ["nn.ReLU", "nn.ReLU6", "nn.Hardtanh", "F.hardtanh(0,4)", "nn.LeakyReLU(0.1)",
                                  "torch.clamp(min=0)"])
def test_forward_only_passes_keep_pytorchs_values_bit_for_bit(form, rewrite_counts):
    """Occlusion's passes take no gradient; the rewrites (batch norm and rectifiers in place)
    still change no value: every output equals plain PyTorch's in the same layout, bit for bit,
    on the first (watching) and later (rewriting) calls. (Folding batch norm into the
    convolution cost float32 digits and was dropped.)"""
    from featvis_fast.engine.inference import rewritten_forward

    model = FormNet([form, form], width=6, seed=4)
    x = torch.randn(5, 3, 12, 12, generator=torch.Generator().manual_seed(12)).contiguous(
        memory_format=torch.channels_last) * 2
    with torch.no_grad():
        expected = model(x)
    for _ in range(3):
        assert torch.equal(rewritten_forward(model, lambda: model(x)), expected)
    assert rewrite_counts[-1].get("batch_norm") == 2
    with rewrites_off():
        expected_map = fv.occlusion(model, x, 1, window=4, stride=4, progress=False)
    assert torch.equal(fv.occlusion(model, x, 1, window=4, stride=4, progress=False), expected_map)


@pytest.mark.parametrize("shape,pad", [((2, 3, 5, 6), (0, 1, 0, 1)), ((2, 3, 5, 6), (2, 2, 1, 0)), ((2, 5, 7), (1, 3)),
                                       ((1, 2, 3, 4, 5), (1, 0, 0, 2, 3, 1)), ((2, 3, 4, 5), (1, 1))])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_one_pass_zero_pad_equals_torch(shape, pad, layout):
    from featvis_fast.engine.fast_pad import zero_pad

    x = torch.randn(shape) + 1.0
    if layout == "channels_last" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ours, theirs = zero_pad((x, pad), {}), F.pad(x, pad)
    assert torch.equal(ours, theirs) and ours.stride() == theirs.stride()
    assert zero_pad((x, pad), {"value": 1.0}) is NotImplemented
    assert zero_pad((x, tuple(-p for p in pad)), {}) is NotImplemented or not any(pad)


def test_rewritten_forward_keeps_pytorchs_values_bit_for_bit(rewrite_counts):
    """In passes that take a gradient the rewrites change no value: the output the target sees
    equals plain PyTorch's forward in the layout the CPU attributions use (channels-last), bit
    for bit, on the first call (watching) and on later ones (batch norm and rectifiers in place).
    The rectifier masks are then PyTorch's own, so a float32 attribution flips exactly the
    units PyTorch's flips."""
    model = FormNet(OUT_OF_PLACE + ["F.relu_", "Tensor.clamp_(0,6)"], width=7, seed=11)
    x = torch.randn(3, 3, 9, 10, generator=torch.Generator().manual_seed(5)) * 2
    seen = []

    def target(out):
        seen.append(out.detach().clone())
        return out[:, 2]

    with torch.no_grad():
        expected = model(x.contiguous(memory_format=torch.channels_last))
    for _ in range(3):
        fv.saliency(model, x, target)
    assert rewrite_counts[1]["batch_norm"] == len(model.forms)
    for out in seen:
        assert torch.equal(out, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_lean_batch_norm_backward_is_pytorchs_bit_for_bit(dtype, layout):
    """The lean batch norm's backward rounds as torch's does (invstd = rsqrt(var + eps) in float64, then
    grad * invstd * weight), and the lean convolution's backward runs in its input's layout as
    torch's does: with a batch norm no convolution feeds (nothing folded) and channels whose
    running variance is 0, the saliency equals autograd's in the layout CPU attributions run in
    (channels-last) bit for bit, whatever the input's layout, on the first and later calls."""
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
    model = nn.Sequential(nn.BatchNorm2d(5), nn.Conv2d(5, 4, 3), nn.Flatten(), nn.Linear(4 * 5 * 6, 3))
    with torch.no_grad():
        bn = model[0]
        bn.weight.copy_(0.5 + torch.rand(5, generator=gen))
        bn.running_mean.copy_(torch.randn(5, generator=gen))
        bn.running_var.copy_(torch.rand(5, generator=gen) * 3)
        bn.running_var[1] = 0.0
    model = model.to(dtype).eval()
    x = torch.randn(2, 5, 7, 8, generator=gen, dtype=dtype).contiguous(memory_format=layout)
    xr = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    (expected,) = torch.autograd.grad(model(xr)[:, 1].sum(), xr)
    for _ in range(2):
        assert torch.equal(fv.saliency(model, x, 1), expected)
