"""create_graph=True: attributions that stay in the autograd graph.

Every plain-gradient method (saliency, input x gradient, integrated gradients, GradientSHAP,
SmoothGrad around them) and every gradient CAM (Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM,
HiResCAM, Eigen-CAM, EigenGrad-CAM, FullGrad) can return a result that is differentiable with
respect to x and the model's parameters. Checked three ways:
- the value equals the fused path's (create_graph=False) in float64;
- its derivatives, with respect to x and to a convolution weight, pass torch.autograd.gradcheck
  (against finite differences) on a smooth model, where second derivatives are not zero;
- on torchvision's ResNet-18 (piecewise linear), a parameter gradient through Grad-CAM equals
  the one of a Grad-CAM written here with hooks and autograd.grad(create_graph=True).
"""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import featvis_fast as fv

LAYER = "block"
CAMS = ("gradcam", "gradcam_pp", "xgradcam", "layercam", "hirescam", "eigencam", "eigengradcam")


class Smooth(nn.Module):
    """SiLU / softplus / tanh activations (non-zero second derivatives), batch norm, a residual add."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5), nn.SiLU())
        self.block = nn.Sequential(nn.Conv2d(5, 6, 3, padding=1), nn.Softplus())
        self.skip = nn.Conv2d(5, 6, 1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        y = self.stem(x)
        y = torch.tanh(self.block(y) + self.skip(y))
        return self.fc(y.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Smooth()
    with torch.no_grad():
        m.stem[1].running_mean.uniform_(-0.2, 0.2)
        m.stem[1].running_var.uniform_(0.5, 1.5)
        m.stem[1].weight.uniform_(0.5, 1.5)
    return m.double().eval()


def _methods():
    """name -> f(model, x, target, create_graph) -> attribution."""
    found = {
        "saliency": lambda m, x, t, cg: fv.saliency(m, x, t, create_graph=cg),
        "saliency-activation-seed": lambda m, x, t, cg: fv.saliency(m, x, t, grad_seed="activation", create_graph=cg),
        "input_x_gradient": lambda m, x, t, cg: fv.input_x_gradient(m, x, t, create_graph=cg),
        "integrated_gradients": lambda m, x, t, cg: fv.integrated_gradients(m, x, t, steps=3, create_graph=cg),
        "gradient_shap": lambda m, x, t, cg: fv.gradient_shap(
            m, x, t, torch.zeros(2, *x.shape[1:], dtype=x.dtype), samples=2,
            generator=torch.Generator().manual_seed(3), create_graph=cg),
        "smoothgrad": lambda m, x, t, cg: fv.smoothgrad(
            fv.saliency, m, x, t, samples=2, sigma=0.1, generator=torch.Generator().manual_seed(4), create_graph=cg),
        "fullgrad": lambda m, x, t, cg: fv.fullgrad(m, x, t, create_graph=cg),
    }
    for name in CAMS:
        found[name] = functools.partial(
            lambda m, x, t, cg, method: method(m, x, t, LAYER, upsample=True, create_graph=cg),
            method=getattr(fv, name))
    return found


METHODS = _methods()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_value_equals_the_fused_path(model, name):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    target = torch.tensor([1, 3])
    fused = METHODS[name](model, x, target, False)
    graph = METHODS[name](model, x.clone().requires_grad_(True), target, True)
    assert not fused.requires_grad
    assert graph.requires_grad and graph.grad_fn is not None
    torch.testing.assert_close(graph.detach(), fused, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_derivative_in_x_matches_finite_differences(model, name):
    torch.manual_seed(2)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 2])
    assert torch.autograd.gradcheck(lambda inp: METHODS[name](model, inp, target, True), (x,), eps=1e-6, atol=1e-6,
                                    rtol=1e-4)


class _WeightOverride(nn.Module):
    """Runs `inner` with one parameter replaced by `self.weight` (a tensor gradcheck varies)."""

    def __init__(self, inner: nn.Module, name: str):
        super().__init__()
        self.inner, self.name, self.weight = inner, name, None
        self.eval()

    def forward(self, x):
        return torch.func.functional_call(self.inner, {self.name: self.weight}, (x,))


@pytest.mark.parametrize("name", ["saliency", "integrated_gradients", "gradcam", "hirescam", "fullgrad"])
def test_derivative_in_a_parameter_matches_finite_differences(model, name):
    torch.manual_seed(3)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    target = torch.tensor([1, 0])
    wrapped = _WeightOverride(model, "block.0.weight")
    layer_method = name in ("gradcam", "hirescam")

    def attribution(weight):
        wrapped.weight = weight
        if layer_method:
            return getattr(fv, name)(wrapped, x, target, "inner." + LAYER, create_graph=True)
        return METHODS[name](wrapped, x, target, True)

    weight = model.block[0].weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(attribution, (weight,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_second_order_saliency_matches_double_backward(model):
    """A Hessian-vector product through create_graph saliency equals torch.func's."""
    torch.manual_seed(4)
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    v = torch.randn_like(x)
    grad = fv.saliency(model, x, 2, create_graph=True)
    (hvp,) = torch.autograd.grad((grad * v).sum(), x)
    score = lambda inp: model(inp)[:, 2].sum()
    _, expected = torch.func.jvp(torch.func.grad(score), (x.detach(),), (v,))
    torch.testing.assert_close(hvp, expected, rtol=1e-10, atol=1e-12)


def test_the_callers_graph_continues_through_x(model):
    """x computed from a parameter upstream: the gradient reaches that parameter."""
    torch.manual_seed(5)
    scale = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    base = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    cam = fv.gradcam(model, base * scale, torch.tensor([0, 1]), LAYER, create_graph=True)
    (grad,) = torch.autograd.grad(cam.sum(), scale)
    step = 1e-6
    with torch.no_grad():
        up = fv.gradcam(model, base * (scale + step), torch.tensor([0, 1]), LAYER).sum()
        down = fv.gradcam(model, base * (scale - step), torch.tensor([0, 1]), LAYER).sum()
    assert abs(grad.item() - (up - down).item() / (2 * step)) <= 1e-6 * max(1.0, abs(grad.item()))


def test_bad_create_graph(model):
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    with pytest.raises(TypeError, match="create_graph must be True or False"):
        fv.saliency(model, x, 0, create_graph="yes")
    with pytest.raises(TypeError, match="create_graph must be True or False"):
        fv.gradcam(model, x, 0, LAYER, create_graph=1)
    with pytest.raises(TypeError, match="create_graph"):
        fv.guided_backprop(model, x, 0, create_graph=True)


# --- a piecewise-linear zoo model: a training step through Grad-CAM ---------------------------------

def _hooked_gradcam(model, x, target, layer_module):
    """Grad-CAM written plainly: a forward hook keeps the layer output, autograd.grad(create_graph)."""
    kept = []
    handle = layer_module.register_forward_hook(lambda mod, inp, out: kept.append(out))
    try:
        scores = model(x).gather(1, target[:, None]).sum()
    finally:
        handle.remove()
    (grads,) = torch.autograd.grad(scores, kept[0], create_graph=True)
    return F.relu((grads.mean(dim=(2, 3), keepdim=True) * kept[0]).sum(dim=1))


@pytest.mark.zoo
def test_gradcam_training_step_on_resnet18():
    import _zoo

    if not _zoo.has_torchvision():
        pytest.skip("torchvision is not installed (.ci/run installs it)")
    model = _zoo.build("torchvision", "resnet18")[0].double()
    torch.manual_seed(6)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    target = torch.tensor([3, 7])
    ours = fv.gradcam(model, x, target, "layer4", create_graph=True)
    expected = _hooked_gradcam(model, x, target, model.layer4)
    torch.testing.assert_close(ours.detach(), expected.detach(), rtol=1e-9, atol=1e-12)
    params = [model.layer4[1].conv2.weight, model.fc.weight]
    ours_grads = torch.autograd.grad((ours ** 2).sum(), params)
    expected_grads = torch.autograd.grad((expected ** 2).sum(), params)
    for a, b in zip(ours_grads, expected_grads):
        assert b.abs().max() > 0
        assert ((a - b).abs().max() / b.abs().max()).item() <= 1e-9
