"""Which output a perturbation method scores: per-image classes resolved once from the clean pass."""
from __future__ import annotations

import torch

from .targets import select_output


def score_dtype(t: torch.Tensor) -> torch.dtype:
    """The precision scores and maps are kept in: float64 for a float64 model, else float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def resolve(ref_out, target) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(classes (B,) long, or None for a callable target; the clean scores (B,) in score_dtype).
    Targets as in featvis_fast.backprop: None (predicted class), int, LongTensor (B,), callable."""
    ref_scores = select_output(ref_out, target).to(score_dtype(ref_out))  # validates the target, with clear errors
    if callable(target) and not isinstance(target, torch.Tensor):
        return None, ref_scores
    batch = ref_out.shape[0]
    flat = ref_out.reshape(batch, -1)
    if target is None:
        return flat.argmax(dim=1), ref_scores
    if isinstance(target, int):
        return torch.full((batch,), target, dtype=torch.long, device=flat.device), ref_scores
    return target.reshape(-1).to(flat.device).long().expand(batch).contiguous(), ref_scores


def scores(out, target, classes: torch.Tensor | None, image_of: torch.Tensor, softmax: bool = False) -> torch.Tensor:
    """(N,) scores (score_dtype) of a batch of N perturbed copies; image_of (N,) is each copy's image."""
    if classes is None:
        return select_output(out, target).to(score_dtype(out))
    flat = out.reshape(out.shape[0], -1).to(score_dtype(out))
    if softmax:
        flat = torch.softmax(flat, dim=1)
    return flat.gather(1, classes[image_of.long()][:, None])[:, 0]
