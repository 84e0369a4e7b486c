"""The plain eager loop of activation maximization, as Lucid / Lucent write it: the test oracle of
`maximize` and the baseline of bench/reconstruction.py. Per step: parameters -> (crop) -> image ->
transforms -> normalize -> the whole model with forward hooks on the objective's layers (or, with
full_forward=False, a forward that stops after them) -> -objective + regularizers -> autograd
backward into the parameters -> torch.optim.Adam / SGD. Random draws come from the same
torch.Generator, in the same order, as in `maximize`, so both give the same images up to rounding.
"""
from __future__ import annotations

import torch

from .._ascent_reference import crop, regularizer_values
from ..models import IMAGENET_MEAN, IMAGENET_STD
from ._filters import gaussian_blur
from ._gradient import capture
from ._run import check_model, check_steps
from .maximize import PARAMS, regularizers_from, resolve
from .transforms import preset


def maximize_eager(model: torch.nn.Module, objective, steps: int = 512, *, batch: int | None = None, size=224,
                   param: str = "fft", transforms="standard", seed: int = 0, lr: float = 0.05,
                   optimizer: str = "adam", momentum: float = 0.9, regularizers=None, jitter: int = 0,
                   blur_every: int = 0, blur_sigma: float = 0.5, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                   full_forward: bool = True) -> torch.Tensor:
    """Same arguments and result as maximize (no gradient normalization)."""
    check_steps(steps)
    device = check_model(model)
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    regs = regularizers_from(regularizers)
    was_training = model.training
    model.eval()
    try:
        goal = resolve(model, objective, (h, w), device)
        n = goal.images or batch or 1
        gen = torch.Generator().manual_seed(seed)
        image = PARAMS[param](n, h, w, generator=gen, device=device)
        chain = preset(transforms)
        m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        s = torch.tensor(std, device=device).view(1, 3, 1, 1)
        flat = image.flat().clone().requires_grad_(True)
        opt = (torch.optim.Adam([flat], lr=lr) if optimizer == "adam"
               else torch.optim.SGD([flat], lr=lr, momentum=momentum, nesterov=optimizer == "nesterov"))

        def draw():
            if jitter == 0:
                return torch.zeros(n, 2, dtype=torch.int32)
            return torch.randint(0, jitter + 1, (n, 2), generator=gen).to(torch.int32)

        offsets = draw()
        for step in range(1, steps + 1):
            opt.zero_grad(set_to_none=True)
            seen = crop(flat, offsets, h - jitter, flat.shape[-1] - jitter) if jitter else flat
            x = (chain(image.image_of(seen), gen) - m) / s
            acts, out = capture(model, x, goal, stop=not full_forward)
            loss = -goal(acts, out).sum() + regularizer_values(flat, regs).sum()
            (flat.grad,) = torch.autograd.grad(loss, [flat])
            offsets = draw()
            opt.step()
            if blur_every and step % blur_every == 0:
                with torch.no_grad():
                    flat.copy_(gaussian_blur(flat, blur_sigma))
    finally:
        model.train(was_training)
    with torch.no_grad():
        return image.image_of(flat.detach())
