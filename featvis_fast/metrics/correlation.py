"""Faithfulness correlation (Bhatt, Weller & Moura 2020, "Evaluating and Aggregating Feature-based Model
Explanations", IJCAI), Quantus 0.6's `FaithfulnessCorrelation`, batched over images and runs.

In each of n_samples runs a random subset of subset_size input features (elements of the C x H x W
image) is set to a baseline; the score of the image is the Pearson correlation, over the runs,
between the attributions summed over the subset and the drop of the target's output. All
n_samples x B perturbed copies are scored in batches sized to memory.
"""
from __future__ import annotations

import numpy as np
import torch

from ..engine import Target
from ._inputs import attribution_maps, generator_for, memory_format_of, positive_int, require_target
from ._scoring import Scorer
from .faithfulness import baseline_fill


def random_subsets(n_samples: int, batch: int, n_features: int, subset_size: int,
                   generator: torch.Generator) -> torch.Tensor:
    """(n_samples, batch, subset_size) int64 (CPU): for each run and image, subset_size distinct features
    drawn uniformly from range(n_features).

    Small subsets (at most half the features) are drawn with replacement and every repeated value is
    redrawn until a row holds no repeats: the procedure treats all feature labels alike, so every
    subset is equally likely, and it costs O(subset_size) per row instead of O(n_features). Larger
    subsets are the subset_size smallest of n_features uniform keys per row.
    """
    rows = n_samples * batch
    if 2 * subset_size > n_features:
        keys = torch.rand(rows, n_features, generator=generator, dtype=torch.float64)
        return keys.topk(subset_size, dim=1, largest=False).indices.reshape(n_samples, batch, subset_size)
    subsets = torch.randint(0, n_features, (rows, subset_size), generator=generator)
    while True:
        ordered, positions = subsets.sort(dim=1, stable=True)
        repeated_in_order = torch.zeros_like(ordered, dtype=torch.bool)
        repeated_in_order[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
        repeated = torch.zeros_like(repeated_in_order).scatter_(1, positions, repeated_in_order)
        count = int(repeated.sum())
        if count == 0:
            return subsets.reshape(n_samples, batch, subset_size)
        subsets[repeated] = torch.randint(0, n_features, (count,), generator=generator)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of the rows of a and b (B, R) -> (B,), clipped to [-1, 1] (scipy's
    pearsonr); NaN where a row is constant (scipy and Quantus return NaN there too)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    a = a / a.norm(dim=1, keepdim=True)
    b = b / b.norm(dim=1, keepdim=True)
    return (a * b).sum(dim=1).clamp(-1, 1)


def check_subsets(subsets: object, batch: int, n_features: int) -> torch.Tensor:
    """Given subsets as a (n_samples, B, subset_size) int64 tensor of distinct in-range feature indices."""
    t = torch.from_numpy(subsets) if isinstance(subsets, np.ndarray) else subsets
    if not isinstance(t, torch.Tensor) or t.dim() != 3 or t.shape[1] != batch or t.dtype.is_floating_point \
            or t.dtype == torch.bool or t.shape[0] < 2 or t.shape[2] < 1:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"subsets must be integer indices (n_samples >= 2, {batch}, subset_size >= 1), got {shape}")
    t = t.long()
    if int(t.min()) < 0 or int(t.max()) >= n_features:
        raise ValueError(f"subsets hold feature indices outside [0, {n_features}) (features: C * H * W)")
    ordered = t.sort(dim=2).values
    if bool((ordered[..., 1:] == ordered[..., :-1]).any()):
        raise ValueError("subsets repeat a feature within a subset (the features are drawn without replacement)")
    return t


def faithfulness_correlation(model: torch.nn.Module, x: torch.Tensor, attributions: object, target: Target, *,
                             n_samples: int = 100, subset_size: int = 224,
                             baseline: str | float | torch.Tensor = "black",
                             activation: str | None = None, abs: bool = False, subsets: object = None,
                             seed: int = 0, generator: torch.Generator | None = None,
                             batch_size: int | None = None, progress: bool = False) -> torch.Tensor:
    """Faithfulness correlation (Bhatt et al. 2020) with Quantus 0.6's definition and defaults.

    For runs r = 1..n_samples a random subset S_r of subset_size features of the C x H x W image is set
    to the baseline; the score is corr_r(sum_{i in S_r} a_i, f(x) - f(x with S_r removed)), with
    (B, 1, H, W) attributions repeated over the channels (Quantus' broadcast) and f the target's
    output. Quantus' normalisation (division by the batch's largest |attribution|) does not change a
    correlation, so there is none here.

    Args:
        model: the CNN (eval mode).
        x: images (B, C, H, W), float32 or float64.
        attributions: (B, H, W), (B, 1, H, W) or (B, C, H, W) tensor or array.
        target: an int class, a LongTensor (B,) or a callable on the output.
        n_samples: random subsets per image (Quantus' 100).
        subset_size: features per subset, fewer than C * H * W (Quantus' 224).
        baseline: what removed features become: "black" (each image's minimum over all its elements,
            Quantus' default), "white" (maximum), "mean", a number, or a tensor broadcastable to x.
        activation: None (the raw output, Quantus' default softmax=False) or "softmax".
        abs: correlate the absolute attributions (Quantus' abs=True).
        subsets: (n_samples, B, subset_size) integer indices into each image's flattened (C * H * W)
            features, e.g. to replay other draws; its shape then sets n_samples and subset_size.
            None: drawn by random_subsets from the generator.
        seed: RNG seed of the subsets (used when generator is None).
        generator: a torch.Generator for the subsets (CPU draws).
        batch_size: copies per forward (None: the largest batch that fits in memory).
        progress: a tqdm bar.

    Returns:
        (B,) correlations in [-1, 1] on x's device, float64 for float64 inputs, else float32; NaN where
        the summed attributions or the output drops do not vary over the runs (as Quantus).
    """
    require_target(target, "faithfulness_correlation")
    a = attribution_maps(attributions, x)
    batch, channels, height, width = x.shape
    n_features = channels * height * width
    if subsets is None:
        positive_int(n_samples, "n_samples")
        positive_int(subset_size, "subset_size")
        if n_samples < 2:
            raise ValueError(f"n_samples must be at least 2 (a correlation over runs), got {n_samples}")
        if subset_size >= n_features:
            raise ValueError(f"subset_size must be smaller than the C * H * W = {n_features} features, "
                             f"got {subset_size}")
        subsets = random_subsets(n_samples, batch, n_features, subset_size, generator_for(seed, generator))
    subsets = check_subsets(subsets, batch, n_features).to(x.device)
    n_samples, _, subset_size = subsets.shape
    scorer = Scorer(model, x, target, activation=activation, batch_size=batch_size)
    images = x.detach().to(scorer.x.dtype).contiguous()
    fill = baseline_fill(images, baseline).reshape(batch, -1)
    model_layout = memory_format_of(scorer.x)

    def copies(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.arange(start, stop, device=x.device)  # copy i: run i // B of image i % B
        run, image = index // batch, index % batch
        removed = subsets[run, image]
        flat = images.reshape(batch, -1)[image]
        flat.scatter_(1, removed, fill[image].gather(1, removed))
        return flat.reshape(-1, channels, height, width).contiguous(memory_format=model_layout), image

    scores = scorer.score(n_samples * batch, copies, progress=progress, desc="faithfulness correlation")
    drops = scorer.clean[:, None] - scores.reshape(n_samples, batch).T
    features = (a.abs() if abs else a).expand(batch, channels, height, width).reshape(batch, -1)
    summed = features.gather(1, subsets.permute(1, 0, 2).reshape(batch, -1)).reshape(batch, n_samples, -1).sum(-1)
    return pearson(summed, drops)
