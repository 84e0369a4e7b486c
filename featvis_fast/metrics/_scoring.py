"""Running the model on batches of perturbed copies and reading one score per copy.

`Scorer` lays x out once (channels-last where that is faster), resolves the target on the clean
pass, and scores copies that a callback writes batch by batch (sized to memory as occlusion's,
progress bar, out-of-memory halving on CUDA). Every pass runs without gradients under the
engine's forward rewrites.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .._validate import check_choice, check_model_and_batch
from ..engine import Target, batches, cached_cpu_memory, class_scores
from ..engine.probe import Probe

ACTIVATIONS = ("softmax", None)


class Scorer:
    """Scores of one output per image (the target) on the clean images and on perturbed copies.

    Args:
        model: the CNN (eval mode).
        x: images (B, C, H, W).
        target: an int class, a LongTensor (B,) or a callable on the output (featvis_fast.Target
            without units); None is the predicted class.
        activation: "softmax" (probabilities) or None (raw outputs).
        batch_size: copies per forward (None: the largest batch that fits, as occlusion's).
    """

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, target: Target, *, activation: str | None = None,
                 batch_size: int | None = None) -> None:
        check_model_and_batch(model, x)
        if x.dim() != 4:
            raise ValueError(f"the metrics need images (B, C, H, W), got shape {tuple(x.shape)}")
        if activation not in ACTIVATIONS:
            check_choice("activation", activation, ("softmax", "None"))
        self.model, self.target = model, target
        self.softmax = activation == "softmax" and not callable(target)
        self.dtype = class_scores.score_dtype(x)
        with cached_cpu_memory(x.device):
            self.x, self.item_bytes = batches.laid_out_batch(model, x)
            self.probe = Probe(model)
            out = self.probe(self.x)
            self.classes, _ = class_scores.resolve(out, target)
            self.clean = self.read(out, torch.arange(x.shape[0], device=x.device))
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return self.x.device

    def read(self, out, image_of: torch.Tensor) -> torch.Tensor:
        """(N,) scores of a model output for copies of images image_of (N,)."""
        return class_scores.scores(out, self.target, self.classes, image_of, softmax=self.softmax)

    def score(self, total: int, copies: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]], *,
              progress: bool = False, desc: str = "metric", step: int = 1) -> torch.Tensor:
        """Scores of `total` perturbed copies.

        Args:
            total: how many copies.
            copies: copies(start, stop) -> (batch (stop - start, C, H, W), image_of (stop - start,)):
                the perturbed copies start..stop and the image each one comes from.
            progress: a tqdm bar.
            desc: the bar's label.
            step: batches are whole multiples of it (total is one too).

        Returns:
            (total,) scores in float64 for a float64 model and input, else float32.
        """
        scores = torch.empty(total, dtype=self.dtype, device=self.device)
        size = batches.pick_batch_size(self.batch_size, total, self.device, self.item_bytes)
        if step == 1:
            size = batches.balanced_batch_size(size, total)

        def work(start, stop):
            batch, image_of = copies(start, stop)
            scores[start:stop] = self.read(self.probe(batch), image_of)

        with cached_cpu_memory(self.device):
            batches.run_batches(total, size, work, progress=progress, desc=desc, device=self.device, step=step)
        return scores

