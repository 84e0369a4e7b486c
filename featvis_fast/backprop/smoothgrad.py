"""SmoothGrad, SmoothGrad-squared and VarGrad around any attribution method (Captum's NoiseTunnel).

smoothgrad      mean over noisy copies of the attribution (Smilkov et al. 2017)
smoothgrad_sq   mean of its square (Hooker et al. 2019)
vargrad         its variance, mean of squares minus squared mean (Adebayo et al. 2018)
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .._validate import check_choice, check_model_and_batch
from ..engine import Target
from . import _rows

KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")


def _noise(noise, generator, samples: int, sigma: float, x: torch.Tensor) -> torch.Tensor:
    """(samples, *x.shape) noise in x's dtype on x's device: the given one (checked) or sigma * N(0, 1)
    drawn from generator (on the generator's device, so a seed gives the same noise on any device)."""
    if noise is None:
        if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not sigma >= 0:
            raise ValueError(f"sigma must be a number >= 0, got {sigma!r}")
        device = generator.device if generator is not None else torch.device("cpu")
        noise = torch.randn((samples, *x.shape), generator=generator, dtype=x.dtype, device=device) * sigma
    elif not isinstance(noise, torch.Tensor) or not noise.is_floating_point():
        raise TypeError(f"noise must be a floating-point tensor (samples, *x.shape), got {type(noise).__name__}")
    elif tuple(noise.shape) != (samples, *x.shape):
        raise ValueError(f"noise must have shape (samples, *x.shape) = {(samples, *x.shape)}, got {tuple(noise.shape)}")
    return noise.to(dtype=x.dtype, device=x.device)


def smoothgrad(method: Callable[..., torch.Tensor], model: torch.nn.Module, x: torch.Tensor, target: Target = None,
               samples: int = 50, sigma: float = 0.15, kind: str = "smoothgrad", *,
               generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
               internal_batch_size: int | None = None, **method_kwargs: Any) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017) and its squared and variance forms, as Captum's NoiseTunnel.

    `method` runs on all noisy copies of all images together (row s * B + b, as many rows per
    call as internal_batch_size), and its results are averaged per image over the samples.

    Args:
        method: any attribution of this package (fv.saliency, fv.integrated_gradients, fv.gradcam,
            ...) or a function (model, x, target, **method_kwargs) -> (B, ...) tensor.
        model: the CNN (eval mode; it is not modified).
        x: inputs (B, C, H, W), float32 or float64.
        target: what is explained, a featvis_fast.Target (None: the class predicted for the clean
            x, explained at every noisy copy; Captum passes None on to the method instead).
        samples: noisy copies per image (>= 1).
        sigma: the noise's standard deviation in x's units (Captum's `stdevs`; the paper's noise
            level is sigma / (x.max() - x.min()), 10-20% there).
        kind: "smoothgrad" (mean), "smoothgrad_sq" (mean of squares) or "vargrad" (variance).
        generator: the torch.Generator the noise is drawn from (None: torch's global one).
        noise: (samples, B, C, H, W) noise added to x, instead of drawing it (sigma is then
            unused), so a run can be reproduced or compared with another tool exactly.
        internal_batch_size: rows per call of method (None: max(B, 32) on the CPU, max(B, 256) on
            CUDA).
        method_kwargs: keyword arguments passed to every call of method (layer=, backend=, ...);
            with create_graph=True (for a method that takes it) the result stays in the autograd
            graph, differentiable with respect to x (when it requires grad) and the parameters.

    Returns:
        (B, ...) shaped like one call of method on x, in x's dtype.
    """
    if not callable(method):
        raise TypeError(f"method must be an attribution function such as fv.saliency, got {type(method).__name__}")
    check_model_and_batch(model, x)
    check_choice("kind", kind, KINDS)
    _rows.check_count("samples", samples)
    x0 = x if method_kwargs.get("create_graph") is True else x.detach()
    noise = _noise(noise, generator, samples, sigma, x0.detach())
    batch = x0.shape[0]
    target = _rows.resolve_target(model, x0, target)
    rows = (x0 + noise).reshape(samples * batch, *x0.shape[1:])
    results = _rows.run_rows(lambda chunk, t: method(model, chunk, t, **method_kwargs), rows,
                             _rows.expand_target(target, batch, samples),
                             _rows.rows_per_pass(internal_batch_size, batch, x0.device))
    results = results.view(samples, batch, *results.shape[1:])
    mean = results.sum(dim=0) / samples
    if kind == "smoothgrad":
        return mean
    mean_sq = (results * results).sum(dim=0) / samples
    return mean_sq if kind == "smoothgrad_sq" else mean_sq - mean * mean
