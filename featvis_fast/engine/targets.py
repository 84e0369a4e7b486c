"""What an attribution explains (the target) and how the backward pass is seeded.

target:
  None              the predicted class (argmax of the output, per sample; FeatureVis' default)
  int               one class index for the whole batch
  LongTensor (B,)   one class index per sample
  callable          f(output) -> (B,) scores (anything (B, ...) is summed per sample); the output
                    may be any structure (a tuple, a dict) the model returns
  Unit / tuple      an intermediate unit: ("layer name", channel) or ("layer name", channel, (i, j));
                    the forward pass stops right after that layer
grad_seed (what the backward pass starts from; not an RNG seed, which `seed=` is elsewhere):
  "onehot"          gradient of the selected activations' sum (Captum's convention)
  "activation"      the backward starts from the selected activations themselves (FeatureVis:
                    dzdy = the measured map), i.e. the gradient of half their squared sum
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

GRAD_SEEDS = ("onehot", "activation")


@dataclass(frozen=True)
class Unit:
    """An attribution target inside the model: one channel of a layer's output.

    Not a job's work unit (featvis_fast.jobs.WorkUnit), nor a dissected channel (which
    NetDissect also calls a unit). A tuple ("layer", channel[, (i, j)]) means the same.

    Args:
        layer: the module name (see featvis_fast.layer_names).
        channel: the channel index in the layer's (B, C, ...) output.
        position: None (the channel's whole map, summed) or (i, j) (one position in it).
        call: which call of a module that runs several times (0: the first).
    """

    layer: str
    channel: int
    position: tuple[int, ...] | None = None
    call: int = 0


Target = int | torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | Unit | tuple | None
"""What a method explains (the `target` argument of every attribution and perturbation method):
None (the predicted class per sample), an int class, a LongTensor (B,) of classes, a callable
output -> (B,) scores, or a Unit / ("layer", channel[, (i, j)]) inside the model."""


def as_unit(target: Target) -> Unit | None:
    """The Unit a target names, or None for output-level targets."""
    if isinstance(target, Unit):
        return target
    if isinstance(target, tuple) and target and isinstance(target[0], str):
        if len(target) not in (2, 3):
            raise ValueError(f"a unit target is (layer, channel) or (layer, channel, position), got {target!r}")
        return Unit(target[0], *target[1:])
    return None


def select_unit(activation: torch.Tensor, unit: Unit) -> torch.Tensor:
    """(B, C, ...) activation -> the unit's (B, ...) map or (B,) value."""
    if activation.dim() < 2:
        raise ValueError(f"layer {unit.layer!r} output has shape {tuple(activation.shape)}; a unit needs (B, C, ...)")
    channels = activation.shape[1]
    if not isinstance(unit.channel, int) or not 0 <= unit.channel < channels:
        raise ValueError(f"channel {unit.channel!r} is out of range for layer {unit.layer!r} with {channels} channels")
    selected = activation[:, unit.channel]
    if unit.position is None:
        return selected
    pos = tuple(unit.position)
    spatial = tuple(selected.shape[1:])
    if len(pos) != len(spatial) or any(not isinstance(p, int) or not 0 <= p < s for p, s in zip(pos, spatial)):
        raise ValueError(f"position {unit.position!r} is out of range for layer {unit.layer!r} maps of size {spatial}")
    return selected[(slice(None), *pos)]


def select_output(output: torch.Tensor, target: Target) -> torch.Tensor:
    """Model output (B, K) -> the (B,) (or (B, ...) for callables) activations the target names."""
    if callable(target) and not isinstance(target, torch.Tensor):
        scores = target(output)
        batch = output.shape[0] if isinstance(output, torch.Tensor) else None
        if not isinstance(scores, torch.Tensor) or scores.dim() == 0 or batch not in (None, scores.shape[0]):
            shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise ValueError(f"a callable target must return (B,) = ({batch if batch else 'B'},) scores, got {shape}")
        return scores
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"the model returned {type(output).__name__}; a class target needs a tensor output "
                        "(use a callable target to pick from other outputs)")
    batch = output.shape[0]
    flat = output.reshape(batch, -1)
    classes = flat.shape[1]
    if target is None:
        index = flat.detach().argmax(dim=1)
    elif isinstance(target, bool) or not isinstance(target, (int, torch.Tensor)):
        raise TypeError(f"target must be None, an int, a LongTensor (B,), a callable or a unit, got {target!r}")
    elif isinstance(target, int):
        if not 0 <= target < classes:
            raise ValueError(f"target {target} is out of range for an output with {classes} classes")
        return flat[:, target]
    else:
        if target.dtype not in (torch.int64, torch.int32) or target.dim() > 1:
            raise ValueError("a tensor target must be a LongTensor of shape (B,), "
                             f"got {target.dtype} {tuple(target.shape)}")
        index = target.reshape(-1).to(flat.device)
        if index.numel() == 1:
            index = index.expand(batch)
        if index.numel() != batch:
            raise ValueError(f"target has {index.numel()} entries for a batch of {batch}")
        bad = (index < 0) | (index >= classes)
        if bool(bad.any()):
            raise ValueError(f"target {index[bad][0].item()} is out of range for an output with {classes} classes")
    return flat.gather(1, index.long()[:, None])[:, 0]


def check_grad_seed(grad_seed: str) -> str:
    """grad_seed if it is one of GRAD_SEEDS, else ValueError (checked before any pass runs)."""
    if grad_seed not in GRAD_SEEDS:
        raise ValueError(f"grad_seed must be one of {GRAD_SEEDS}, got {grad_seed!r}")
    return grad_seed


def backward_seed(selected: torch.Tensor, grad_seed: str, *, in_graph: bool = False) -> torch.Tensor:
    """The tensor the backward pass starts from (autograd's grad_outputs).

    Args:
        selected: the activations the target selects, (B,) or (B, ...).
        grad_seed: "onehot" (ones: the gradient of their sum) or "activation" (the activations).
        in_graph: the "activation" seed stays in the autograd graph (a create_graph backward then
            differentiates J(x)^T A(x) as a whole, not with A held constant).

    Returns:
        a tensor shaped like selected.
    """
    if check_grad_seed(grad_seed) == "onehot":
        return torch.ones_like(selected)
    return selected if in_graph else selected.detach().clone()
