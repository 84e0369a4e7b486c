"""Robustness metrics (max / avg sensitivity, local Lipschitz) and infidelity against Quantus 0.6 and Captum.

Parity runs float64 models and inputs on the same random draws: what Quantus draws (np.random)
or Captum draws (torch's global generator) is recorded and replayed through our module-level
draw functions (robustness.uniform_noise / gaussian_noise) or a perturb callable. Explanations
on both sides are fv.saliency of the same model.
"""
import numpy as np
import pytest
import torch
from _quantus import arrays, quantus, resnet18_case

import featvis_fast as fv
from featvis_fast.metrics import (
    avg_sensitivity,
    cumulative_patch_perturbation,
    gaussian_perturbation,
    infidelity,
    local_lipschitz,
    max_sensitivity,
    robustness,
)
from featvis_fast.metrics._draws import DrawnSamples

RTOL = 1e-9


@pytest.fixture(scope="module")
def case():
    """ResNet-18 (random weights, float64) on 2 images of 32 px, their classes and saliency maps."""
    torch.manual_seed(0)  # resnet18_case seeds the batch norms and images; torchvision's init draws from torch's RNG
    model, x, target = resnet18_case(batch=2, side=32)
    return model, x, target, fv.saliency(model, x, target)


def quantus_saliency(model, inputs, targets, **kwargs):
    """Quantus' explain_func: fv.saliency, the method ours calls with explain="saliency"."""
    return fv.saliency(model, torch.from_numpy(np.asarray(inputs)), torch.as_tensor(np.asarray(targets))).numpy()


def record(monkeypatch, name: str) -> list[np.ndarray]:
    """Record what np.random.<name> returns while Quantus runs."""
    drawn, original = [], getattr(np.random, name)

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        drawn.append(out)
        return out

    monkeypatch.setattr(np.random, name, recording)
    return drawn


def replay(monkeypatch, name: str, draws: list[torch.Tensor]) -> list:
    """Make robustness.<name> return `draws` one per call (the noise of sample k for all images)."""
    left = list(draws)
    monkeypatch.setattr(robustness, name, lambda shape, scale, generator, dtype: left.pop(0).reshape(shape).clone())
    return left


def close(ours: torch.Tensor, reference) -> None:
    reference = np.asarray(reference, dtype=np.float64)
    assert ours.dtype == torch.float64 and ours.shape == reference.shape
    np.testing.assert_allclose(ours.numpy(), reference, rtol=RTOL, atol=0, equal_nan=True)


@pytest.fixture
def float64_quantus_predict(monkeypatch):
    """Quantus' PyTorchModel.predict casts the input to float32 (torch.Tensor(x)); keep x's float64."""
    quantus()
    from quantus.helpers.model.pytorch_model import PyTorchModel

    def predictions(self, x, model_predict_kwargs):
        return self.get_softmax_arg_model()(torch.as_tensor(x).to(self.device), **model_predict_kwargs)

    monkeypatch.setattr(PyTorchModel, "_obtain_predictions", predictions)


# --- parity with Quantus ---------------------------------------------------------------------------

def test_max_and_avg_sensitivity_equal_quantus_on_its_noise(case, monkeypatch):
    q = quantus()
    model, x, target, a = case
    x_np, a_np, y_np = arrays(x, a, target)
    for metric, reference in ((max_sensitivity, q.MaxSensitivity), (avg_sensitivity, q.AvgSensitivity)):
        np.random.seed(0)
        drawn = record(monkeypatch, "uniform")
        expected = reference(nr_samples=3, disable_warnings=True)(
            model, x_np, y_np, a_np, channel_first=True, explain_func=quantus_saliency)
        monkeypatch.undo()
        assert len(drawn) == 3 and drawn[0].shape == (2, 3 * 32 * 32) and np.abs(drawn[0]).max() <= 0.2
        left = replay(monkeypatch, "uniform_noise", [torch.from_numpy(d) for d in drawn])
        close(metric(model, x, a, target, n_samples=3), expected)
        assert not left


def test_sensitivity_with_normalise_and_abs_equals_quantus_normalising_per_image(case, monkeypatch):
    q = quantus()
    model, x, target, a = case
    x_np, a_np, y_np = arrays(x, a, target)
    np.random.seed(1)
    drawn = record(monkeypatch, "uniform")
    expected = q.MaxSensitivity(nr_samples=3, lower_bound=0.05, normalise=True, abs=True, disable_warnings=True,
                                normalise_func_kwargs={"normalise_axes": (1, 2, 3)})(
        model, x_np, y_np, a_np, channel_first=True, explain_func=quantus_saliency)
    monkeypatch.undo()
    replay(monkeypatch, "uniform_noise", [torch.from_numpy(d) for d in drawn])
    close(max_sensitivity(model, x, a, target, n_samples=3, radius=0.05, normalise=True, abs=True), expected)


def test_local_lipschitz_equals_quantus_normalising_per_image(case, monkeypatch):
    q = quantus()
    model, x, target, a = case
    x_np, a_np, y_np = arrays(x, a, target)
    np.random.seed(2)
    drawn = record(monkeypatch, "normal")
    expected = q.LocalLipschitzEstimate(nr_samples=4, disable_warnings=True,
                                        normalise_func_kwargs={"normalise_axes": (1, 2, 3)})(
        model, x_np, y_np, a_np, channel_first=True, explain_func=quantus_saliency)
    monkeypatch.undo()
    assert len(drawn) == 4 and abs(drawn[0].std() - 0.1) < 0.01
    left = replay(monkeypatch, "gaussian_noise", [torch.from_numpy(d) for d in drawn])
    close(local_lipschitz(model, x, a, target, n_samples=4), expected)
    assert not left


def test_quantus_default_normalisation_spans_the_batch_the_only_difference(case, monkeypatch):
    """Quantus' normalise_by_max divides by the largest |a| of the whole batch: on one image it is
    ours; on two images the scores change (each image's depends on the other's)."""
    q = quantus()
    model, x, target, a = case
    for images in (slice(0, 1), slice(0, 2)):
        x_np, a_np, y_np = arrays(x[images], a[images], target[images])
        np.random.seed(3)
        drawn = record(monkeypatch, "normal")
        expected = q.LocalLipschitzEstimate(nr_samples=3, disable_warnings=True)(
            model, x_np, y_np, a_np, channel_first=True, explain_func=quantus_saliency)
        monkeypatch.undo()
        replay(monkeypatch, "gaussian_noise", [torch.from_numpy(d) for d in drawn])
        ours = local_lipschitz(model, x[images], a[images], target[images], n_samples=3)
        if images.stop == 1:
            close(ours, expected)
        else:
            assert np.abs(ours.numpy() - np.asarray(expected)).max() > 1e-3 * np.abs(expected).max()


def test_nan_when_prediction_changes_equals_quantus(case, monkeypatch, float64_quantus_predict):
    q = quantus()
    model, x, target, a = case
    x_np, a_np, y_np = arrays(x, a, target)
    np.random.seed(2)
    drawn = record(monkeypatch, "uniform")
    expected = q.MaxSensitivity(nr_samples=3, lower_bound=0.02, return_nan_when_prediction_changes=True,
                                disable_warnings=True)(model, x_np, y_np, a_np, channel_first=True,
                                                       explain_func=quantus_saliency)
    monkeypatch.undo()
    assert np.isnan(expected).tolist() == [False, True]  # this case: image 1's class changes under a noise
    replay(monkeypatch, "uniform_noise", [torch.from_numpy(d) for d in drawn])
    close(max_sensitivity(model, x, a, target, n_samples=3, radius=0.02, nan_when_prediction_changes=True),
          expected)


def test_infidelity_with_cumulative_patches_equals_quantus_infidelity(case, float64_quantus_predict):
    q = quantus()
    model, x, target, a = case
    a1 = a.abs().sum(1, keepdim=True)  # one channel: Quantus broadcasts it over the input channels
    x_np, a_np, y_np = arrays(x, a1, target)
    expected = q.Infidelity(perturb_patch_sizes=[16], n_perturb_samples=2, disable_warnings=True)(
        model, x_np, y_np, a_np, channel_first=True)
    ours = infidelity(model, x, a1, target, perturb=cumulative_patch_perturbation(16), n_samples=4)
    close(ours, expected)


# --- parity with Captum ----------------------------------------------------------------------------

def test_max_sensitivity_equals_captum_sensitivity_max(case, monkeypatch):
    """Captum's defaults (radius 0.02, 10 samples, Frobenius norm, the attributions of explain on x)
    are ours with radius=0.02, n_samples=10, attributions=None; Captum's copies are image-major."""
    quantus()
    from captum.metrics import sensitivity_max
    from captum.metrics._core.sensitivity import default_perturb_func

    model, x, target, _ = case
    perturbed = []

    def captums_own_noise(inputs, perturb_radius):
        out = default_perturb_func(inputs, perturb_radius)
        perturbed.append(out[0] if isinstance(out, tuple) else out)
        return out

    def explain(inputs, target):  # Captum's explanation functions map a tuple of inputs to a tuple of maps
        return (fv.saliency(model, inputs[0], target),)

    torch.manual_seed(7)
    expected = sensitivity_max(explain, (x,),
                               perturb_func=captums_own_noise, target=target)
    torch.manual_seed(7)  # Captum draws torch.FloatTensor(B * n, C, H, W).uniform_(-0.02, 0.02)
    noise = torch.empty((2 * 10, 3, 32, 32), dtype=torch.float32).uniform_(-0.02, 0.02).double()
    assert torch.equal(x.repeat_interleave(10, dim=0) + noise, perturbed[0])
    replay(monkeypatch, "uniform_noise", list(noise.reshape(2, 10, 3, 32, 32).transpose(0, 1)))
    close(max_sensitivity(model, x, None, target, radius=0.02, n_samples=10), expected.numpy())


@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_equals_captum_on_the_same_perturbations(case, normalize):
    quantus()
    from captum.metrics import infidelity as captum_infidelity

    model, x, target, a = case
    n = 5
    noise = 0.1 * torch.randn((2, n, 3, 32, 32), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    flat = noise.reshape(2 * n, 3, 32, 32)  # Captum's copies: image-major (repeat_interleave)

    def perturb(x_, k, generator):
        return noise[:, k], x_ - noise[:, k]

    for ours_a, captums_a in ((a, a), (a.sum(1, keepdim=True), a.sum(1, keepdim=True).expand_as(a))):
        expected = captum_infidelity(model, lambda inputs: (flat, inputs - flat), x, captums_a, target=target,
                                     n_perturb_samples=n, normalize=normalize)
        close(infidelity(model, x, ours_a, target, n_samples=n, perturb=perturb, normalise=normalize),
              expected.numpy())


# --- known answers ---------------------------------------------------------------------------------

def _identity(scale: float = 1.0):
    return lambda model, x, target: scale * x


def test_sensitivity_of_the_input_as_explanation_is_the_relative_noise(case):
    model, x, target, _ = case
    gen = torch.Generator().manual_seed(5)
    noise = torch.stack([robustness.uniform_noise(x.shape, 0.1, gen, x.dtype) for _ in range(3)])  # (n, B, C, H, W)
    relative = (noise.flatten(2).norm(dim=2) / x.flatten(1).norm(dim=1)).T  # (B, n)
    common = dict(explain=_identity(), n_samples=3, radius=0.1, seed=5)
    torch.testing.assert_close(max_sensitivity(model, x, x, target, **common), relative.amax(1), rtol=1e-12, atol=0)
    torch.testing.assert_close(avg_sensitivity(model, x, x, target, **common), relative.mean(1), rtol=1e-12, atol=0)
    constant = lambda model, x, target: torch.ones_like(x)  # noqa: E731
    assert max_sensitivity(model, x, torch.ones_like(x), target, explain=constant, n_samples=2).eq(0).all()


def test_local_lipschitz_of_a_linear_explanation_is_its_slope(case):
    model, x, target, _ = case
    ours = local_lipschitz(model, x, 2 * x, target, explain=_identity(2.0), n_samples=3, normalise=False)
    torch.testing.assert_close(ours, torch.full((2,), 2.0, dtype=torch.float64), rtol=1e-9, atol=0)


def _linear_case():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)).double().eval()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    target = torch.tensor([0, 2, 3])
    gradient = model[1].weight.detach()[target].reshape(3, 3, 8, 8)
    return model, x, target, gradient


def test_infidelity_of_a_linear_models_gradient_is_zero():
    model, x, target, gradient = _linear_case()
    assert infidelity(model, x, gradient, target).abs().max() < 1e-24
    # twice the gradient: the error is (I . w)^2; the optimal scaling beta = 1/2 removes it
    gen = torch.Generator().manual_seed(0)
    dots = torch.stack([(gaussian_perturbation(0.2)(x, k, gen)[0] * gradient).flatten(1).sum(1) for k in range(10)])
    torch.testing.assert_close(infidelity(model, x, 2 * gradient, target), dots.square().mean(0), rtol=1e-12, atol=0)
    assert infidelity(model, x, 2 * gradient, target, normalise=True).abs().max() < 1e-24


def test_cumulative_patches_remove_patches_in_raster_order():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float64).reshape(2, 1, 5, 5)
    perturb = cumulative_patch_perturbation(2)
    removed, perturbed = perturb(x, 1, None)  # patches 0 and 1: rows 0-1, columns 0-3
    expected = x.clone()
    expected[0, 0, :2, :4], expected[1, 0, :2, :4] = 0.0, 25.0  # each image's minimum
    assert torch.equal(perturbed, expected) and torch.equal(removed, x - expected)
    assert torch.equal(perturb(x, 8, None)[1], x.amin(dim=(1, 2, 3), keepdim=True).expand_as(x))  # 3 x 3 patches
    fixed = cumulative_patch_perturbation(2, baseline=-1.0)(x, 0, None)[1]
    assert torch.equal(fixed[:, :, :2, :2], -torch.ones(2, 1, 2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="has 9 patches"):
        perturb(x, 9, None)


# --- draws, batching, dtypes ------------------------------------------------------------------------

@pytest.fixture
def tiny_case():
    """A small float64 CNN (convolution, ReLU, pooling, linear) on 2 images of 16 px, classes, saliency."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                                torch.nn.Flatten(), torch.nn.Linear(24, 5)).double().eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    target = torch.tensor([1, 3])
    return model, x, target, fv.saliency(model, x, target)


def test_draws_depend_on_the_seed_not_on_the_batch_size(tiny_case):
    model, x, target, a = tiny_case
    common = dict(n_samples=3, radius=0.05)
    whole = max_sensitivity(model, x, a, target, seed=3, **common)
    one_sample_per_batch = max_sensitivity(model, x, a, target, seed=3, batch_size=2, **common)
    torch.testing.assert_close(whole, one_sample_per_batch, rtol=1e-12, atol=0)
    assert not torch.allclose(whole, max_sensitivity(model, x, a, target, seed=4, **common))
    from_generator = max_sensitivity(model, x, a, target, generator=torch.Generator().manual_seed(3), **common)
    torch.testing.assert_close(whole, from_generator, rtol=0, atol=0)
    infidelities = [infidelity(model, x, a, target, n_samples=3, seed=3, batch_size=size) for size in (None, 2)]
    torch.testing.assert_close(infidelities[0], infidelities[1], rtol=1e-12, atol=0)


def test_float32_inputs_give_float32_scores(tiny_case):
    model, x, target, a = tiny_case
    model, x, a = model.float(), x.float(), a.float()
    for metric in (max_sensitivity, avg_sensitivity, local_lipschitz, infidelity):
        out = metric(model, x, a, target, n_samples=2)
        assert out.dtype == torch.float32 and out.shape == (2,) and bool(torch.isfinite(out).all())


def test_drawn_samples_are_kept_for_a_retried_batch():
    calls = []
    samples = DrawnSamples(lambda k: calls.append(k) or torch.tensor(float(k)))
    first = samples.take(0, 4)
    assert samples.take(0, 2) == first[:2] and calls == [0, 1, 2, 3]  # a retry with half the batch: no new draws
    assert [float(s) for s in samples.take(2, 6)] == [2.0, 3.0, 4.0, 5.0] and calls == list(range(6))
    with pytest.raises(RuntimeError, match="released"):
        samples.take(1, 3)


# --- bad inputs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("metric", [max_sensitivity, avg_sensitivity, local_lipschitz, infidelity])
def test_bad_inputs_raise_clear_errors(tiny_case, metric):
    model, x, target, a = tiny_case
    with pytest.raises(ValueError, match="needs a target"):
        metric(model, x, a, None, n_samples=1)
    with pytest.raises(ValueError, match="do not fit the images"):
        metric(model, x, a[:, :, :8], target, n_samples=1)
    with pytest.raises(ValueError, match="n_samples must be an int >= 1"):
        metric(model, x, a, target, n_samples=0)


def test_bad_robustness_arguments(tiny_case):
    model, x, target, a = tiny_case
    with pytest.raises(ValueError, match="radius must be > 0"):
        max_sensitivity(model, x, a, target, radius=0.0)
    with pytest.raises(ValueError, match="noise_std must be > 0"):
        local_lipschitz(model, x, a, target, noise_std=-1.0)
    with pytest.raises(ValueError, match="holds 3 classes for a batch of 2"):
        max_sensitivity(model, x, a, torch.tensor([1, 2, 3]), n_samples=1)
    with pytest.raises(ValueError, match="1 channels, the attributions 3"):
        max_sensitivity(model, x, a, target, n_samples=1, explain=lambda m, x_, t: x_.sum(1, keepdim=True))
    with pytest.raises(ValueError, match="unknown explanation method"):
        avg_sensitivity(model, x, a, target, explain="nonsense")


def test_bad_infidelity_perturbations(tiny_case):
    model, x, target, a = tiny_case
    with pytest.raises(ValueError, match="perturbation of shape"):
        infidelity(model, x, a, target, n_samples=1, perturb=lambda x_, k, g: (x_[:1], x_))
    with pytest.raises(TypeError, match="two tensors"):
        infidelity(model, x, a, target, n_samples=1, perturb=lambda x_, k, g: x_)
    with pytest.raises(ValueError, match="use n_samples <= 4"):
        infidelity(model, x, a, target, n_samples=5, perturb=cumulative_patch_perturbation(8))
