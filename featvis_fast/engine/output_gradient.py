"""d(scores)/d(input) for a batch, the fast way, for families that optimize inputs through a model
(extremal perturbations): the backprop family's lean rectifier-rule mode (bit-packed rectifier
masks, input-gradient-only convolutions, linear layers and max pools), batch norms folded into
their convolutions' backward, the forward rewrites learnt for the model, CPU tensors from the
caching allocator.

    scores, grad = output_gradient(model, x, score, backend)

score(output) -> (N,) per-row scores; grad = d(sum scores)/dx in x's layout (the caller lays x out:
see engine.layout; a model that cannot take channels-last raises a layout error, is_layout_error).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .. import _rectifier_reference as ref
from . import rewrites as _rewrites
from .cpu_cache import cached_cpu_memory
from .lean import fold_batch_norms
from .rule_mode import RectifierRuleMode


def output_gradient(model: torch.nn.Module, x: torch.Tensor, score: Callable[[torch.Tensor], torch.Tensor],
                    backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and their input gradient.

    Args:
        model: the network (eval mode for the rewrites to apply).
        x: (N, ...) inputs; not modified.
        score: output -> (N,) scores (differentiable).
        backend: the rectifier kernels' backend (featvis_fast._backend.resolve_backend).

    Returns:
        (scores (N,) detached, d(sum scores)/dx shaped and laid out like x).
    """
    def run(rewrites):
        leaf = x.detach().requires_grad_(True)
        mode = RectifierRuleMode(ref.BACKPROP, backend, nonlinear="ignore", rewrites=rewrites)
        with torch.enable_grad():
            with mode:
                output = model(leaf)
            if rewrites is not None:
                rewrites.check_no_escapes()
            scores = score(output)
            if not scores.requires_grad:
                raise ValueError("the score does not depend on the input")
            fold_batch_norms(scores)
            (grad,) = torch.autograd.grad(scores.sum(), leaf)
        if rewrites is not None:
            rewrites.learn()
        return scores.detach(), grad

    with cached_cpu_memory(x.device):
        return _rewrites.run(model, run)
