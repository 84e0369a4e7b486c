"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci 2022, "A Consistent and Efficient
Evaluation Strategy for Attribution Methods", ICML), batched over images and percentages on the device.

For each removal percentage p, the int(H * W * p / 100) pixels with the highest attributions (MoRF;
the lowest for LeRF) of an image are removed and imputed from their neighbours by noisy linear
imputation (`_imputation.linear_imputation` plus Gaussian noise of standard deviation `noise_std` on the
imputed values), and the model scores the imputed copy. All P x B copies are imputed and scored in
batches sized to memory.
"""
from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import numpy as np
import torch

from .._validate import check_choice
from ..engine import Target
from ._draws import DrawnSamples
from ._imputation import linear_imputation
from ._inputs import attribution_maps, generator_for, memory_format_of, pixel_maps, require_target
from ._scoring import Scorer
from .faithfulness import CurveResult

ORDERS = ("morf", "lerf")
DEFAULT_PERCENTAGES = tuple(range(10, 100, 10))



def imputation_noise(shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """Standard normal draws (CPU) for the imputed pixels of one percentage: (B, C, H, W), one value
    per image, channel and pixel (only the removed pixels' values are used)."""
    return torch.randn(shape, generator=generator, dtype=dtype)


def removal_counts(percentages: object, pixels: int) -> list[int]:
    """int(pixels * p / 100) for each percentage p in [0, 100) (Quantus' count, in Python floats)."""
    if isinstance(percentages, Real) and not isinstance(percentages, bool):
        percentages = (percentages,)
    elif isinstance(percentages, (torch.Tensor, np.ndarray)) and percentages.ndim == 1:
        percentages = percentages.tolist()
    if not isinstance(percentages, Sequence) or isinstance(percentages, str) or len(percentages) == 0:
        raise ValueError(f"percentages must be a non-empty sequence of numbers in [0, 100), got {percentages!r}")
    for p in percentages:
        if isinstance(p, bool) or not isinstance(p, Real) or not 0 <= p < 100:
            raise ValueError(f"percentages must lie in [0, 100) (100% leaves nothing to impute from), got {p!r}")
    return [int(pixels * p / 100) for p in percentages]


def removal_ranks(pixel_attributions: torch.Tensor, order: str) -> torch.Tensor:
    """(B, H * W) rank of each pixel in the removal order (0 goes first): descending attributions for
    MoRF, ascending for LeRF, ties in pixel (row-major) order."""
    flat = pixel_attributions.reshape(pixel_attributions.shape[0], -1)
    by_order = torch.argsort(flat, dim=1, descending=order == "morf", stable=True)
    ranks = torch.empty_like(by_order)
    ranks.scatter_(1, by_order, torch.arange(flat.shape[1], device=flat.device).expand_as(by_order))
    return ranks


class _Correct(Scorer):
    """A Scorer whose score is 1 where the copy's predicted class is the target, else 0 (accuracy)."""

    def read(self, out, image_of: torch.Tensor) -> torch.Tensor:
        predicted = out.reshape(out.shape[0], -1).argmax(dim=1)
        return (predicted == self.classes[image_of.long()]).to(self.dtype)


def road(model: torch.nn.Module, x: torch.Tensor, attributions: object, target: Target, *,
         percentages: Sequence[float] = DEFAULT_PERCENTAGES, order: str = "morf", noise_std: float = 0.01,
         activation: str | None = "softmax", accuracy: bool = False, seed: int = 0,
         generator: torch.Generator | None = None, batch_size: int | None = None,
         progress: bool = False) -> CurveResult:
    """ROAD curves (Rong et al. 2022): the target's score after removing and debiasing each percentage.

    Pixels are ranked by their attribution summed over channels. For percentage p the first
    k = int(H * W * p / 100) pixels in that order lose all their channels, which are then imputed by
    the neighbour-weighted linear system (1/6 direct, 1/12 diagonal neighbours) plus
    noise_std * N(0, 1) per imputed value. Ties rank in pixel order (Quantus' unstable NumPy argsort
    orders them arbitrarily).

    Relation to the references: with accuracy=True, `curves[:, j]` is Quantus 0.6 `ROAD`'s per-image
    result (1 if the imputed copy is still classified as the target) and `curves.mean(0)` its
    `evaluation_scores` (Quantus has MoRF only, and its ROAD runs on one-channel images only: it
    indexes the H * W mask with indices into the C * H * W broadcast attributions). pytorch-grad-cam's
    `ROADMostRelevantFirst(percentile=100 - p)` (`ROADLeastRelevantFirst(percentile=100 - p)` for
    LeRF) returns `curves[:, j] - clean score`, and its `ROAD...Average(percentiles)` returns
    `scores - clean score` (it removes the pixels at or above NumPy's interpolated percentile, the
    same k pixels whenever H * W * p / 100 is whole; it rounds the imputed values to float32).

    Args:
        model: the CNN (eval mode).
        x: images (B, C, H, W), float32 or float64.
        attributions: (B, H, W), (B, 1, H, W) or (B, C, H, W) tensor or array.
        target: an int class, a LongTensor (B,) or a callable on the output (not with accuracy=True).
        percentages: removal percentages in [0, 100) (the paper's and grad-cam's 10, 20, ..., 90;
            Quantus' default is 1, 3, ..., 99).
        order: "morf" (most relevant first, the paper's main curve) or "lerf" (least relevant first).
        noise_std: the standard deviation of the Gaussian noise added to imputed values (the paper's,
            Quantus' and grad-cam's 0.01, in x's units); 0 for plain linear imputation.
        activation: "softmax" (the target's probability) or None (the raw output).
        accuracy: score 1.0 where the copy's argmax is the target, else 0.0 (Quantus' ROAD).
        seed: RNG seed of the noise (used when generator is None).
        generator: a torch.Generator for the noise (CPU draws, one (B, C, H, W) field per percentage).
        batch_size: copies per forward (None: the largest batch that fits in memory).
        progress: a tqdm bar.

    Returns:
        CurveResult(scores (B,), curves (B, P)) on x's device, float64 for float64 inputs, else
        float32: curves[b, j] is image b's score at percentages[j], scores the curve's mean over the
        percentages.
    """
    require_target(target, "road")
    check_choice("order", order, ORDERS)
    if isinstance(noise_std, bool) or not isinstance(noise_std, Real) or not noise_std >= 0:
        raise ValueError(f"noise_std must be a number >= 0, got {noise_std!r}")
    if accuracy and callable(target) and not isinstance(target, torch.Tensor):
        raise ValueError("road(accuracy=True) compares the predicted class with the target: pass an int class "
                         "or a LongTensor (B,) of classes, not a callable")
    a = attribution_maps(attributions, x)
    batch, channels, height, width = x.shape
    counts = removal_counts(percentages, height * width)
    gen = generator_for(seed, generator)
    scorer = (_Correct if accuracy else Scorer)(model, x, target, activation=activation, batch_size=batch_size)
    images = x.detach().to(scorer.x.dtype).contiguous()
    ranks = removal_ranks(pixel_maps(a), order)
    limits = torch.tensor(counts, device=x.device)
    # one noise field per percentage, drawn in percentage order whatever the batches
    fields = None if noise_std == 0 else DrawnSamples(
        lambda j: imputation_noise(x.shape, images.dtype, gen).to(x.device))
    model_layout = memory_format_of(scorer.x)

    def copies(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.arange(start, stop, device=x.device)  # copy i: percentage i // B of image i % B
        percentage, image = index // batch, index % batch
        removed = (ranks[image] < limits[percentage][:, None]).reshape(-1, height, width)
        imputed = linear_imputation(images[image], removed)
        if fields is not None:
            first = start // batch
            draws = torch.stack(fields.take(first, (stop - 1) // batch + 1))[percentage - first, image]
            imputed = torch.where(removed[:, None], imputed + noise_std * draws, imputed)
        return imputed.contiguous(memory_format=model_layout), image

    scored = scorer.score(len(counts) * batch, copies, progress=progress, desc="ROAD")
    curves = scored.reshape(len(counts), batch).T.contiguous()
    return CurveResult(curves.mean(dim=1), curves)
