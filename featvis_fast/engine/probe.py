"""Running the model on batches of perturbed inputs, and reading what a method measures.

Every pass runs without gradients under the forward rewrites (featvis_fast.engine.inference).
A `Probe` runs the model on a batch and returns either its output or one layer's activation
(the forward then stops at that layer). For feature-map occlusion the perturbed batch enters
at a layer: the model runs on one image up to that layer (its result is discarded) and the
layer's output is replaced by the batch, so the part of the forward before the occluded layer,
the same for every window, is not recomputed per window.
"""
from __future__ import annotations

import torch

from .capture import StopForward, find_module
from .inference import rewritten_forward


class _Replace:
    """Forward hook that replaces a module's output (once per pass)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def __call__(self, module, inputs, output):
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"the occluded layer returns {type(output).__name__}, not a tensor")
        if output.shape[1:] != self.tensor.shape[1:]:
            raise ValueError(f"the occluded layer's output changed shape: {tuple(output.shape)}")
        return self.tensor


class _Capture:
    def __init__(self) -> None:
        self.output = None

    def __call__(self, module, inputs, output):
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"the measured layer returns {type(output).__name__}, not a tensor")
        self.output = output
        raise StopForward


class Probe:
    """model(batch) -> output, or the activation of `measure_layer`. inject_layer: the batch
    replaces that layer's output (feature-map occlusion); `stem` is then the input the model
    runs on up to it (one image)."""

    def __init__(self, model: torch.nn.Module, measure_layer: str | None = None, inject_layer: str | None = None,
                 stem: torch.Tensor | None = None) -> None:
        self.model = model
        self.measure = find_module(model, measure_layer) if measure_layer is not None else None
        self.inject = find_module(model, inject_layer) if inject_layer is not None else None
        self.stem = stem

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return rewritten_forward(self.model, lambda: self._pass(batch), learn=self.measure is None)

    def _pass(self, batch: torch.Tensor) -> torch.Tensor:
        handles = []
        capture = _Capture()
        try:
            if self.inject is not None:
                handles.append(self.inject.register_forward_hook(_Replace(batch)))
            if self.measure is not None:
                handles.append(self.measure.register_forward_hook(capture))
            try:
                out = self.model(self.stem if self.inject is not None else batch)
            except StopForward:
                return capture.output
            if self.measure is not None:
                raise ValueError("the measured layer did not run in the forward pass")
            return out
        finally:
            for h in handles:
                h.remove()
