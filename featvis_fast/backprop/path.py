"""Path attributions: integrated gradients and GradientSHAP, batched over their sample points.

integrated_gradients   (x - x') * integral_0^1 dS(x' + a (x - x'))/dx da (Sundararajan et al. 2017)
gradient_shap          expected gradients over a baseline distribution, a random point on each
                       path (Lundberg & Lee 2017; Captum's GradientShap)

Both follow Captum 0.9's definitions (quadrature rules, draw layout, convergence delta), so the
numbers can be compared with it; the gradients are this package's (engine, lean backward), run
on all sample points of all images together, `internal_batch_size` rows at a time.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import _rectifier_reference as ref
from .._validate import check_choice, check_model_and_batch
from ..engine import Target
from . import _rows
from .methods import _attribute, _forward_selected, check_create_graph

METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def quadrature(method: str, steps: int) -> tuple[list[float], list[float]]:
    """Captum's integration rule: (step sizes, alphas), each `steps` long.

    Args:
        method: "gausslegendre" (Gauss-Legendre nodes on [0, 1]) or "riemann_left", "riemann_right",
            "riemann_middle", "riemann_trapezoid" (steps >= 2; the alphas come from torch.linspace
            in the default dtype and every step size is 1 / steps, the trapezoid's two ends halved,
            as in Captum).
        steps: the number of points on the path.

    Returns:
        (step_sizes, alphas) as Python floats.
    """
    check_choice("method", method, METHODS)
    _rows.check_count("steps", steps)
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (0.5 * weights).tolist(), (0.5 * (1 + nodes)).tolist()
    if steps < 2:
        raise ValueError(f"{method} needs steps >= 2, got {steps}")
    sizes = [1 / steps] * steps
    rule = method.split("_")[1]
    if rule == "trapezoid":
        sizes[0] /= 2
        sizes[-1] /= 2
        alphas = torch.linspace(0, 1, steps)
    elif rule == "left":
        alphas = torch.linspace(0, 1 - 1 / steps, steps)
    elif rule == "middle":
        alphas = torch.linspace(1 / (2 * steps), 1 - 1 / (2 * steps), steps)
    else:
        alphas = torch.linspace(1 / steps, 1, steps)
    return sizes, alphas.tolist()


def _baseline(baseline: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A number, x-shaped tensor or one image -> a tensor broadcastable to x, in x's dtype and device."""
    image = tuple(x.shape[1:])
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full((1, *image), float(baseline), dtype=x.dtype, device=x.device)
    if not isinstance(baseline, torch.Tensor) or not baseline.is_floating_point():
        raise TypeError(f"baseline must be a number or a floating-point tensor, got {type(baseline).__name__}")
    if tuple(baseline.shape) == image:
        baseline = baseline[None]
    if tuple(baseline.shape) not in (tuple(x.shape), (1, *image)):
        raise ValueError(f"baseline must be a number or shaped like x {tuple(x.shape)} or like one image {image}, "
                         f"got {tuple(baseline.shape)}")
    return baseline.detach().to(dtype=x.dtype, device=x.device)


def _gradients(model, rows: torch.Tensor, target: Target, rows_per_call: int, backend, method: str,
               create_graph: bool = False) -> torch.Tensor:
    """d(target)/d(row) for stacked rows, `rows_per_call` at a time (in the autograd graph with create_graph)."""
    def gradient(chunk, chunk_target):
        return _attribute(model, chunk, chunk_target, ref.BACKPROP, grad_seed="onehot", backend=backend,
                          nonlinear="ignore", method=method, create_graph=create_graph)

    return _rows.run_rows(gradient, rows, target, rows_per_call)


def _scores(model, x: torch.Tensor, target: Target) -> torch.Tensor:
    """(B,) the target's value at x (summed over a unit's map), without gradients."""
    with torch.no_grad():
        selected = _forward_selected(model, x.contiguous(), target)
    return selected.reshape(x.shape[0], -1).sum(dim=1)


def completeness_delta(model, attributions: torch.Tensor, start: torch.Tensor, end: torch.Tensor,
                       target: Target) -> torch.Tensor:
    """Captum's convergence delta: sum(attributions) - (S(end) - S(start)) per row, (N,)."""
    total = attributions.reshape(attributions.shape[0], -1).sum(dim=1)
    return total - (_scores(model, end, target) - _scores(model, start, target))


def integrated_gradients(model: torch.nn.Module, x: torch.Tensor, target: Target = None,
                         baseline: float | torch.Tensor = 0.0, steps: int = 50, method: str = "gausslegendre", *,
                         internal_batch_size: int | None = None, return_delta: bool = False,
                         create_graph: bool = False,
                         backend: str | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Integrated gradients (Sundararajan, Taly & Yan, ICML 2017), Captum's IntegratedGradients.

    (x - x') * sum_s w_s dS(x' + a_s (x - x'))/dx for the quadrature (w_s, a_s) of `method`. All
    steps of all images are stacked (row s * B + b) and run `internal_batch_size` rows at a time.
    As in Captum, the step sizes are rounded to float32 before they weight float64 gradients, so
    float64 results equal Captum's (the quadrature, not the arithmetic, limits their accuracy).

    Args:
        model: the CNN (eval mode; it is not modified).
        x: inputs (B, C, H, W) (any (B, ...) works), float32 or float64.
        target: what is explained, a featvis_fast.Target (None: the class predicted for each x,
            at every point of its path).
        baseline: x', a number, a tensor shaped like x, or one image (C, H, W) / (1, C, H, W).
        steps: points on the path (>= 1; >= 2 for the Riemann rules).
        method: "gausslegendre", "riemann_left", "riemann_right", "riemann_middle" or
            "riemann_trapezoid" (see quadrature).
        internal_batch_size: rows per forward/backward (None: max(B, 32) on the CPU, max(B, 256) on
            CUDA).
        return_delta: also return the completeness error, Captum's convergence delta.
        create_graph: keep the attributions in the autograd graph, differentiable with respect to x
            (when it requires grad) and the model's parameters (plain autograd; see fv.saliency);
            the delta is not.
        backend: kernel backend (None: the fastest for x's device).

    Returns:
        the attributions, shaped like x, in x's dtype; with return_delta, (attributions, delta (B,)),
        delta = sum(attributions) - (S(x) - S(x')) per image.
    """
    check_model_and_batch(model, x)
    sizes, alphas = quadrature(method, steps)
    x0 = x if check_create_graph(create_graph) else x.detach()
    start = _baseline(baseline, x0)
    batch = x0.shape[0]
    target = _rows.resolve_target(model, x0, target)
    diff = x0 - start
    a = torch.tensor(alphas, dtype=x0.dtype, device=x0.device).view(steps, *([1] * x0.dim()))
    rows = (start + a * diff).reshape(steps * batch, *x0.shape[1:])
    grads = _gradients(model, rows, _rows.expand_target(target, batch, steps),
                       _rows.rows_per_pass(internal_batch_size, batch, x0.device), backend, "integrated_gradients",
                       create_graph)
    weights = torch.tensor(sizes).float().to(device=grads.device, dtype=grads.dtype)
    total = (grads.reshape(steps, batch, -1) * weights.view(steps, 1, 1)).sum(dim=0).view_as(x0)
    attributions = total * diff
    if not return_delta:
        return attributions
    return attributions, completeness_delta(model, attributions.detach(), start.expand_as(x0), x0.detach(), target)


def _draws(generator, samples, batch, choices, x, stdev, baseline_index, noise, alphas):
    """GradientSHAP's (samples, B) baseline indices, (samples, *x.shape) noise or None, (samples, B) alphas:
    the given ones (checked), the others drawn from `generator` in that order."""
    device = generator.device if generator is not None else torch.device("cpu")
    if baseline_index is None:
        baseline_index = torch.randint(choices, (samples, batch), generator=generator, device=device)
    if noise is None and stdev > 0:
        noise = torch.randn((samples, *x.shape), generator=generator, dtype=x.dtype, device=device) * stdev
    if alphas is None:
        alphas = torch.rand((samples, batch), generator=generator, dtype=x.dtype, device=device)
    expected = (("baseline_index", baseline_index, (samples, batch)), ("alphas", alphas, (samples, batch)),
                ("noise", noise, (samples, *x.shape)))
    for name, given, shape in expected:
        if given is not None and tuple(given.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} (samples, B, ...), got {tuple(given.shape)}")
    if baseline_index.dtype not in (torch.int64, torch.int32) or bool(
            ((baseline_index < 0) | (baseline_index >= choices)).any()):
        raise ValueError(f"baseline_index must hold integers in [0, {choices})")
    if bool(((alphas < 0) | (alphas > 1)).any()):
        raise ValueError("alphas must lie in [0, 1]")
    move = dict(device=x.device)
    return (baseline_index.to(**move).long(), None if noise is None else noise.to(dtype=x.dtype, **move),
            alphas.to(dtype=x.dtype, **move))


def gradient_shap(model: torch.nn.Module, x: torch.Tensor, target: Target = None, baselines: torch.Tensor = None,
                  samples: int = 5, stdev: float = 0.0, *, generator: torch.Generator | None = None,
                  baseline_index: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                  alphas: torch.Tensor | None = None, internal_batch_size: int | None = None,
                  return_delta: bool = False, create_graph: bool = False, backend: str | None = None
                  ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """GradientSHAP (Lundberg & Lee, NeurIPS 2017), Captum's GradientShap: expected gradients.

    For each image and sample s: a baseline x'_s drawn from `baselines`, Gaussian noise added to
    x (x~_s = x + n_s), a point p_s = a_s x~_s + (1 - a_s) x'_s with a_s uniform in [0, 1]; the
    attribution is the mean over samples of (x~_s - x'_s) * dS(p_s)/dx. All samples of all images
    run together (row s * B + b), `internal_batch_size` rows at a time.

    Args:
        model: the CNN (eval mode; it is not modified).
        x: inputs (B, C, H, W) (any (B, ...) works), float32 or float64.
        target: what is explained, a featvis_fast.Target (None: the class predicted for each x).
        baselines: the baseline distribution (N, C, H, W) (or one image (C, H, W)), N >= 1.
        samples: draws per image (>= 1).
        stdev: the noise's standard deviation in x's units (0: no noise).
        generator: the torch.Generator the draws come from (None: torch's global one). They are
            drawn in this order: baseline indices, noise (only when stdev > 0), alphas.
        baseline_index: (samples, B) indices into baselines, instead of drawing them.
        noise: (samples, B, C, H, W) noise added to x, instead of drawing it (stdev is then unused).
        alphas: (samples, B) points on the paths in [0, 1], instead of drawing them.
        internal_batch_size: rows per forward/backward (None: max(B, 32) on the CPU, max(B, 256) on
            CUDA).
        return_delta: also return the completeness error of each sample.
        create_graph: keep the attributions in the autograd graph, differentiable with respect to x
            (when it requires grad) and the model's parameters (plain autograd; see fv.saliency);
            the delta is not.
        backend: kernel backend (None: the fastest for x's device).

    Returns:
        the attributions, shaped like x, in x's dtype; with return_delta, (attributions,
        delta (samples, B)), delta = sum((x~ - x') * dS(p)/dx) - (S(x~) - S(x')) per sample.
    """
    check_model_and_batch(model, x)
    _rows.check_count("samples", samples)
    if baselines is None:
        raise ValueError("gradient_shap needs baselines, a (N, C, H, W) tensor of reference inputs")
    x0 = x if check_create_graph(create_graph) else x.detach()
    image = tuple(x0.shape[1:])
    if not isinstance(baselines, torch.Tensor) or not baselines.is_floating_point():
        raise TypeError(f"baselines must be a floating-point tensor (N, *x.shape[1:]), got {type(baselines).__name__}")
    if tuple(baselines.shape) == image:
        baselines = baselines[None]
    if tuple(baselines.shape[1:]) != image or baselines.shape[0] < 1:
        raise ValueError(f"baselines must have shape (N, {', '.join(map(str, image))}), got {tuple(baselines.shape)}")
    if not isinstance(stdev, (int, float)) or isinstance(stdev, bool) or not stdev >= 0:
        raise ValueError(f"stdev must be a number >= 0, got {stdev!r}")
    batch = x0.shape[0]
    index, noise, a = _draws(generator, samples, batch, baselines.shape[0], x0, stdev, baseline_index, noise, alphas)
    target = _rows.resolve_target(model, x0, target)
    noisy = x0.expand(samples, *x0.shape) if noise is None else x0 + noise
    starts = baselines.detach().to(dtype=x0.dtype, device=x0.device)[index]
    a = a.view(samples, batch, *([1] * len(image)))
    rows = (a * noisy + (1.0 - a) * starts).reshape(samples * batch, *image)
    expanded = _rows.expand_target(target, batch, samples)
    grads = _gradients(model, rows, expanded, _rows.rows_per_pass(internal_batch_size, batch, x0.device), backend,
                       "gradient_shap", create_graph)
    per_sample = (noisy - starts).reshape(samples * batch, *image) * grads
    attributions = per_sample.view(samples, *x0.shape).sum(dim=0) / samples
    if not return_delta:
        return attributions
    delta = completeness_delta(model, per_sample.detach(), starts.reshape(-1, *image),
                               noisy.detach().reshape(-1, *image), expanded)
    return attributions, delta.view(samples, batch)
