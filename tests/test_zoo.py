"""The backprop family on torchvision's and timm's own CNNs (random weights, realistic batch-norm
statistics; see _zoo), against independent references.

The bar, per model and method:
- float64 equal to the reference to 1e-9 relative (max |a - b| / max |b|), on the first call
  (the forward rewrites watch) and on a later one (they rewrite);
- float32 error against the float64 reference at most 2x the error of plain PyTorch float32 on
  the same model, contiguous or channels-last, whichever is larger. Rectifiers make the
  gradient discontinuous: float32 rounding flips near-zero units. Our forward keeps PyTorch's
  values bit for bit (tested in test_backprop_rewrites), so it flips the same units PyTorch's
  channels-last forward flips, and the comparison does not depend on the machine's rounding.

References: autograd (saliency); the model with F.relu / F.relu6 / F.hardtanh / F.leaky_relu
(and torch.relu) patched to rule functions (guided backprop, DeconvNet); Captum's LayerGradCam
(Grad-CAM) and its GuidedGradCam composition; plain loops for occlusion (checked against Captum's
Occlusion) and RISE; Zennit's Epsilon rule for LRP on VGG-11. Skipped without torchvision / timm
(`.ci/run` installs both, and Zennit: design.md 3b).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import warnings

import _zoo
import pytest
import torch
import torch.nn.functional as F

import featvis_fast as fv

pytestmark = pytest.mark.skipif(not _zoo.has_timm(), reason="torchvision and timm are not installed")

BATCH = 2


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    b = b.double()
    return ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


def _rule_function(f, derivative, slope=lambda *args: 0.0):
    """A rectifier f whose backward is dx = g * derivative(x) * d(g), d(g) = 1 where g > 0 else
    the leaky slope (0 for ReLU, ReLU6, Hardtanh): featvis_fast's guided rule
    (_rectifier_reference) with derivative = f', its DeconvNet rule with derivative = 1."""
    class Rule(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, *args):
            ctx.save_for_backward(x)
            ctx.args = args
            return f(x.clone(), *args)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            sign = torch.where(g > 0, g.new_tensor(1.0), g.new_tensor(slope(*ctx.args)))  # slope in g's precision
            return (g * derivative(x, *ctx.args) * sign,) + (None,) * len(ctx.args)
    return Rule.apply


@contextlib.contextmanager
def rule_functions(rule: str):
    """F.relu, torch.relu(_), F.relu6, F.hardtanh and F.leaky_relu with the guided or DeconvNet
    rule (a plain, out-of-place reference written here, independent of featvis_fast's mode)."""
    hardtanh, leaky = F.hardtanh, F.leaky_relu
    t_relu = torch.relu
    guided = rule == "guided"

    def through(d):
        return d if guided else (lambda x, *args: torch.ones_like(x))

    relu_rule = _rule_function(lambda x: t_relu(x), through(lambda x: (x > 0).to(x.dtype)))
    hardtanh_rule = _rule_function(lambda x, lo, hi: hardtanh(x, lo, hi),
                                   through(lambda x, lo, hi: ((x > lo) & (x < hi)).to(x.dtype)))
    leaky_rule = _rule_function(lambda x, s: leaky(x, s),
                                through(lambda x, s: torch.where(x > 0, x.new_tensor(1.0), x.new_tensor(s))),
                                lambda s: s)
    patches = {
        (F, "relu"): lambda x, inplace=False: relu_rule(x),
        (torch, "relu"): lambda x: relu_rule(x),
        (torch, "relu_"): lambda x: relu_rule(x),
        (F, "relu6"): lambda x, inplace=False: hardtanh_rule(x, 0.0, 6.0),
        (F, "hardtanh"): lambda x, min_val=-1.0, max_val=1.0, inplace=False: hardtanh_rule(x, min_val, max_val),
        (F, "leaky_relu"): lambda x, negative_slope=0.01, inplace=False: leaky_rule(x, negative_slope),
    }
    saved = {key: getattr(*key) for key in patches}
    try:
        for (mod, name), fn in patches.items():
            setattr(mod, name, fn)
        yield
    finally:
        for (mod, name), fn in saved.items():
            setattr(mod, name, fn)


def grad_reference(model, x, t, rule=None):
    """d(output[b, t_b]) / dx by autograd, with the rectifiers' rule replaced (None: plain)."""
    x = x.detach().clone().requires_grad_(True)
    with rule_functions(rule) if rule else contextlib.nullcontext():
        out = model(x)
        (g,) = torch.autograd.grad(out[torch.arange(len(t)), t].sum(), x)
    return g


def gradcam_reference(model, x, t, layer):
    from captum.attr import LayerGradCam

    return LayerGradCam(model, dict(model.named_modules())[layer]).attribute(x, target=t, relu_attributions=True)[:, 0]


def guided_gradcam_reference(model, x, t, layer):
    """Captum's GuidedGradCam composition: guided backprop x the Grad-CAM map, nearest-upsampled."""
    cam = F.interpolate(gradcam_reference(model, x, t, layer)[:, None], size=x.shape[-2:], mode="nearest")
    return grad_reference(model, x, t, "guided") * cam


METHODS = {
    "saliency": (lambda m, x, t, layer: fv.saliency(m, x, t), lambda m, x, t, layer: grad_reference(m, x, t)),
    "deconvnet": (lambda m, x, t, layer: fv.deconvnet(m, x, t, nonlinear="ignore"),
                  lambda m, x, t, layer: grad_reference(m, x, t, "deconvnet")),
    "guided_backprop": (lambda m, x, t, layer: fv.guided_backprop(m, x, t, nonlinear="ignore"),
                        lambda m, x, t, layer: grad_reference(m, x, t, "guided")),
    "gradcam": (lambda m, x, t, layer: fv.gradcam(m, x, t, layer), gradcam_reference),
    "guided_gradcam": (lambda m, x, t, layer: fv.guided_gradcam(m, x, t, layer, nonlinear="ignore"),
                       guided_gradcam_reference),
}


@functools.lru_cache(maxsize=1)
def _model(family, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, side, layer = _zoo.build(family, name)
    x64 = torch.randn(BATCH, 3, side, side, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    m64 = copy.deepcopy(model).double()
    with torch.no_grad():
        t = m64(x64).argmax(1)
    return model, m64, x64, t, layer


def _cases():
    for family, name in _zoo.ZOO:
        for method in METHODS:
            yield pytest.param(family, name, method, id=f"{name}-{method}")


@pytest.mark.zoo
@pytest.mark.parametrize("family,name,method", list(_cases()))
def test_backprop_family_on_real_architectures(family, name, method):
    ours, reference = METHODS[method]
    m32, m64, x64, t, layer = _model(family, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-piecewise-linear activations, Captum's notes
        expected = reference(m64, x64, t, layer)
        assert expected.abs().max() > 0, "a degenerate reference proves nothing"
        for call in range(2):  # the first call watches, the second rewrites
            got = ours(m64, x64, t, layer)
            assert got.dtype == torch.float64
            err = rel_err(got, expected)
            assert err <= 1e-9, f"float64 call {call}: relative error {err:.2e}"
        x32 = x64.float()
        mcl = copy.deepcopy(m32).to(memory_format=torch.channels_last)
        torch_err = max(rel_err(reference(m32, x32, t, layer), expected),
                        rel_err(reference(mcl, x32.contiguous(memory_format=torch.channels_last), t, layer), expected))
        for call in range(2):
            err = rel_err(ours(m32, x32, t, layer), expected)
            assert err <= 2 * torch_err, f"float32 call {call}: {err:.2e} > 2 x PyTorch's {torch_err:.2e}"


def occlusion_reference(model, x, t, window: int, stride: int):
    """Captum's Occlusion by a plain loop: windows start at 0, stride, ..., ceil((side - window) /
    stride) * stride (the last one cut at the border), zero fill; per window the target's score
    drop; a pixel gets the mean over the windows covering it (0 where none does)."""
    b, _, h, w = x.shape
    rows = torch.arange(b)
    sums = torch.zeros(b, h, w, dtype=x.dtype)
    counts = torch.zeros(h, w, dtype=x.dtype)

    def starts(side):
        return [i * stride for i in range(-(-(side - window) // stride) + 1)]

    with torch.no_grad():
        clean = model(x)[rows, t]
        for y0 in starts(h):
            for x0 in starts(w):
                occluded = x.clone()
                occluded[:, :, y0:y0 + window, x0:x0 + window] = 0
                sums[:, y0:y0 + window, x0:x0 + window] += (clean - model(occluded)[rows, t])[:, None, None]
                counts[y0:y0 + window, x0:x0 + window] += 1
    return torch.where(counts > 0, sums / counts.clamp_min(1), 0.0)


def rise_reference(model, x, t, cells, shifts, p: float, batched: bool = True):
    """RISE in plain PyTorch over the same masks: sum_i softmax score(x * M_i) * M_i / (N p),
    with all masked copies in one batch (mask-major, as a vectorized loop runs them) or one
    mask at a time (batched=False)."""
    from featvis_fast import _perturbation_reference as pref

    masks = pref.rise_masks(cells.to(x.dtype), shifts, *x.shape[-2:])  # float64 masks for float64 images
    n, b = masks.shape[0], x.shape[0]
    with torch.no_grad():
        if batched:
            copies = (masks[:, None, None] * x[None]).reshape(n * b, *x.shape[1:])
            scores = torch.softmax(model(copies.contiguous(memory_format=_layout_of(x))), dim=1)
        else:
            scores = torch.cat([torch.softmax(model(x * m), dim=1) for m in masks])
    weights = scores[torch.arange(n * b), t.repeat(n)].reshape(n, b)
    return torch.einsum("nb,nhw->bhw", weights, masks) / (n * p)


def _layout_of(x):
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() \
        else torch.contiguous_format


def _perturbation(method, side):
    """(ours(model, x, t), reference(model, x, t)) for a small, overlapping configuration."""
    if method == "occlusion":
        window, stride = side // 4, side // 6
        return (lambda m, x, t: fv.occlusion(m, x, t, window=window, stride=stride, progress=False),
                lambda m, x, t: occlusion_reference(m, x, t, window, stride))
    from featvis_fast.perturbation import random_masks

    n, grid, p = 12, 4, 0.5
    cells, shifts = random_masks(n, (grid, grid), p, side, side, torch.Generator().manual_seed(7))
    return (lambda m, x, t: fv.rise(m, x, t, n_masks=n, grid=grid, p=p, seed=7, progress=False),
            lambda m, x, t, batched=True: rise_reference(m, x, t, cells, shifts, p, batched))


@pytest.mark.zoo
@pytest.mark.parametrize("method", ["occlusion", "rise"])
@pytest.mark.parametrize("family,name", _zoo.ZOO, ids=[n for _, n in _zoo.ZOO])
def test_occlusion_and_rise_on_real_architectures(family, name, method):
    """float64 equal to the plain loop to 1e-9 on the first and later calls (the forward rewrites
    act from the second); float32 within 2x PyTorch's own error."""
    m32, m64, x64, t, _ = _model(family, name)
    ours, reference = _perturbation(method, x64.shape[-1])
    expected = reference(m64, x64, t)
    assert expected.abs().max() > 0, "a degenerate reference proves nothing"
    for call in range(2):
        got = ours(m64, x64, t)
        assert got.dtype == torch.float64
        err = rel_err(got, expected)
        assert err <= 1e-9, f"float64 call {call}: relative error {err:.2e}"
    x32 = x64.float()
    mcl = copy.deepcopy(m32).to(memory_format=torch.channels_last)
    plain = [(m32, x32), (mcl, x32.contiguous(memory_format=torch.channels_last))]
    torch_err = max(rel_err(reference(m, x, t), expected) for m, x in plain)
    if method == "rise":  # PyTorch's float32 error depends on the batch: one mask at a time, or all at once
        torch_err = max([torch_err] + [rel_err(reference(m, x, t, batched=False), expected) for m, x in plain])
    for call in range(2):
        err = rel_err(ours(m32, x32, t), expected)
        assert err <= 2 * torch_err, f"float32 call {call}: {err:.2e} > 2 x PyTorch's {torch_err:.2e}"


@pytest.mark.zoo
def test_occlusion_matches_captum_on_a_real_architecture():
    """The plain-loop reference above is Captum's Occlusion (window over all channels, zero
    baseline): checked on resnet18 to float32 precision (Captum returns float32 even for a
    float64 model and input)."""
    from captum.attr import Occlusion

    _, m64, x64, t, _ = _model("torchvision", "resnet18")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        captum = Occlusion(m64).attribute(x64, sliding_window_shapes=(3, 8, 8), strides=(3, 5, 5), baselines=0.0,
                                          target=t, perturbations_per_eval=16)[:, 0]
    assert rel_err(occlusion_reference(m64, x64, t, 8, 5), captum) <= 1e-6
    assert rel_err(fv.occlusion(m64, x64, t, window=8, stride=5, progress=False), captum) <= 1e-6


@pytest.mark.zoo
def test_lrp_epsilon_matches_zennit_on_vgg11():
    """LRP-epsilon on torchvision's plain VGG-11 against Zennit's Epsilon rule on every conv and
    linear layer (rectifiers pass relevance, average pooling by Zennit's Norm rule, max pooling to
    the winner), with the target's logit as the relevance that enters: float64 to 1e-9 on the
    first and later calls, float32 within 2x Zennit's own float32 error."""
    _zoo.torchvision_models()  # zennit imports torchvision: the schemas first, also when run alone
    pytest.importorskip("zennit")
    from zennit.composites import LayerMapComposite
    from zennit.core import Stabilizer
    from zennit.rules import Epsilon, Norm, Pass
    from zennit.types import Activation, AvgPool

    eps = 1e-3
    m32, m64, x64, t, _ = _model("torchvision", "vgg11")

    def reference(model, x):
        composite = LayerMapComposite(layer_map=[
            (Activation, Pass()),
            (AvgPool, Norm(stabilizer=Stabilizer(epsilon=1e-30))),  # exact proportions (the z-rule)
            ((torch.nn.Conv2d, torch.nn.Linear), Epsilon(epsilon=eps)),
        ])
        x = x.detach().clone().requires_grad_(True)
        with composite.context(model) as modified:
            out = modified(x)
            seed = torch.zeros_like(out)
            seed[torch.arange(len(t)), t] = out[torch.arange(len(t)), t].detach()
            (relevance,) = torch.autograd.grad(out, x, seed)
        return relevance

    expected = reference(m64, x64)
    assert expected.abs().max() > 0, "a degenerate reference proves nothing"
    for call in range(2):
        err = rel_err(fv.lrp(m64, x64, t, eps=eps), expected)
        assert err <= 1e-9, f"float64 call {call}: relative error {err:.2e}"
    x32 = x64.float()
    torch_err = rel_err(reference(m32, x32), expected)
    for call in range(2):
        err = rel_err(fv.lrp(m32, x32, t, eps=eps), expected)
        assert err <= 2 * torch_err, f"float32 call {call}: {err:.2e} > 2 x Zennit's {torch_err:.2e}"
