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
(and torch.relu) patched to rule functions (guided backprop); Captum's LayerGradCam (Grad-CAM).
Skipped without torchvision / timm (`.ci/run` installs both: design.md 3b).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import warnings

import pytest
import torch
import torch.nn.functional as F

import _zoo
import featvis_fast as fv

pytestmark = pytest.mark.skipif(not _zoo.has_timm(), reason="torchvision and timm are not installed")

BATCH = 2


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    b = b.double()
    return ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


def _rule_function(f, derivative, slope=lambda *args: 0.0):
    """The guided rule of featvis_fast's definition (_rectifier_reference): dx = g * f'(x) * d(g),
    d(g) = 1 where g > 0 else the leaky slope (0 for ReLU, ReLU6, Hardtanh)."""
    class Rule(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, *args):
            ctx.save_for_backward(x)
            ctx.args = args
            return f(x.clone(), *args)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            sign = torch.where(g > 0, 1.0, slope(*ctx.args)).to(g.dtype)
            return (g * derivative(x, *ctx.args) * sign,) + (None,) * len(ctx.args)
    return Rule.apply


@contextlib.contextmanager
def guided_functions():
    """F.relu, torch.relu(_), F.relu6, F.hardtanh and F.leaky_relu with the guided rule (a plain,
    out-of-place reference written here, independent of featvis_fast's mode)."""
    relu, hardtanh, leaky = F.relu, F.hardtanh, F.leaky_relu
    t_relu, t_relu_ = torch.relu, torch.relu_
    relu_rule = _rule_function(lambda x: t_relu(x), lambda x: (x > 0).to(x.dtype))
    hardtanh_rule = _rule_function(lambda x, lo, hi: hardtanh(x, lo, hi), lambda x, lo, hi: ((x > lo) & (x < hi)).to(x.dtype))
    leaky_rule = _rule_function(lambda x, s: leaky(x, s), lambda x, s: torch.where(x > 0, 1.0, s).to(x.dtype),
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


def grad_reference(model, x, t, guided=False):
    x = x.detach().clone().requires_grad_(True)
    with guided_functions() if guided else contextlib.nullcontext():
        out = model(x)
        (g,) = torch.autograd.grad(out[torch.arange(len(t)), t].sum(), x)
    return g


def gradcam_reference(model, x, t, layer):
    from captum.attr import LayerGradCam

    return LayerGradCam(model, dict(model.named_modules())[layer]).attribute(x, target=t, relu_attributions=True)[:, 0]


METHODS = {
    "saliency": (lambda m, x, t, layer: fv.saliency(m, x, t), lambda m, x, t, layer: grad_reference(m, x, t)),
    "guided_backprop": (lambda m, x, t, layer: fv.guided_backprop(m, x, t, nonlinear="ignore"),
                        lambda m, x, t, layer: grad_reference(m, x, t, guided=True)),
    "gradcam": (lambda m, x, t, layer: fv.gradcam(m, x, t, layer), gradcam_reference),
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


# Open (issue 14), measured on the 2-core CPU: guided backprop on mnasnet0_5 has float32 error
# 5.4e-7 against PyTorch's 2.1e-7 (2.6x; not from the backward batch-norm fold: 4.3e-7 without
# it), and on cspdarknet53 (LeakyReLU) float64 error 3.0e-9. strict: a fix shows as XPASS.
KNOWN_OPEN = {("mnasnet0_5", "guided_backprop"): "float32 error 2.6x PyTorch's",
              ("cspdarknet53", "guided_backprop"): "float64 relative error 3e-9 (LeakyReLU)"}


def _cases():
    for family, name in _zoo.ZOO:
        for method in METHODS:
            reason = KNOWN_OPEN.get((name, method))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(family, name, method, id=f"{name}-{method}", marks=marks)


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
