"""The model part of a reconstruction step replayed from a CUDA graph (torch.cuda.graphs): for a
fixed-shape model input x, the forward up to the objective's layers, the objective and the
backward to x are captured once and then replayed, so a step costs no per-kernel launch overhead
on the CPU side. What changes from step to step stays outside the graph: the random transforms
(drawn from the CPU generator) and the autograd pass from x back to the parameters. Only
objectives without per-step state (their Python numbers are baked into the graph) may be
graphed: `maximize` and `invert`, not the class-agnostic schedules.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import torch


class GraphedGradient:
    """model_grad(x leaf) -> (scores (N,), d scores.sum() / dx), captured for inputs like `example`.
    Calling it copies x into the graph's input, replays, and returns copies of the outputs."""

    def __init__(self, model_grad: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                 example: torch.Tensor) -> None:
        if example.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, got {example.device}")
        self.static_x = example.detach().clone().requires_grad_(True)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up on a side stream, as torch.cuda.graph asks
            for _ in range(3):
                model_grad(self.static_x)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_scores, self.static_grad = model_grad(self.static_x)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape != self.static_x.shape:
            raise ValueError(f"the graph was captured for inputs {tuple(self.static_x.shape)}, got {tuple(x.shape)}")
        with torch.no_grad():
            self.static_x.copy_(x)
        self.graph.replay()
        return self.static_scores.clone(), self.static_grad.clone()


def try_graph(model_grad, example: torch.Tensor) -> GraphedGradient | None:
    """A GraphedGradient, or None (with a warning) where capture fails: an op that synchronizes
    with the host, or memory the graph cannot own; the steps then run eagerly."""
    try:
        return GraphedGradient(model_grad, example)
    except RuntimeError as exc:
        warnings.warn(f"CUDA graph capture failed ({exc}); the steps run eagerly", RuntimeWarning, stacklevel=3)
        return None
