"""Robustness metrics and infidelity for bench/metrics.py: ours beside Quantus 0.6 and Captum.

Both sides explain with the same saliency (fv.saliency, channel sum of |gradient|: Inputs.explain
for Quantus, the same function in torch for ours and Captum). Random draws are replayed: the
noise ours draws from seed 0 (robustness.uniform_noise / gaussian_noise, gaussian_perturbation)
is what Quantus' np.random.uniform / np.random.normal return while it runs, and what Captum's
perturb_func adds (its copies are image-major, ours sample-major). The replay costs the
references a draw each; it is not timed apart.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from _metrics_common import Inputs, MetricCase, quantus, saliency_map

from featvis_fast import metrics
from featvis_fast.metrics import robustness

SAMPLES = 10  # noise samples per image (Quantus' default is 200, Captum's 10)
RADIUS = 0.2  # max / avg sensitivity's uniform noise (Quantus' lower_bound default)
NOISE_STD = 0.1  # local Lipschitz' Gaussian noise (Quantus' perturb_std default)
INFIDELITY_STD = 0.2  # infidelity's Gaussian perturbation (the paper's)
PATCH = 16  # Quantus Infidelity's patch size here (its default 4 is 3136 passes per image at 224 px)
PER_IMAGE = {"normalise_axes": (1, 2, 3)}




def our_noise(inputs: Inputs, draw, scale: float) -> torch.Tensor:
    """(SAMPLES, B, C, H, W): the noise our metric draws with seed 0, sample by sample, on the bench device."""
    gen = torch.Generator().manual_seed(0)
    return torch.stack([draw(inputs.x.shape, scale, gen, inputs.x.dtype) for _ in range(SAMPLES)]).to(inputs.x.device)


@contextlib.contextmanager
def numpy_draws(name: str, noise: torch.Tensor):
    """np.random.<name> returns noise[k] as (B, C*H*W) on its k-th call (Quantus' batch_*_noise)."""
    original, left = getattr(np.random, name), [n.reshape(n.shape[0], -1).cpu().double().numpy() for n in noise]

    def replayed(*args, size=None, **kwargs):
        drawn = left.pop(0)
        assert drawn.shape == tuple(size), (drawn.shape, size)
        return drawn

    setattr(np.random, name, replayed)
    try:
        yield
    finally:
        setattr(np.random, name, original)


def _image_major(noise: torch.Tensor) -> torch.Tensor:
    """(n, B, ...) sample-major -> (B * n, ...) in Captum's repeat_interleave order."""
    return noise.transpose(0, 1).reshape(-1, *noise.shape[2:])


def _quantus_robustness(name: str, draw: str, noise, **kwargs):
    def run(inputs: Inputs) -> np.ndarray:
        metric = getattr(quantus(), name)(nr_samples=SAMPLES, disable_warnings=True, **kwargs)
        with numpy_draws(draw, noise(inputs)):
            scores = metric(model=inputs.model, x_batch=inputs.x_np, y_batch=inputs.y_np, a_batch=inputs.a_np,
                            explain_func=inputs.explain, device=inputs.device, batch_size=len(inputs.x_np))
        return np.asarray(scores, dtype=np.float64)
    return run


def _uniform(inputs: Inputs) -> torch.Tensor:
    return our_noise(inputs, robustness.uniform_noise, RADIUS)


def _gaussian(inputs: Inputs) -> torch.Tensor:
    return our_noise(inputs, robustness.gaussian_noise, NOISE_STD)


def _captum_sensitivity_max(inputs: Inputs) -> np.ndarray:
    from captum.metrics import sensitivity_max

    noise = _image_major(_uniform(inputs))
    # Captum hands perturb_func a lone input as a tensor, explanation_func the tuple perturb_func returns
    scores = sensitivity_max(lambda xs, target: (saliency_map(inputs.model, xs[0], target),), (inputs.x,),
                             perturb_func=lambda xs, radius: (xs + noise,), perturb_radius=RADIUS,
                             n_perturb_samples=SAMPLES, target=inputs.target)
    return scores.double().cpu().numpy()


def infidelity_perturbations(inputs: Inputs) -> torch.Tensor:
    """(SAMPLES, B, C, H, W): the perturbations I our default infidelity draws with seed 0."""
    perturb, gen = metrics.gaussian_perturbation(INFIDELITY_STD), torch.Generator().manual_seed(0)
    return torch.stack([perturb(inputs.x, k, gen)[0] for k in range(SAMPLES)])


def _captum_infidelity(inputs: Inputs) -> np.ndarray:
    from captum.metrics import infidelity

    noise = _image_major(infidelity_perturbations(inputs))
    a = inputs.attributions.expand_as(inputs.x)  # Captum needs attributions shaped like the input
    scores = infidelity(inputs.model, lambda xs: (noise, xs - noise), inputs.x, a, target=inputs.target,
                        n_perturb_samples=SAMPLES)
    return scores.double().cpu().numpy()


def _quantus_infidelity(inputs: Inputs) -> np.ndarray:
    metric = quantus().Infidelity(perturb_patch_sizes=[PATCH], n_perturb_samples=1, disable_warnings=True)
    scores = metric(model=inputs.model, x_batch=inputs.x_np, y_batch=inputs.y_np, a_batch=inputs.a_np,
                    device=inputs.device, batch_size=len(inputs.x_np))
    return np.asarray(scores, dtype=np.float64)


def _patches(inputs: Inputs) -> int:
    h, w = inputs.x.shape[2:]
    return -(-h // PATCH) * -(-w // PATCH)


def cases() -> list[MetricCase]:
    """Max / avg sensitivity, local Lipschitz and infidelity (Captum's Gaussian and Quantus' patches)."""
    common = dict(explain=saliency_map, n_samples=SAMPLES)
    return [
        MetricCase(
            "max_sensitivity",
            lambda i: metrics.max_sensitivity(i.model, i.x, i.attributions, i.target, radius=RADIUS, **common),
            {"quantus": _quantus_robustness("MaxSensitivity", "uniform", _uniform, lower_bound=RADIUS),
             "captum": _captum_sensitivity_max},
            note=f"{SAMPLES} uniform noises in [-{RADIUS}, {RADIUS}] per image (replayed on both references), "
                 "Frobenius norms, no normalise; Captum's sensitivity_max with the same radius and noise"),
        MetricCase(
            "avg_sensitivity",
            lambda i: metrics.avg_sensitivity(i.model, i.x, i.attributions, i.target, radius=RADIUS, **common),
            {"quantus": _quantus_robustness("AvgSensitivity", "uniform", _uniform, lower_bound=RADIUS)},
            note=f"{SAMPLES} uniform noises in [-{RADIUS}, {RADIUS}] per image (replayed), Frobenius norms"),
        MetricCase(
            "local_lipschitz",
            lambda i: metrics.local_lipschitz(i.model, i.x, i.attributions, i.target, noise_std=NOISE_STD, **common),
            {"quantus": _quantus_robustness("LocalLipschitzEstimate", "normal", _gaussian, perturb_std=NOISE_STD,
                                            normalise_func_kwargs=PER_IMAGE)},
            note=f"{SAMPLES} Gaussian noises (std {NOISE_STD}, replayed), Euclidean norms, normalise per image "
                 "(Quantus with normalise_axes (1, 2, 3); its default divides by the batch's largest |a|)"),
        MetricCase(
            "infidelity",
            lambda i: metrics.infidelity(i.model, i.x, i.attributions, i.target, n_samples=SAMPLES,
                                         noise_std=INFIDELITY_STD),
            {"captum": _captum_infidelity},
            note=f"{SAMPLES} Gaussian perturbations (std {INFIDELITY_STD}, the paper's; replayed in Captum's "
                 "perturb_func), raw outputs, no normalize"),
        MetricCase(
            "infidelity (Quantus patches)",
            lambda i: metrics.infidelity(i.model, i.x, i.attributions, i.target, n_samples=_patches(i),
                                         perturb=metrics.cumulative_patch_perturbation(PATCH)),
            {"quantus": _quantus_infidelity},
            note=f"Quantus Infidelity's perturbation: {PATCH} px patches blacked out cumulatively in raster order "
                 "(196 passes per image at 224 px), n_perturb_samples 1; ours with cumulative_patch_perturbation"),
    ]
