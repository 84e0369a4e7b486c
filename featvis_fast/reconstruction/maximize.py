"""Activation maximization (Erhan et al. 2009; Olah et al. 2017), first version: Lucid's loop
(parameterized image -> transforms -> normalize -> model up to the objective's layers ->
objective -> Adam on the parameters). The fused step (featvis::ascent_step), CUDA graphs and the
job runner come next (issue 6); this version runs the eager loop on any device.

maximize(model, objective, steps, ...) -> (N, 3, H, W) images in [0, 1]; N is set by the
objective ("layer:*": one image per channel) or by `batch` (default 1).
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..models import IMAGENET_MEAN, IMAGENET_STD, extract, find_module
from . import objectives as obj
from .param import FFTParam, PixelParam
from .transforms import preset

def _capture(model, x, layers, need_output):
    """({layer: activation}, output or None) with gradients; the forward stops after the last
    layer when the output is not needed."""
    if not need_output:
        acts = extract(model, x, sorted(layers), grad=True)
        return (acts if isinstance(acts, dict) else {next(iter(layers)): acts}), None
    acts, handles = {}, []
    for name in layers:
        handles.append(find_module(model, name).register_forward_hook(
            lambda m, i, o, name=name: acts.setdefault(name, o)))
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    return acts, out


def resolve(model: torch.nn.Module, objective, size: tuple[int, int], device) -> obj.Objective:
    """The objective (parsed from a string with the model's channel counts) checked against the model."""
    names = obj.layer_names(objective)
    for n in names:
        find_module(model, n)
    probe = torch.zeros(1, 3, *size, device=device)
    with torch.no_grad():
        shapes = {n: tuple(a.shape[1:]) for n, a in
                  (extract(model, probe, names) if len(names) > 1 else
                   ({names[0]: extract(model, probe, names[0])} if names else {})).items()}
        parsed = obj.parse(objective, channels={n: s[0] for n, s in shapes.items()})
        extra = [n for n in parsed.layers if n not in shapes]
        if extra:
            acts = extract(model, probe, extra)
            acts = acts if isinstance(acts, dict) else {extra[0]: acts}
            shapes.update({n: tuple(a.shape[1:]) for n, a in acts.items()})
        classes = model(probe).reshape(1, -1).shape[1] if parsed.needs_output else None
    parsed.validate(shapes, classes)
    return parsed


def maximize(model: torch.nn.Module, objective, steps: int = 512, *, batch: int | None = None, size=224,
             param: str = "fft", transforms="standard", seed: int = 0, lr: float = 0.05,
             mean=IMAGENET_MEAN, std=IMAGENET_STD, progress: bool = True) -> torch.Tensor:
    """Images that maximize `objective` (an Objective or a string: "layer:37", "layer:*",
    "class:285", "a:1 - 0.5*b"; see objectives) -> (N, 3, H, W) in [0, 1] on the model's device.
    param: "fft" (decorrelated, Lucid's default) or "pixel"; transforms: "standard", "none" or a
    list; mean / std: the model's input normalization (ImageNet's by default)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if param not in ("fft", "pixel"):
        raise ValueError(f"param must be 'fft' or 'pixel', got {param!r}")
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # batch norm must use, and never update, its running statistics
    try:
        goal = resolve(model, objective, (h, w), device)
        n = goal.images or batch or 1
        if goal.images is not None and batch is not None and batch != goal.images:
            raise ValueError(f"the objective sets the batch to {goal.images} images; batch={batch} disagrees")
        gen = torch.Generator().manual_seed(seed)
        image = (FFTParam if param == "fft" else PixelParam)(n, h, w, generator=gen, device=device)
        chain = preset(transforms)
        m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        s = torch.tensor(std, device=device).view(1, 3, 1, 1)
        optimizer = torch.optim.Adam([image.tensor], lr=lr)
        for _ in tqdm(range(steps), desc="maximize", disable=not progress, leave=False):
            optimizer.zero_grad(set_to_none=True)
            x = (chain(image.image(), gen) - m) / s
            acts, out = _capture(model, x, goal.layers, goal.needs_output)
            # only the image's gradient: nothing is computed for, or left on, the model's parameters
            (image.tensor.grad,) = torch.autograd.grad(-goal(acts, out).sum(), [image.tensor])
            optimizer.step()
    finally:
        model.train(was_training)
    with torch.no_grad():
        return image.image().detach()
