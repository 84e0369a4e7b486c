"""What bench/metrics.py times: one MetricCase per (metric, reference), written per family.

Each family module (bench/_metrics_<family>.py) has `cases() -> list[MetricCase]`. A case's
callables take one `Inputs` (a model, its images, attributions and targets on the bench device)
and return per-image scores: ours a tensor (B,), each reference a NumPy array (B,) computed on
the same inputs with the same settings (the bench prints the largest difference beside the time).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Inputs:
    """model (eval), x (B, C, H, W), attributions (B, 1, H, W) (saliency of the target), target (B,) long,
    the same as NumPy arrays (x_np, a_np, y_np) for the references, and `explain`: a NumPy
    explanation function (model, inputs, targets, **kwargs) -> (B, 1, H, W) array (saliency by
    fv.saliency, channel sum of the absolute gradient) that robustness / randomisation references
    call, while ours call metrics.explainer("saliency") with the same definition."""
    model: torch.nn.Module
    x: torch.Tensor
    attributions: torch.Tensor
    target: torch.Tensor
    x_np: np.ndarray
    a_np: np.ndarray
    y_np: np.ndarray
    explain: Callable[..., np.ndarray]
    device: str


@dataclass
class MetricCase:
    """One metric: ours and the references it is compared with ('quantus', 'captum', 'grad-cam')."""
    name: str
    ours: Callable[[Inputs], torch.Tensor]
    references: dict[str, Callable[[Inputs], np.ndarray]] = field(default_factory=dict)
    note: str = ""


def quantus():
    """quantus, imported after torchvision's schemas (tests/_zoo: Quantus imports torchvision via Zennit)."""
    tests = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import _zoo

    _zoo.torchvision_models()
    import quantus as module

    return module


def saliency_map(model: torch.nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """(B, 1, H, W): the channel sum of |gradient|, Inputs.explain's definition in torch (what ours
    explain perturbed copies and randomised models with)."""
    import featvis_fast as fv

    return fv.saliency(model, x, target, abs=True).sum(dim=1, keepdim=True)
