"""Extremal perturbations (Fong, Patrick & Vedaldi, ICCV 2019, "Understanding Deep Networks via
Extremal Perturbations and Smooth Masks"), every image and every area optimized together.

For each image and target area a, a smooth mask m (featvis::smooth_masks: bumps every `step`
pixels, smooth-max pooled) is found by SGD that maximizes

    reward(model(perturb(x, m))) - lambda_t * mean((sort(m) - r_a)^2)

where perturb blends a pyramid of increasingly blurred (or faded) copies of x by m
(featvis::blend_levels), r_a is the sorted mask of area a (zeros, then a fraction a of ones) and
lambda_t = 300 * 1.0035^t grows so that the area constraint wins in the end. The preservation game
keeps the class score with the mask, deletion removes it with 1 - m, dual does both. Defaults
are TorchRay's (`torchray.attribution.extremal_perturbation`): 800 SGD steps (lr 0.01, momentum
0.9, dampening 0.9), parameters clamped to [0, 1], every other step mirrored (jitter), L = 8
levels, maximum blur 20, step 7, sigma 21.

Rows: image b and area a make row b * A + a; the model runs them in batches of `batch_size`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

import torch
from tqdm.auto import tqdm

from .. import _backend
from .. import _extremal_reference as ref
from .._validate import check_model_and_batch
from ..engine import Target, class_scores, is_layout_error, output_gradient, prefers_channels_last
from ..ops import extremal as ops

VARIANTS = ("preserve", "delete", "dual")
PERTURBATIONS = ("blur", "fade")
REWARDS = ("simple", "contrastive")
LEARNING_RATE, MOMENTUM, REGUL_WEIGHT, REGUL_GROWTH = 0.01, 0.9, 300.0, 1.0035
CONTRAST_FLOOR = -100.0  # TorchRay's contrastive reward sets the target's own score to this before the max


def _areas(areas) -> tuple[float, ...]:
    values = (areas,) if isinstance(areas, Real) and not isinstance(areas, bool) else areas
    try:
        values = tuple(values)
    except TypeError:
        raise TypeError(f"areas must be a number or a sequence of numbers in (0, 1), got {areas!r}") from None
    if not values:
        raise ValueError("areas must name at least one area")
    for a in values:
        if not isinstance(a, Real) or isinstance(a, bool) or not 0 < float(a) < 1:
            raise ValueError(f"every area must be a number in (0, 1), got {a!r}")
    return tuple(float(a) for a in values)


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def _positive_int(name: str, value: object, least: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    return value


def _positive(name: str, value: object) -> float:
    if not isinstance(value, Real) or isinstance(value, bool) or not float(value) > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _jitter_schedule(jitter, max_iter: int, seed: int) -> list[bool]:
    """Which steps run mirrored: TorchRay's even steps (True), none (False), or a fair coin per step
    drawn from `seed` ("random")."""
    if jitter is True:
        return [t % 2 == 0 for t in range(max_iter)]
    if jitter is False:
        return [False] * max_iter
    if jitter == "random":
        generator = torch.Generator().manual_seed(seed)
        return (torch.rand(max_iter, generator=generator) < 0.5).tolist()
    raise ValueError(f"jitter must be True, False or 'random', got {jitter!r}")


def _reward(output: torch.Tensor, classes: torch.Tensor, kind: str) -> torch.Tensor:
    """(N,) TorchRay's simple reward (the class score) or contrastive one (the class score minus the
    best other class, the class itself counted as CONTRAST_FLOOR)."""
    flat = output.reshape(output.shape[0], -1)
    own = flat.gather(1, classes[:, None])[:, 0]
    if kind == "simple":
        return own
    others = flat.scatter(1, classes[:, None], CONTRAST_FLOOR)
    return own - others.max(dim=1).values


def area_regularizer(full: torch.Tensor, areas: torch.Tensor, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """TorchRay's area term and its gradient: -weight * mean((sort(m) - r)^2) with r the sorted
    reference of area a (int(P (1 - a)) zeros, then ones), computed by selection instead of a sort:
    the int(P (1 - a)) smallest values are compared with 0 (ties at the threshold: the first ones in
    memory order), the others with 1.

    Args:
        full: (N, P) masks.
        areas: (N,) each row's target area.
        weight: lambda_t.

    Returns:
        (regul (N,), d regul / d full (N, P)).
    """
    n, p = full.shape
    zeros = (p * (1 - areas.double())).long().tolist()  # int(), as TorchRay: truncation
    reference = torch.ones_like(full)
    for count in sorted(set(zeros)):
        rows = [i for i, z in enumerate(zeros) if z == count]
        if count == 0:
            continue
        block = full[rows]
        threshold = block.kthvalue(count, dim=1, keepdim=True).values
        below = block < threshold
        tied = block == threshold
        room = count - below.sum(dim=1, keepdim=True)
        low = below | (tied & (tied.cumsum(dim=1) <= room))
        reference[rows] = (~low).to(full.dtype)
    diff = full - reference
    regul = -(diff * diff).mean(dim=1) * weight
    return regul, diff * (-2.0 * weight / p)


def extremal_perturbation(model: torch.nn.Module, x: torch.Tensor, target: Target = None,
                          areas: float | Sequence[float] = (0.05, 0.1, 0.2), *, variant: str = "preserve",
                          perturbation: str = "blur", reward: str = "simple", max_iter: int = 800,
                          num_levels: int = 8, max_blur: float = 20.0, step: int = 7, sigma: float = 21.0,
                          jitter: bool | str = True, seed: int = 0, batch_size: int | None = None,
                          return_history: bool = False, progress: bool = True,
                          backend: str | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Extremal perturbation masks (Fong et al. 2019) of a batch, for every area at once.

    Args:
        model: the classifier (eval mode); its output (B, classes).
        x: images (B, C, H, W), float32 or float64.
        target: the class each mask explains: None (predicted class), an int, or a LongTensor /
            sequence (B,) of per-image classes.
        areas: one target area or several, each in (0, 1) (fraction of the image kept).
        variant: "preserve" (keep the score with the mask), "delete" (remove it with 1 - mask) or
            "dual" (both; two model rows per mask).
        perturbation: "blur" (Gaussian blur up to max_blur) or "fade" (towards 0).
        reward: "simple" (the class score) or "contrastive" (minus the best other class).
        max_iter: SGD steps.
        num_levels: pyramid levels L (>= 2) interpolated between.
        max_blur: the strongest blur's standard deviation in pixels.
        step: the mask parameters' spacing in pixels.
        sigma: the mask bumps' scale in pixels.
        jitter: True mirrors every other step (TorchRay), False never, "random" on a fair coin per
            step drawn from `seed`.
        seed: the seed of jitter="random" (the only randomness; the rest is deterministic).
        batch_size: model rows per pass (None: all rows of a step in one pass).
        return_history: also return the reward and area terms of every step.
        progress: show a progress bar over the steps.
        backend: kernel backend (None: the fastest that runs here; see featvis_fast.backends()).

    Returns:
        the masks (B, A, H, W) of the last step in x's dtype (as TorchRay returns them); with
        return_history, (masks, history (B, A, 2, max_iter)), each step's reward and area term
        (negative, weighted) per mask.
    """
    check_model_and_batch(model, x)
    if x.dim() != 4 or x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"x must be (B, C, H, W) float32 or float64, got {x.dtype} {tuple(x.shape)}")
    if callable(target) and not isinstance(target, torch.Tensor):
        raise TypeError("extremal_perturbation explains a class: target must be None, an int or per-image classes")
    area_list = _areas(areas)
    variant = _choice("variant", variant, VARIANTS)
    kind = _choice("perturbation", perturbation, PERTURBATIONS)
    reward_kind = _choice("reward", reward, REWARDS)
    max_iter = _positive_int("max_iter", max_iter)
    levels = _positive_int("num_levels", num_levels, 2)
    step = _positive_int("step", step)
    sigma, max_blur = _positive("sigma", sigma), _positive("max_blur", max_blur)
    flips = _jitter_schedule(jitter, max_iter, seed)
    if batch_size is not None:
        _positive_int("batch_size", batch_size)
    chosen = _backend.resolve_backend(backend, x.device)

    x = x.detach()
    batch, _, height, width = x.shape
    with torch.no_grad():
        classes, _ = class_scores.resolve(model(x), target)
    n_areas = len(area_list)
    rows = batch * n_areas
    src = torch.arange(rows, device=x.device, dtype=torch.int32) // n_areas
    row_classes = classes[src.long()]
    row_areas = torch.tensor(area_list, dtype=torch.float64).repeat(batch)

    geometry = ref.mask_geometry(height, width, step, sigma)
    weights = ref.tap_weights(geometry, x.dtype).to(x.device)
    with torch.no_grad():
        pyramid = ref.pyramid(x, levels, kind, max_blur).contiguous()
    params = torch.ones(rows, *geometry.shape_in, dtype=x.dtype, device=x.device)
    optimizer = torch.optim.SGD([params], lr=LEARNING_RATE, momentum=MOMENTUM, dampening=MOMENTUM)
    games = {"preserve": ((False, 1.0),), "delete": ((True, -1.0),), "dual": ((False, 1.0), (True, -1.0))}[variant]
    per_pass = batch_size or rows * len(games)
    layout = {"channels_last": prefers_channels_last(x)}
    history = torch.zeros(max_iter, 2, rows, dtype=x.dtype, device=x.device) if return_history else None
    top, (out_h, out_w) = geometry.crop, geometry.shape_out
    regul_weight = REGUL_WEIGHT

    def game_gradient(crop, complement, sign, flip):
        """(rewards (rows,), d rewards / d crop (rows, H, W)) of one game, `per_pass` rows at a time."""
        rewards = torch.empty(rows, dtype=x.dtype, device=x.device)
        grads = torch.empty_like(crop)
        start = 0
        while start < rows:
            stop = min(start + max(1, per_pass // len(games)), rows)
            chunk, chunk_src = crop[start:stop], src[start:stop]
            chunk_classes = row_classes[start:stop]

            def score(output, chunk_classes=chunk_classes):
                return sign * _reward(output, chunk_classes, reward_kind)

            try:
                images = ops.blend_levels(pyramid, chunk, chunk_src, complement, flip, layout["channels_last"], chosen)
                scores, grad = output_gradient(model, images, score, chosen)
            except RuntimeError as exc:
                if not (layout["channels_last"] and is_layout_error(exc)):
                    raise
                layout["channels_last"] = False  # the model .view()s its activations: contiguous from now on
                continue
            rewards[start:stop] = scores
            grads[start:stop] = ops.blend_levels_backward(grad.to(x.dtype), pyramid, chunk, chunk_src, complement,
                                                          flip, chosen)
            start = stop
        return rewards, grads

    steps = tqdm(range(max_iter), desc="extremal perturbation", disable=not progress, leave=False)
    for t in steps:
        full = ops.smooth_masks(params, weights, geometry.padding, ref.COLDNESS, out_h, out_w, chosen)
        crop = full[:, top:top + height, top:top + width].contiguous()
        total_reward = torch.zeros(rows, dtype=x.dtype, device=x.device)
        d_crop = torch.zeros_like(crop)
        for complement, sign in games:
            rewards, grads = game_gradient(crop, complement, sign, flips[t])
            total_reward += rewards
            d_crop += grads
        regul, d_full = area_regularizer(full.reshape(rows, -1), row_areas.to(x.device), regul_weight)
        # the loss is -(reward + regul): its gradient with respect to the full mask
        g_full = (-d_full).reshape(rows, out_h, out_w)
        g_full[:, top:top + height, top:top + width] -= d_crop
        params.grad = ops.smooth_masks_backward(g_full, params, weights, geometry.padding, ref.COLDNESS, chosen)
        optimizer.step()
        with torch.no_grad():
            params.clamp_(0, 1)
        if history is not None:
            history[t, 0], history[t, 1] = total_reward, regul
        regul_weight *= REGUL_GROWTH

    masks = crop.reshape(batch, n_areas, height, width)
    if history is None:
        return masks
    return masks, history.permute(2, 1, 0).reshape(batch, n_areas, 2, max_iter).cpu()
