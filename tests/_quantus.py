"""Quantus 0.6 (the reference of featvis_fast.metrics) and the small cases its parity tests share.

Quantus imports Zennit, which imports torchvision: _zoo's schema trick must run first. Quantus
takes NumPy arrays, channel-first; `quantus_arrays` converts a case. `resnet18_case` is
torchvision's ResNet-18 with random weights and realistic batch norms on 64 px images (small
enough for Quantus' per-sample loops); `default_case` the bundled EfficientNet-Lite0 on the
bundled photos.
"""
from __future__ import annotations

import contextlib

import _zoo
import numpy as np
import pytest
import torch


def quantus():
    """The quantus module (skips the test without it; .ci/run installs it)."""
    if not _zoo.has_torchvision():
        pytest.skip("Quantus imports torchvision (see design.md)")
    _zoo.torchvision_models()
    return pytest.importorskip("quantus")


def resnet18_case(batch: int = 3, side: int = 64, dtype=torch.float64, seed: int = 0):
    """(model, x (B, 3, side, side), target (B,)) on torchvision ResNet-18 with random weights."""
    torch.manual_seed(seed)  # torchvision initializes the weights from the global generator
    model = _zoo.realistic(_zoo.torchvision_models().resnet18(), side, seed=seed).to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    # float32-representable values: Quantus feeds the model torch.Tensor(x), i.e. float32
    x = torch.randn(batch, 3, side, side, generator=g, dtype=torch.float32).to(dtype)
    with torch.no_grad():
        target = model(x).argmax(1)
    return model, x, target


class _AsModelDtype(torch.nn.Module):
    """Casts the input to the model's dtype: Quantus converts its NumPy input with torch.Tensor (float32)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(next(self.model.parameters()).dtype))


def quantus_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model as Quantus should see it: float64 models get their input cast back to float64 (exact
    for the float32-representable inputs of these cases)."""
    return _AsModelDtype(model).eval()


def default_case(batch: int = 2, side: int = 224, dtype=torch.float32):
    """(model, x, target) on the bundled EfficientNet-Lite0 and photos (target: the predicted class)."""
    import featvis_fast as fv

    model, prep = fv.load_model()
    x = torch.cat([prep(fv.load_image(name), size=side) for name in fv.sample_images()[:batch]]).to(dtype)
    model = model.to(dtype).eval()
    with torch.no_grad():
        target = model(x).argmax(1)
    return model, x, target


def distinct_attributions(shape, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Random attributions without ties (NumPy's default argsort is not stable: ties order differently)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def arrays(*tensors) -> list[np.ndarray]:
    return [t.detach().cpu().numpy() for t in tensors]


def assert_relative(ours, theirs, rel: float = 1e-9) -> None:
    """ours equals theirs to `rel` times the largest |theirs| (same shape; tensors or arrays)."""
    ours = np.asarray(ours.detach().cpu() if isinstance(ours, torch.Tensor) else ours, dtype=np.float64)
    theirs = np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    scale = max(np.abs(theirs).max(), 1e-300)
    assert np.abs(ours - theirs).max() <= rel * scale, np.abs(ours - theirs).max() / scale


@contextlib.contextmanager
def float64_default():
    """Quantus feeds the model torch.Tensor(x): float64 only under a float64 default dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
