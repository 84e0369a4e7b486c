"""Robustness metrics: how much an explanation changes when the input changes slightly.

- max_sensitivity / avg_sensitivity (Yeh et al. 2019, "On the (In)fidelity and Sensitivity of
  Explanations", NeurIPS): the largest / mean relative change ||a(x) - a(x + e)||_F / ||a(x)||_F
  over n uniform noises e in the L-infinity ball of `radius`.
- local_lipschitz (Alvarez-Melis & Jaakkola 2018, "On the Robustness of Interpretability
  Methods", ICML WHI): the largest ||a(x) - a(x + e)||_2 / ||e||_2 over n Gaussian noises e.

Quantus 0.6's definitions and defaults (MaxSensitivity, AvgSensitivity, LocalLipschitzEstimate).
The n perturbed copies of all B images are explained together, in batches of whole samples (copy
k * B + b is noise k on image b) sized to memory. The noise of sample k for all B images is one
call of `uniform_noise` / `gaussian_noise` on a CPU generator (then moved to x's device), in
sample order: a seed gives the same noise on any device and with any batch size.

Where Quantus differs: its normalise_by_max (normalise=True; LocalLipschitzEstimate's default)
divides by the largest |a| of the whole batch it is given (all images of a_batch; each step's B
perturbed explanations together), so an image's score depends on the other images of its batch.
Ours divides each map by its own largest |a| (Quantus with normalise_func_kwargs=
{"normalise_axes": (1, 2, 3)}, or Quantus on a single image). A zero attribution map gives
sensitivity ||a(x + e)||_F (its norm counts as 1, as Captum's sensitivity_max), where Quantus
divides by zero.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .._validate import check_model_and_batch
from ..engine import Target, batches
from ..engine.class_scores import score_dtype
from ._draws import DrawnSamples
from ._explain import Explain, explain_item_bytes, explainer
from ._inputs import attribution_maps, generator_for, positive_int, prepared, require_target

LIPSCHITZ_EPS = 1e-10  # Quantus' lipschitz_constant adds it to the input distance


def uniform_noise(shape: torch.Size, radius: float, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """One sample of uniform noise in [-radius, radius) for all images (Quantus' batch_uniform_noise).

    Args:
        shape: the images' shape (B, C, H, W).
        radius: the L-infinity radius.
        generator: a CPU generator.
        dtype: the noise's dtype.

    Returns:
        a CPU tensor of `shape`.
    """
    return torch.rand(shape, generator=generator, dtype=dtype).mul_(2 * radius).sub_(radius)


def gaussian_noise(shape: torch.Size, std: float, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """One sample of Gaussian noise N(0, std^2) for all images (Quantus' batch_gaussian_noise).

    Args:
        shape: the images' shape (B, C, H, W).
        std: the standard deviation.
        generator: a CPU generator.
        dtype: the noise's dtype.

    Returns:
        a CPU tensor of `shape`.
    """
    return torch.randn(shape, generator=generator, dtype=dtype).mul_(std)


def _copy_targets(target: Target, batch: int, device: torch.device) -> Callable[[torch.Tensor], Target]:
    """image_of (N,) -> the target of N copies: per-image classes indexed, anything else (an int, a
    callable, a unit) passed as is."""
    if isinstance(target, list) or (hasattr(target, "__array__") and not isinstance(target, torch.Tensor)):
        target = torch.as_tensor(target)
    if isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.is_complex():
            raise TypeError(f"target classes must be integers, got {target.dtype}")
        classes = target.reshape(-1).to(device=device, dtype=torch.long)
        if classes.numel() == 1:
            return lambda image_of: int(classes[0])
        if classes.numel() != batch:
            raise ValueError(f"target holds {classes.numel()} classes for a batch of {batch} images")
        return lambda image_of: classes[image_of]
    return lambda image_of: target


def _perturbed_ratios(name: str, model: torch.nn.Module, x: torch.Tensor, attributions: object, target: Target,
                      explain: str | Explain, explain_kwargs: dict | None, n_samples: int,
                      draw: Callable[[torch.Size, torch.Generator, torch.dtype], torch.Tensor],
                      ratio: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                      normalise: bool, absolute: bool, nan_when_prediction_changes: bool, seed: int,
                      generator: torch.Generator | None, batch_size: int | None, progress: bool) -> torch.Tensor:
    """(B, n) ratio(a(x) (N, Ca, H, W), a(x + e) (N, Ca, H, W), e (N, C, H, W)) -> (N,) for n noises e per image;
    with nan_when_prediction_changes, the rows of images whose predicted class changed under any noise are NaN."""
    check_model_and_batch(model, x)
    if x.dim() != 4:
        raise ValueError(f"{name} needs images (B, C, H, W), got shape {tuple(x.shape)}")
    require_target(target, name)
    n_samples = positive_int(n_samples, "n_samples")
    explain_fn = explainer(explain, **(explain_kwargs or {}))
    gen = generator_for(seed, generator)
    x = x.detach()
    batch, dtype, device = x.shape[0], score_dtype(x), x.device
    copy_targets = _copy_targets(target, batch, device)
    a = explain_fn(model, x, target) if attributions is None else attribution_maps(attributions, x)
    a = prepared(a, normalise, absolute)
    ratios = torch.empty(n_samples, batch, dtype=dtype, device=device)
    changed = torch.zeros(n_samples, batch, dtype=torch.bool, device=device)
    if nan_when_prediction_changes:
        with torch.no_grad():
            predicted = model(x).reshape(batch, -1).argmax(1)
    noises = DrawnSamples(lambda k: draw(x.shape, gen, x.dtype).to(device))

    def work(start: int, stop: int) -> None:
        k0, k1 = start // batch, stop // batch
        noise = torch.cat(noises.take(k0, k1))
        copies = x.repeat(k1 - k0, 1, 1, 1) + noise
        image_of = torch.arange(batch, device=device).repeat(k1 - k0)
        explained = explain_fn(model, copies, copy_targets(image_of))
        if explained.shape[1] != a.shape[1]:
            raise ValueError(f"the explanations of the perturbed images have {explained.shape[1]} channels, the "
                             f"attributions {a.shape[1]}: pass attributions made by the same explain method")
        explained = prepared(explained, normalise, absolute)
        ratios[k0:k1] = ratio(a[image_of], explained, copies - x[image_of]).reshape(k1 - k0, batch)
        if nan_when_prediction_changes:
            with torch.no_grad():
                moved = model(copies).reshape(copies.shape[0], -1).argmax(1) != predicted[image_of]
            changed[k0:k1] = moved.reshape(k1 - k0, batch)

    item_bytes = explain_item_bytes(model, x) if batch_size is None else 1
    size = batches.pick_batch_size(batch_size, n_samples * batch, device, item_bytes)
    batches.run_batches(n_samples * batch, size, work, progress=progress, desc=name, device=device, step=batch)
    ratios = ratios.T.contiguous()
    if nan_when_prediction_changes:
        ratios[changed.T.any(dim=1)] = float("nan")
    return ratios


def _relative_change(a: torch.Tensor, explained: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """||a - a'||_F / ||a||_F per copy (a zero map's norm counts as 1, as in Captum)."""
    norm = torch.linalg.vector_norm(a.flatten(1), dim=1)
    norm = torch.where(norm == 0, torch.ones_like(norm), norm)
    return torch.linalg.vector_norm((a - explained).flatten(1), dim=1) / norm


def _lipschitz_ratio(a: torch.Tensor, explained: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """||a - a'||_2 / (||x - x'||_2 + 1e-10) per copy (Quantus' lipschitz_constant with Euclidean norms)."""
    return (torch.linalg.vector_norm((a - explained).flatten(1), dim=1)
            / (torch.linalg.vector_norm(noise.flatten(1), dim=1) + LIPSCHITZ_EPS))


def _sensitivities(name: str, model, x, attributions, target, explain, explain_kwargs, n_samples, radius, normalise,
                   absolute, nan_when_prediction_changes, seed, generator, batch_size, progress) -> torch.Tensor:
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius!r}")
    return _perturbed_ratios(name, model, x, attributions, target, explain, explain_kwargs, n_samples,
                             lambda shape, gen, dtype: uniform_noise(shape, radius, gen, dtype), _relative_change,
                             normalise, absolute, nan_when_prediction_changes, seed, generator, batch_size, progress)


def max_sensitivity(model: torch.nn.Module, x: torch.Tensor, attributions: object, target: Target, *,
                    explain: str | Explain = "saliency", explain_kwargs: dict | None = None, n_samples: int = 200,
                    radius: float = 0.2, normalise: bool = False, abs: bool = False,
                    nan_when_prediction_changes: bool = False, seed: int = 0, generator: torch.Generator | None = None,
                    batch_size: int | None = None, progress: bool = False) -> torch.Tensor:
    """Max-Sensitivity (Yeh et al. 2019): max_k ||a(x) - a(x + e_k)||_F / ||a(x)||_F, e_k ~ U[-radius, radius].

    Quantus' MaxSensitivity with its defaults (200 samples, lower_bound 0.2, difference, Frobenius
    norms, no normalisation, no abs). Captum's sensitivity_max is radius=0.02, n_samples=10 with
    the attributions of `explain` itself. Lower is better.

    Args:
        model: the CNN (eval mode).
        x: images (B, C, H, W), float32 or float64.
        attributions: the explanations of x, (B, H, W), (B, 1, H, W) or (B, C, H, W) (channels as
            `explain` returns them); None: computed by `explain`.
        target: the explained class: an int, a LongTensor (B,) or a callable on the output.
        explain: the explanation method that explains the perturbed copies: a name of this
            package's methods (featvis_fast.metrics.METHODS) or a callable (model, x, target) -> maps.
        explain_kwargs: keyword arguments of a named method (e.g. {"layer": ...} for the CAMs).
        n_samples: noise samples per image.
        radius: the noise is uniform in [-radius, radius] per input value (Quantus' lower_bound).
        normalise: divide every map (attributions and each perturbed explanation) by its largest
            |value| (Quantus' normalise_by_max per image; see the module's note).
        abs: take |a| after normalising.
        nan_when_prediction_changes: NaN for images whose predicted class changes under any noise
            sample (Quantus' return_nan_when_prediction_changes).
        seed: seed of the noise (used when generator is None).
        generator: a CPU torch.Generator for the noise (overrides seed).
        batch_size: perturbed copies explained together (None: as many as fit in memory; whole
            samples of B copies).
        progress: a tqdm bar over the copies.

    Returns:
        (B,) sensitivities on x's device, float64 for float64 inputs, else float32.
    """
    ratios = _sensitivities("max_sensitivity", model, x, attributions, target, explain, explain_kwargs, n_samples,
                            radius, normalise, abs, nan_when_prediction_changes, seed, generator, batch_size, progress)
    return ratios.amax(dim=1)


def avg_sensitivity(model: torch.nn.Module, x: torch.Tensor, attributions: object, target: Target, *,
                    explain: str | Explain = "saliency", explain_kwargs: dict | None = None, n_samples: int = 200,
                    radius: float = 0.2, normalise: bool = False, abs: bool = False,
                    nan_when_prediction_changes: bool = False, seed: int = 0, generator: torch.Generator | None = None,
                    batch_size: int | None = None, progress: bool = False) -> torch.Tensor:
    """Avg-Sensitivity (Yeh et al. 2019): mean_k ||a(x) - a(x + e_k)||_F / ||a(x)||_F, e_k ~ U[-radius, radius].

    Quantus' AvgSensitivity with its defaults; max_sensitivity's arguments, the mean over the
    samples instead of the maximum. Lower is better.

    Args:
        model: the CNN (eval mode).
        x: images (B, C, H, W), float32 or float64.
        attributions: the explanations of x, (B, H, W), (B, 1, H, W) or (B, C, H, W); None:
            computed by `explain`.
        target: the explained class: an int, a LongTensor (B,) or a callable on the output.
        explain: the method that explains the perturbed copies (a name of METHODS or a callable).
        explain_kwargs: keyword arguments of a named method.
        n_samples: noise samples per image.
        radius: the noise is uniform in [-radius, radius] per input value.
        normalise: divide every map by its largest |value|.
        abs: take |a| after normalising.
        nan_when_prediction_changes: NaN for images whose predicted class changes under any noise sample.
        seed: seed of the noise (used when generator is None).
        generator: a CPU torch.Generator for the noise (overrides seed).
        batch_size: perturbed copies explained together (None: as many as fit in memory).
        progress: a tqdm bar over the copies.

    Returns:
        (B,) sensitivities on x's device, float64 for float64 inputs, else float32.
    """
    ratios = _sensitivities("avg_sensitivity", model, x, attributions, target, explain, explain_kwargs, n_samples,
                            radius, normalise, abs, nan_when_prediction_changes, seed, generator, batch_size, progress)
    return ratios.mean(dim=1)


def local_lipschitz(model: torch.nn.Module, x: torch.Tensor, attributions: object, target: Target, *,
                    explain: str | Explain = "saliency", explain_kwargs: dict | None = None, n_samples: int = 200,
                    noise_std: float = 0.1, normalise: bool = True, abs: bool = False,
                    nan_when_prediction_changes: bool = False, seed: int = 0, generator: torch.Generator | None = None,
                    batch_size: int | None = None, progress: bool = False) -> torch.Tensor:
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018): max_k ||a(x) - a(x + e_k)||_2 / ||e_k||_2.

    e_k ~ N(0, noise_std^2) per input value; the denominator is ||x - (x + e_k)||_2 + 1e-10.
    Quantus' LocalLipschitzEstimate with its defaults (200 samples, perturb_std 0.1, Euclidean
    norms, normalise=True, no abs). Lower is better.

    Args:
        model: the CNN (eval mode).
        x: images (B, C, H, W), float32 or float64.
        attributions: the explanations of x, (B, H, W), (B, 1, H, W) or (B, C, H, W); None:
            computed by `explain`.
        target: the explained class: an int, a LongTensor (B,) or a callable on the output.
        explain: the method that explains the perturbed copies (a name of METHODS or a callable).
        explain_kwargs: keyword arguments of a named method.
        n_samples: noise samples per image.
        noise_std: the standard deviation of the Gaussian noise (Quantus' perturb_std).
        normalise: divide every map by its largest |value| (per image; Quantus' default, over its
            whole batch: see the module's note).
        abs: take |a| after normalising.
        nan_when_prediction_changes: NaN for images whose predicted class changes under any noise sample.
        seed: seed of the noise (used when generator is None).
        generator: a CPU torch.Generator for the noise (overrides seed).
        batch_size: perturbed copies explained together (None: as many as fit in memory).
        progress: a tqdm bar over the copies.

    Returns:
        (B,) Lipschitz estimates on x's device, float64 for float64 inputs, else float32.
    """
    if not noise_std > 0:
        raise ValueError(f"noise_std must be > 0, got {noise_std!r}")
    ratios = _perturbed_ratios("local_lipschitz", model, x, attributions, target, explain, explain_kwargs, n_samples,
                               lambda shape, gen, dtype: gaussian_noise(shape, noise_std, gen, dtype),
                               _lipschitz_ratio, normalise, abs, nan_when_prediction_changes, seed, generator,
                               batch_size, progress)
    return ratios.amax(dim=1)
