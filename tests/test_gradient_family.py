"""Input x gradient, integrated gradients, SmoothGrad / VarGrad and GradientSHAP against Captum 0.9.

Captum draws its random numbers inside (NumPy's global generator for GradientSHAP's baselines and
path points, torch's for the noise); each parity test seeds both, runs Captum, seeds them again
and replays the same draws in the same order, and gives them to ours explicitly (`noise=`,
`baseline_index=`, `alphas=`), rearranged from Captum's image-major rows (b * samples + s) to
ours (samples, B). Float64 results must equal Captum's to 1e-9 relative (max |a - b| / max |b|);
on torchvision's ResNet-50, VGG-16 and MobileNetV2, float32 ones must be within 2x Captum's own
float32 error against float64, contiguous or channels-last, whichever is larger (test_zoo's bar:
rectifiers make gradients discontinuous, and our CPU passes run channels-last).
"""
from __future__ import annotations

import copy
import functools
import warnings

import _zoo
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import featvis_fast as fv
from featvis_fast.backprop.path import METHODS, quadrature

captum_attr = pytest.importorskip("captum.attr")

B, C, H, W = 3, 3, 11, 13


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    b = b.double()
    return ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


class Mixed(nn.Module):
    """Module, in-place and functional rectifiers, batch norm, max pooling and a residual add."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn = nn.Conv2d(C, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.act = nn.ReLU(inplace=True)
        self.conv2, self.conv3 = nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 8, 3)
        self.fc = nn.Linear(8, 7)

    def forward(self, x):
        y = self.act(self.bn(self.conv1(x)))
        y = F.relu6(self.conv2(y)) + y
        y = F.max_pool2d(torch.relu(self.conv3(y)), 2)
        return self.fc(y.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Mixed()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.3, 0.3)
        m.bn.running_var.uniform_(0.5, 2.0)
        m.bn.weight.uniform_(0.5, 1.5)
    return m.double().eval()


@pytest.fixture(scope="module")
def module_relu_model():
    """Rectifiers as nn.ReLU modules only: Captum's guided backprop sees no others."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(C, 6, 3), nn.ReLU(), nn.Conv2d(6, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 7)).double().eval()


@pytest.fixture
def x():
    return torch.randn(B, C, H, W, dtype=torch.float64)


TARGET = torch.tensor([1, 4, 6])


def _captum(cls, model, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum's notes on requires_grad and hooks
        return getattr(captum_attr, cls)(model).attribute(*args, **kwargs)


def _image_major_to_ours(t: torch.Tensor, samples: int) -> torch.Tensor:
    """Captum's (B * samples, ...) rows, image-major, -> (samples, B, ...)."""
    return t.reshape(-1, samples, *t.shape[1:]).transpose(0, 1)


def _captum_noise(x: torch.Tensor, samples: int, stdev: float) -> torch.Tensor:
    """The noise Captum's NoiseTunnel draws (torch.normal with a float32 std), as (samples, B, ...)."""
    size = (x.shape[0] * samples, *x.shape[1:])
    return _image_major_to_ours(torch.normal(0, torch.tensor(stdev).repeat(size)), samples)


def test_input_x_gradient_matches_captum(model, x):
    ours = fv.input_x_gradient(model, x, TARGET)
    assert rel_err(ours, _captum("InputXGradient", model, x, target=TARGET)) <= 1e-9
    assert torch.equal(ours, x * fv.saliency(model, x, TARGET))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("internal_batch_size", [None, 4])
def test_integrated_gradients_matches_captum(model, x, method, internal_batch_size):
    baseline = torch.randn(1, C, H, W, dtype=torch.float64)
    ours, delta = fv.integrated_gradients(model, x, TARGET, baseline, steps=9, method=method,
                                          internal_batch_size=internal_batch_size, return_delta=True)
    theirs, their_delta = _captum("IntegratedGradients", model, x, baselines=baseline, target=TARGET, n_steps=9,
                                  method=method, internal_batch_size=internal_batch_size,
                                  return_convergence_delta=True)
    assert rel_err(ours, theirs) <= 1e-9
    assert delta.shape == (B,)
    assert (delta - their_delta).abs().max() <= 1e-9 * theirs.abs().sum()


def test_integrated_gradients_baselines_and_targets(model, x):
    """A number, an x-shaped tensor and one (C, H, W) image; int, tensor and None targets."""
    image = torch.rand(C, H, W, dtype=torch.float64)
    for baseline, theirs_baseline in ((0.25, 0.25), (image, image[None].expand_as(x).contiguous()),
                                      (image[None].expand_as(x) * 2, image[None].expand_as(x) * 2)):
        ours = fv.integrated_gradients(model, x, 3, baseline, steps=5)
        theirs = _captum("IntegratedGradients", model, x, baselines=theirs_baseline, target=3, n_steps=5)
        assert rel_err(ours, theirs) <= 1e-9
    predicted = model(x).argmax(1)
    assert torch.equal(fv.integrated_gradients(model, x, None, steps=5),
                       fv.integrated_gradients(model, x, predicted, steps=5))


def test_integrated_gradients_complete_with_many_steps(model, x):
    """Completeness (the paper's axiom): the attributions sum to S(x) - S(x') as the steps grow."""
    ours, delta = fv.integrated_gradients(model, x, TARGET, 0.0, steps=64, return_delta=True)
    scores = model(x).gather(1, TARGET[:, None])[:, 0] - model(torch.zeros_like(x)).gather(1, TARGET[:, None])[:, 0]
    assert delta.abs().max() <= 1e-3 * scores.abs().max()
    assert torch.allclose(ours.flatten(1).sum(1) - scores.detach(), delta, rtol=0, atol=1e-12)


def test_quadrature_is_captums():
    from captum.attr._utils.approximation_methods import approximation_parameters

    for method in METHODS:
        sizes, alphas = approximation_parameters(method)
        assert quadrature(method, 7) == (sizes(7), alphas(7))


@pytest.mark.parametrize("kind", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("inner", ["Saliency", "GuidedBackprop", "InputXGradient"])
def test_smoothgrad_matches_noise_tunnel_with_the_same_noise(model, module_relu_model, x, kind, inner):
    samples, stdev = 5, 0.2
    if inner == "GuidedBackprop":
        model = module_relu_model
    ours_method = {"Saliency": fv.saliency, "GuidedBackprop": fv.guided_backprop,
                   "InputXGradient": fv.input_x_gradient}[inner]
    extra = {"abs": False} if inner == "Saliency" else {}
    torch.manual_seed(7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = captum_attr.NoiseTunnel(getattr(captum_attr, inner)(model)).attribute(
            x, nt_type=kind, nt_samples=samples, stdevs=stdev, target=TARGET, **extra)
    torch.manual_seed(7)
    noise = _captum_noise(x, samples, stdev)
    ours = fv.smoothgrad(ours_method, model, x, TARGET, samples=samples, kind=kind, noise=noise,
                         internal_batch_size=4)
    assert rel_err(ours, theirs) <= 1e-9


def test_smoothgrad_around_integrated_gradients_and_gradcam(model, x):
    torch.manual_seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = captum_attr.NoiseTunnel(captum_attr.IntegratedGradients(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=3, stdevs=0.1, target=TARGET, n_steps=4, baselines=0.0)
    torch.manual_seed(3)
    ours = fv.smoothgrad(fv.integrated_gradients, model, x, TARGET, samples=3, noise=_captum_noise(x, 3, 0.1),
                         steps=4)
    assert rel_err(ours, theirs) <= 1e-9
    noise = torch.randn(4, *x.shape, dtype=torch.float64) * 0.1
    cams = fv.smoothgrad(fv.gradcam, model, x, TARGET, samples=4, noise=noise, layer="conv2")
    by_hand = torch.stack([fv.gradcam(model, x + n, TARGET, "conv2") for n in noise]).mean(0)
    assert cams.shape == (B, H, W)
    assert rel_err(cams, by_hand) <= 1e-12


def test_smoothgrad_draws_from_the_generator(model, x):
    def run(seed):
        return fv.smoothgrad(fv.saliency, model, x, TARGET, samples=4, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
    noise = torch.randn(4, *x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.15
    assert torch.equal(run(1), fv.smoothgrad(fv.saliency, model, x, TARGET, samples=4, noise=noise))


def _captum_gradient_shap_draws(x, baselines, samples, stdev):
    """Captum GradientShap's draws in its order: baseline indices (NumPy), noise (torch), alphas (NumPy)."""
    index = torch.tensor(np.random.choice(baselines.shape[0], samples * x.shape[0]))
    noise = _captum_noise(x, samples, stdev)
    alphas = torch.tensor(np.random.uniform(0.0, 1.0, samples * x.shape[0]), dtype=x.dtype)
    return _image_major_to_ours(index, samples), noise, _image_major_to_ours(alphas, samples)


@pytest.mark.parametrize("stdev", [0.0, 0.1])
def test_gradient_shap_matches_captum_with_the_same_draws(model, x, stdev):
    baselines = torch.randn(6, C, H, W, dtype=torch.float64)
    np.random.seed(11)
    torch.manual_seed(11)
    theirs, their_delta = _captum("GradientShap", model, x, baselines=baselines, n_samples=4, stdevs=stdev,
                                  target=TARGET, return_convergence_delta=True)
    np.random.seed(11)
    torch.manual_seed(11)
    index, noise, alphas = _captum_gradient_shap_draws(x, baselines, 4, stdev)
    ours, delta = fv.gradient_shap(model, x, TARGET, baselines, samples=4, baseline_index=index, noise=noise,
                                   alphas=alphas, internal_batch_size=5, return_delta=True)
    assert rel_err(ours, theirs) <= 1e-9
    assert delta.shape == (4, B)
    assert (_image_major_to_ours(their_delta, 4) - delta).abs().max() <= 1e-9 * theirs.abs().sum()


def test_gradient_shap_is_reproducible_by_generator(model, x):
    baselines = torch.randn(5, C, H, W, dtype=torch.float64)

    def run(seed):
        return fv.gradient_shap(model, x, TARGET, baselines, samples=3, stdev=0.1,
                                generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(4), run(4))
    assert not torch.equal(run(4), run(5))


def test_gradient_shap_with_one_baseline_and_alpha_one_is_input_x_gradient_of_the_difference(model, x):
    """With x' = 0 and every point at x (alpha = 1), each sample is x * dS(x)/dx."""
    ours = fv.gradient_shap(model, x, TARGET, torch.zeros(C, H, W, dtype=torch.float64), samples=2,
                            alphas=torch.ones(2, B, dtype=torch.float64))
    assert rel_err(ours, fv.input_x_gradient(model, x, TARGET)) <= 1e-12


@pytest.mark.parametrize("call, match", [
    (lambda m, x: fv.integrated_gradients(m, x, 1, steps=0), "steps must be an int >= 1"),
    (lambda m, x: fv.integrated_gradients(m, x, 1, steps=1, method="riemann_left"), "needs steps >= 2"),
    (lambda m, x: fv.integrated_gradients(m, x, 1, method="simpson"), "unknown method .simpson.; choose one of"),
    (lambda m, x: fv.integrated_gradients(m, x, 1, torch.zeros(2, C, H, W, dtype=torch.float64)),
     "baseline must be a number or shaped like x"),
    (lambda m, x: fv.integrated_gradients(m, x, 1, internal_batch_size=0), "internal_batch_size must be"),
    (lambda m, x: fv.integrated_gradients(m, x, torch.tensor([1, 2])), "target has 2 entries for a batch of 3"),
    (lambda m, x: fv.smoothgrad(fv.saliency, m, x, 1, samples=0), "samples must be an int >= 1"),
    (lambda m, x: fv.smoothgrad(fv.saliency, m, x, 1, kind="mean"), "unknown kind .mean.; choose one of"),
    (lambda m, x: fv.smoothgrad(fv.saliency, m, x, 1, sigma=-1.0), "sigma must be a number >= 0"),
    (lambda m, x: fv.smoothgrad(fv.saliency, m, x, 1, samples=2, noise=torch.zeros(3, *x.shape)),
     r"noise must have shape \(samples, \*x.shape\)"),
    (lambda m, x: fv.smoothgrad("saliency", m, x, 1), "method must be an attribution function"),
    (lambda m, x: fv.gradient_shap(m, x, 1), "gradient_shap needs baselines"),
    (lambda m, x: fv.gradient_shap(m, x, 1, torch.zeros(4, C, H, H)), "baselines must have shape"),
    (lambda m, x: fv.gradient_shap(m, x, 1, torch.zeros(4, C, H, W), samples=0), "samples must be an int >= 1"),
    (lambda m, x: fv.gradient_shap(m, x, 1, torch.zeros(4, C, H, W), samples=2, baseline_index=torch.full((2, B), 4)),
     r"baseline_index must hold integers in \[0, 4\)"),
    (lambda m, x: fv.gradient_shap(m, x, 1, torch.zeros(4, C, H, W), samples=2, alphas=torch.full((2, B), 1.5)),
     r"alphas must lie in \[0, 1\]"),
    (lambda m, x: fv.gradient_shap(m, x, 1, torch.zeros(4, C, H, W), samples=2, alphas=torch.ones(3, B)),
     r"alphas must have shape \(2, 3\)"),
    (lambda m, x: fv.gradient_shap(m, x, 1, torch.zeros(4, C, H, W), stdev=-0.5), "stdev must be a number >= 0"),
])
def test_bad_input_gives_a_clear_error(model, x, call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(model, x)


# torchvision's own CNNs: Captum parity in float64, PyTorch's rounding bar in float32


@functools.lru_cache(maxsize=1)
def _real(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = _zoo.realistic(getattr(_zoo.torchvision_models(), name)(weights=None), 32)
    x64 = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    m64 = copy.deepcopy(model).double()
    with torch.no_grad():
        target = m64(x64).argmax(1)
    return model, m64, x64, target


def _ig(impl, model, x, target, noise):
    if impl == "ours":
        return fv.integrated_gradients(model, x, target, 0.0, steps=4, internal_batch_size=3)
    return _captum("IntegratedGradients", model, x, baselines=0.0, target=target, n_steps=4, internal_batch_size=3)


def _smoothgrad(impl, model, x, target, noise):
    if impl == "ours":
        return fv.smoothgrad(fv.saliency, model, x, target, samples=noise.shape[0], noise=noise.to(x.dtype))
    rows = (x[None] + noise.to(x.dtype)).transpose(0, 1).reshape(-1, *x.shape[1:])  # Captum's image-major rows
    grads = _captum("Saliency", model, rows, target=target.repeat_interleave(noise.shape[0]), abs=False)
    return grads.view(x.shape[0], noise.shape[0], *x.shape[1:]).sum(1) / noise.shape[0]


def _gradient_shap(impl, model, x, target, noise):
    samples = noise.shape[0]
    baselines = noise[0, :1].to(x.dtype) * 0.5
    alphas = torch.linspace(0.2, 0.9, samples * x.shape[0], dtype=x.dtype).view(samples, x.shape[0])
    if impl == "ours":
        return fv.gradient_shap(model, x, target, baselines, samples=samples, alphas=alphas,
                                baseline_index=torch.zeros(samples, x.shape[0], dtype=torch.long))
    np.random.seed(0)
    torch.manual_seed(0)
    real_uniform = np.random.uniform  # make Captum's uniform draws the alphas above
    np.random.uniform = lambda lo, hi, n: alphas.T.reshape(-1).numpy()
    try:
        return _captum("GradientShap", model, x, baselines=baselines, n_samples=samples, target=target)
    finally:
        np.random.uniform = real_uniform


REAL_METHODS = {"integrated_gradients": _ig, "smoothgrad": _smoothgrad, "gradient_shap": _gradient_shap}


@pytest.mark.zoo
@pytest.mark.skipif(not _zoo.has_torchvision(), reason="torchvision is not installed")
@pytest.mark.parametrize("name", ["resnet50", "vgg16", "mobilenet_v2"])
@pytest.mark.parametrize("method", list(REAL_METHODS))
def test_gradient_family_on_torchvision_architectures(name, method):
    m32, m64, x64, target = _real(name)
    run = REAL_METHODS[method]
    noise = torch.randn(3, *x64.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.1
    expected = run("captum", m64, x64, target, noise)
    assert expected.abs().max() > 0, "a degenerate reference proves nothing"
    for call in range(2):  # the first call watches, the second rewrites
        got = run("ours", m64, x64, target, noise)
        assert got.dtype == torch.float64
        err = rel_err(got, expected)
        assert err <= 1e-9, f"float64 call {call}: relative error {err:.2e}"
    x32 = x64.float()
    mcl = copy.deepcopy(m32).to(memory_format=torch.channels_last)  # the bar of test_zoo: either layout's error
    torch_err = max(rel_err(run("captum", m32, x32, target, noise.float()), expected),
                    rel_err(run("captum", mcl, x32.contiguous(memory_format=torch.channels_last), target,
                                noise.float()), expected))
    for call in range(2):
        err = rel_err(run("ours", m32, x32, target, noise.float()), expected)
        assert err <= 2 * torch_err, f"float32 call {call}: {err:.2e} > 2 x PyTorch's {torch_err:.2e}"


# integrated gradients on the whole zoo of test_zoo (SmoothGrad and GradientSHAP run the same
# stacked-rows gradient, saliency, which test_zoo checks on every model)


@functools.lru_cache(maxsize=1)
def _zoo_model(family, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, side, _ = _zoo.build(family, name)
    x64 = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    m64 = copy.deepcopy(model).double()
    with torch.no_grad():
        target = m64(x64).argmax(1)
    return model, m64, x64, target


@pytest.mark.zoo
@pytest.mark.skipif(not _zoo.has_timm(), reason="torchvision and timm are not installed")
@pytest.mark.parametrize("family,name", _zoo.ZOO, ids=[n for _, n in _zoo.ZOO])
def test_integrated_gradients_on_the_zoo(family, name):
    m32, m64, x64, target = _zoo_model(family, name)

    def run(impl, model, x):
        if impl == "ours":
            return fv.integrated_gradients(model, x, target, 0.0, steps=3, internal_batch_size=4)
        return _captum("IntegratedGradients", model, x, baselines=0.0, target=target, n_steps=3,
                       internal_batch_size=4)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = run("captum", m64, x64)
        assert expected.abs().max() > 0, "a degenerate reference proves nothing"
        for call in range(2):
            assert rel_err(run("ours", m64, x64), expected) <= 1e-9, f"float64 call {call}"
        x32 = x64.float()
        mcl = copy.deepcopy(m32).to(memory_format=torch.channels_last)
        torch_err = max(rel_err(run("captum", m32, x32), expected),
                        rel_err(run("captum", mcl, x32.contiguous(memory_format=torch.channels_last)), expected))
        for call in range(2):
            err = rel_err(run("ours", m32, x32), expected)
            assert err <= 2 * torch_err, f"float32 call {call}: {err:.2e} > 2 x PyTorch's {torch_err:.2e}"
