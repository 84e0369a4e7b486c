"""Expanded batches for the sampling methods (integrated gradients, SmoothGrad, GradientSHAP).

These methods evaluate an attribution at `samples` points per image. The points are stacked
sample-major: row r = s * B + b holds sample s of image b (as Captum's integrated gradients
stacks its steps), and are run `internal_batch_size` rows at a time.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..engine import Target

CPU_ROWS, CUDA_ROWS = 32, 256  # default rows per pass: past these, batching gains little and costs memory


def check_count(name: str, value: object) -> int:
    """value if it is an int >= 1, else ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def rows_per_pass(internal_batch_size: int | None, batch: int, device: torch.device) -> int:
    """Rows per forward/backward: the given count (checked), else at least the batch and at least
    CPU_ROWS / CUDA_ROWS."""
    if internal_batch_size is not None:
        return check_count("internal_batch_size", internal_batch_size)
    return max(batch, CUDA_ROWS if device.type == "cuda" else CPU_ROWS)


def predicted_classes(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B,) argmax of the model's output at x: what target=None explains at every sample point."""
    with torch.no_grad():
        out = model(x.detach())
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model returned {type(out).__name__}; target=None needs a tensor output "
                        "(use a callable target to pick from other outputs)")
    return out.reshape(out.shape[0], -1).argmax(dim=1)


def resolve_target(model: torch.nn.Module, x: torch.Tensor, target: Target) -> Target:
    """The target with None replaced by the predicted classes of x (so every sample point of an
    image explains the class predicted for the image itself, not for the noisy or scaled point)."""
    return predicted_classes(model, x) if target is None else target


def expand_target(target: Target, batch: int, samples: int) -> Target:
    """The target for the (samples * B) stacked rows: a per-image LongTensor is repeated per
    sample; an int, a callable or a unit applies to every row as it is."""
    if isinstance(target, torch.Tensor):
        flat = target.reshape(-1)
        if flat.numel() not in (1, batch):
            raise ValueError(f"target has {flat.numel()} entries for a batch of {batch}")
        if flat.numel() == batch and batch > 1:
            return flat.repeat(samples)
    return target


def target_rows(target: Target, start: int, stop: int) -> Target:
    """The part of an expanded target that rows start:stop use."""
    if isinstance(target, torch.Tensor) and target.numel() > 1:
        return target[start:stop]
    return target


def run_rows(fn: Callable[[torch.Tensor, Target], torch.Tensor], rows: torch.Tensor, target: Target,
             rows_per_call: int) -> torch.Tensor:
    """fn(chunk, its target) over consecutive chunks of `rows`, concatenated along dim 0."""
    parts = [fn(rows[start:start + rows_per_call], target_rows(target, start, start + rows_per_call))
             for start in range(0, rows.shape[0], rows_per_call)]
    return parts[0] if len(parts) == 1 else torch.cat(parts)
