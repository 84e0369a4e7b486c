"""Infidelity (Yeh et al. 2019, "On the (In)fidelity and Sensitivity of Explanations", NeurIPS).

infidelity(b) = E_I[(I . a_b - (f_b(x_b) - f_b(x_b - I)))^2]: how far the attributions' prediction
of the score change under a perturbation I (its dot product with I) is from the real change,
averaged over n perturbations. Captum's definition (captum.metrics.infidelity); normalise=True
first scales the attributions by the optimal beta = E[(I . a) d] / E[(I . a)^2], d the score change
(the paper's official code always does). Lower is better.

A perturbation is a callable perturb(x, k, generator) -> (I, perturbed input), both (B, C, H, W):
sample k for all images (called once per k, in order). The default, `gaussian_perturbation`, is
the paper's "Gaussian" perturbation I ~ N(0, 0.2^2) per input value, perturbed input x - I (the
official code also clips x - I to the pixel range [0, 1]; ours does not clip: inputs may be
normalised). The n * B perturbed copies are scored in batches of whole samples sized to memory.

Quantus' Infidelity measures the same squared error with other perturbations: for each patch
size (default [4]), the patches of a grid in raster order are replaced one after another by the
image's minimum ("black") and kept replaced, so sample k removes patches 0..k; the mean runs over
these (H / p) * (W / p) cumulative occlusions (its n_perturb_samples repeats them: identical with
a "black" baseline). `cumulative_patch_perturbation(p)` is that perturbation: with
n_samples = ceil(H / p) * ceil(W / p) it gives Quantus' numbers (Quantus needs H, W multiples of p;
several patch sizes: average our calls).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .._validate import check_model_and_batch
from ..engine import Target
from ._draws import DrawnSamples
from ._inputs import attribution_maps, generator_for, memory_format_of, positive_int, require_target
from ._scoring import Scorer

Perturb = Callable[[torch.Tensor, int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def gaussian_perturbation(noise_std: float = 0.2) -> Perturb:
    """The paper's Gaussian perturbation: I ~ N(0, noise_std^2) per input value, perturbed input x - I.

    Args:
        noise_std: the noise's standard deviation (in the model's input units).

    Returns:
        perturb(x, k, generator) -> (I, x - I); the noise is drawn on the CPU generator in x's
        dtype and moved to x's device.
    """
    if not noise_std > 0:
        raise ValueError(f"noise_std must be > 0, got {noise_std!r}")

    def perturb(x: torch.Tensor, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).mul_(noise_std).to(x.device)
        return noise, x - noise

    return perturb


def cumulative_patch_perturbation(patch_size: int = 4, baseline: str | float = "black") -> Perturb:
    """Quantus Infidelity's perturbation: sample k replaces patches 0..k (raster order) by a baseline.

    Args:
        patch_size: the side of the square patches of the grid (the last row and column of
            patches are cut at the image border when the side is not a multiple).
        baseline: "black" (each image's minimum over channels and pixels, Quantus' default),
            "white" (its maximum) or a number.

    Returns:
        perturb(x, k, generator) -> (x - x_k, x_k), x_k the image with patches 0..k replaced; k
        must be below the number of patches, ceil(H / patch_size) * ceil(W / patch_size).
    """
    patch_size = positive_int(patch_size, "patch_size")
    if not (baseline in ("black", "white") or (isinstance(baseline, (int, float)) and not isinstance(baseline, bool))):
        raise ValueError(f"baseline must be 'black', 'white' or a number, got {baseline!r}")

    def perturb(x: torch.Tensor, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = x.shape[-2:]
        rows, cols = -(-height // patch_size), -(-width // patch_size)
        if not 0 <= k < rows * cols:
            raise ValueError(f"sample {k} needs patch {k}, but a {height}x{width} image has {rows * cols} patches "
                             f"of {patch_size} px: use n_samples <= {rows * cols}")
        patch_row = torch.arange(height, device=x.device) // patch_size
        patch_col = torch.arange(width, device=x.device) // patch_size
        removed = (patch_row[:, None] * cols + patch_col[None, :]) <= k
        flat = x.reshape(x.shape[0], -1)
        if baseline == "black":
            fill = flat.amin(dim=1)
        elif baseline == "white":
            fill = flat.amax(dim=1)
        else:
            fill = torch.full((x.shape[0],), float(baseline), dtype=x.dtype, device=x.device)
        perturbed = torch.where(removed, fill[:, None, None, None], x)
        return x - perturbed, perturbed

    return perturb


def _checked(drawn: object, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(drawn, tuple) and len(drawn) == 2 and all(isinstance(t, torch.Tensor) for t in drawn)):
        raise TypeError("perturb(x, k, generator) must return (perturbation, perturbed input), two tensors")
    for what, t in zip(("perturbation", "perturbed input"), drawn):
        if t.shape != x.shape:
            raise ValueError(f"perturb returned a {what} of shape {tuple(t.shape)} for images {tuple(x.shape)} "
                             f"(sample {k})")
    return drawn[0].to(x.device), drawn[1].to(x.device, x.dtype)


def infidelity(model: torch.nn.Module, x: torch.Tensor, attributions: object, target: Target, *,
               n_samples: int = 10, noise_std: float = 0.2, perturb: Perturb | None = None, normalise: bool = False,
               activation: str | None = None, seed: int = 0, generator: torch.Generator | None = None,
               batch_size: int | None = None, progress: bool = False) -> torch.Tensor:
    """Infidelity (Yeh et al. 2019): E_I[(I . a - (f(x) - f(x - I)))^2] over n perturbations I per image.

    Captum's infidelity (same perturbations; normalise is Captum's normalize); the default perturbation is
    the paper's Gaussian one. Attributions with one channel weigh all input channels of a pixel
    alike (I . a sums a * I over channels and pixels). Lower is better.

    Args:
        model: the CNN (eval mode).
        x: images (B, C, H, W), float32 or float64.
        attributions: (B, H, W), (B, 1, H, W) or (B, C, H, W).
        target: the explained class: an int, a LongTensor (B,) or a callable on the output.
        n_samples: perturbations per image.
        noise_std: the std of the default Gaussian perturbation (ignored with `perturb`).
        perturb: perturb(x, k, generator) -> (I, perturbed input), both shaped like x: sample k
            for all images (see `gaussian_perturbation`, `cumulative_patch_perturbation`).
        normalise: scale the attributions by the optimal beta = E[(I . a) d] / E[(I . a)^2] first
            (Captum's normalize; beta = 0 when every I . a is 0).
        activation: None (raw outputs, Captum's and Quantus' default) or "softmax".
        seed: seed of the perturbations (used when generator is None).
        generator: a CPU torch.Generator passed to perturb (overrides seed).
        batch_size: perturbed copies per forward (None: as many as fit in memory; whole samples).
        progress: a tqdm bar over the copies.

    Returns:
        (B,) infidelities on x's device, float64 for float64 inputs, else float32.
    """
    require_target(target, "infidelity")
    n_samples = positive_int(n_samples, "n_samples")
    perturb = gaussian_perturbation(noise_std) if perturb is None else perturb
    if not callable(perturb):
        raise TypeError(f"perturb must be a callable (x, k, generator) -> (I, perturbed input), got {perturb!r}")
    check_model_and_batch(model, x)
    if x.dim() != 4:
        raise ValueError(f"infidelity needs images (B, C, H, W), got shape {tuple(x.shape)}")
    x = x.detach()
    a = attribution_maps(attributions, x)
    scorer = Scorer(model, x, target, activation=activation, batch_size=batch_size)
    batch, device = x.shape[0], x.device
    gen = generator_for(seed, generator)
    drawn = DrawnSamples(lambda k: _checked(perturb(x, k, gen), x, k))
    predicted_change = torch.empty(n_samples, batch, dtype=scorer.dtype, device=device)  # I . a
    layout = memory_format_of(scorer.x)

    def copies(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        k0, k1 = start // batch, stop // batch
        samples = drawn.take(k0, k1)
        perturbation = torch.stack([s[0] for s in samples]).to(scorer.dtype)
        predicted_change[k0:k1] = (perturbation * a).flatten(2).sum(-1)
        perturbed = torch.cat([s[1] for s in samples])
        perturbed = perturbed.contiguous(memory_format=layout)
        return perturbed, torch.arange(batch, device=device).repeat(k1 - k0)

    scores = scorer.score(n_samples * batch, copies, progress=progress, desc="infidelity", step=batch)
    change = (scorer.clean[None] - scores.reshape(n_samples, batch)).T  # (B, n)
    estimate = predicted_change.T
    if normalise:
        fit = (estimate * change).sum(1)
        energy = estimate.square().sum(1)
        beta = torch.where(energy == 0, torch.zeros_like(fit), fit / torch.where(energy == 0, 1, energy))
        estimate = beta[:, None] * estimate
    return (estimate - change).square().mean(1)
