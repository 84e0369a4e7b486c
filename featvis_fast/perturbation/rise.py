"""RISE: Randomized Input Sampling for Explanation (Petsiuk, Das & Saenko 2018), batched on the device.

saliency(b) = sum_i score_b(x_b * M_i + fill * (1 - M_i)) * M_i / (N * p)
with N random masks M_i: a (grid x grid) grid of cells kept with probability p, upsampled
bilinearly to (grid + 1) cells of ceil(H / grid) pixels and cropped at a random shift
(`featvis::rise_masks`). The masked copies are written by `featvis::apply_masks` straight into
the batch buffer and the weighted sum of masks is one matrix product per batch. score: the
target class's softmax probability (the paper's) or the raw output (activation=None).
The masks come from `generator` (or `seed`) on the CPU, so a seed gives the same masks on any device.
"""
from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import torch

from .. import _backend
from .._validate import check_model_and_batch
from ..engine import Target, batches, cached_cpu_memory, class_scores
from ..engine.probe import Probe
from ..ops import perturbation as ops
from ._fills import make_fill


def random_masks(n_masks: int, grid: tuple[int, int], p: float, height: int, width: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(grids (N, gh, gw) fp32 in {0, 1}, shifts (N, 2) int32 in [0, cell)) on the CPU."""
    cells = (torch.rand(n_masks, *grid, generator=generator) < p).float()
    cell_h, cell_w = -(-height // grid[0]), -(-width // grid[1])
    shifts = torch.stack([torch.randint(0, cell_h, (n_masks,), generator=generator),
                          torch.randint(0, cell_w, (n_masks,), generator=generator)], dim=1).to(torch.int32)
    return cells, shifts


def _grid(grid) -> tuple[int, int]:
    g = (grid, grid) if isinstance(grid, int) and not isinstance(grid, bool) else grid
    if not (isinstance(g, tuple) and len(g) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                        for v in g)):
        raise ValueError(f"grid must be an int >= 1 or a pair of them, got {grid!r}")
    return g


def rise(model: torch.nn.Module, x: torch.Tensor, target: Target = None, n_masks: int = 4000,
         grid: int | tuple[int, int] = 7, p: float = 0.5, *, seed: int = 0, generator: torch.Generator | None = None,
         fill: float | str | Sequence[float] | torch.Tensor = 0.0, activation: str | None = "softmax",
         batch_size: int | None = None, progress: bool = True, backend: str | None = None) -> torch.Tensor:
    """RISE saliency (Petsiuk et al. 2018): the score-weighted mean of random upsampled masks.

    Args:
        model: the CNN.
        x: inputs (B, C, H, W), float32 or float64.
        target: a featvis_fast.Target at the output: None (predicted class), a class index, a
            LongTensor (B,) or a callable on the output (then activation is not applied).
        n_masks: the number of random masks.
        grid: the masks' coarse grid, an int or (h, w) (the paper's 7).
        p: the probability that a grid cell is kept.
        seed: RNG seed of the masks (used when generator is None).
        generator: a torch.Generator for the masks (overrides seed).
        fill: what masked-out pixels become (0, the paper's, or any occlusion fill).
        activation: "softmax" (the paper's probabilities) or None (raw scores).
        batch_size: masked images per forward (None: the largest batch that fits in memory).
        progress: a tqdm bar.
        backend: kernel backend (None: the fastest for x's device).

    Returns:
        the saliency maps (B, H, W) on x's device, float64 for a float64 model and input (masks,
        scores and sums in float64), else float32.
    """
    check_model_and_batch(model, x)
    if x.dim() != 4:
        raise ValueError(f"rise needs images (B, C, H, W), got shape {tuple(x.shape)}")
    if isinstance(n_masks, bool) or not isinstance(n_masks, int) or n_masks < 1:
        raise ValueError(f"n_masks must be an int >= 1, got {n_masks!r}")
    if not (isinstance(p, Real) and 0 < p <= 1):
        raise ValueError(f"p must be in (0, 1], got {p!r}")
    if activation not in ("softmax", None):
        raise ValueError(f"activation must be 'softmax' or None, got {activation!r}")
    g = _grid(grid)
    chosen = _backend.resolve_backend(backend, x.device)
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    batch, _, height, width = x.shape
    if g[0] > height or g[1] > width:
        raise ValueError(f"grid {g} is finer than the image ({height}, {width})")
    cells, shifts = random_masks(n_masks, g, float(p), height, width, gen)
    # float64 images get float64 masks (the bilinear upsampling in their precision)
    cells, shifts = cells.to(x.device, class_scores.score_dtype(x)), shifts.to(x.device)
    softmax = activation == "softmax" and not callable(target)
    with cached_cpu_memory(x.device):
        x, item_bytes = batches.laid_out_batch(model, x)
        probe = Probe(model)
        classes, _ = class_scores.resolve(probe(x), target)
        x_fill = make_fill(x, fill, generator=gen)
        saliency = torch.zeros(batch, height * width, dtype=class_scores.score_dtype(x), device=x.device)
        size = batches.pick_batch_size(batch_size, n_masks * batch, x.device, item_bytes)

        def work(start, stop):  # items are mask-major: item i * B + b is mask i on image b
            m0, m1 = start // batch, stop // batch
            masks = ops.rise_masks(cells[m0:m1], shifts[m0:m1], height, width, chosen)
            src = torch.arange(batch, dtype=torch.int32, device=x.device).repeat(m1 - m0)
            out = probe(ops.apply_masks(x, x_fill, masks.repeat_interleave(batch, dim=0), src, chosen))
            weights = class_scores.scores(out, target, classes, src, softmax=softmax).reshape(m1 - m0, batch)
            saliency.add_(weights.T.to(saliency.dtype) @ masks.reshape(m1 - m0, -1).to(saliency.dtype))

        batches.run_batches(n_masks * batch, size, work, progress=progress, desc="RISE", device=x.device,
                            step=batch)
    return (saliency / (n_masks * float(p))).reshape(batch, height, width)
