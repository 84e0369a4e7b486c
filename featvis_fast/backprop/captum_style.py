"""Class wrappers with `.attribute(...)` for users coming from Captum: same names, same argument
names and output shapes as Captum's, computed by featvis_fast.backprop.methods (so they also
apply the rules to functional, in-place, ReLU6 / Hardtanh / LeakyReLU rectifiers)."""
from __future__ import annotations

import torch

from ..engine import Target
from . import lrp as _lrp
from . import methods


class _Attribution:
    def __init__(self, model: torch.nn.Module, backend: str | None = None) -> None:
        self.model, self.backend = model, backend


class Saliency(_Attribution):
    """captum.attr.Saliency: |gradient| by default (abs=True, as Captum)."""

    def attribute(self, inputs: torch.Tensor, target: Target = None, abs: bool = True) -> torch.Tensor:
        return methods.saliency(self.model, inputs, target, abs=abs, backend=self.backend)


class Deconvolution(_Attribution):
    """captum.attr.Deconvolution."""

    def attribute(self, inputs: torch.Tensor, target: Target = None) -> torch.Tensor:
        return methods.deconvnet(self.model, inputs, target, backend=self.backend)


class GuidedBackprop(_Attribution):
    """captum.attr.GuidedBackprop."""

    def attribute(self, inputs: torch.Tensor, target: Target = None) -> torch.Tensor:
        return methods.guided_backprop(self.model, inputs, target, backend=self.backend)


class LayerGradCam(_Attribution):
    """captum.attr.LayerGradCam: (B, 1, h, w), signed unless relu_attributions=True (as Captum)."""

    def __init__(self, model: torch.nn.Module, layer: str | torch.nn.Module, backend: str | None = None) -> None:
        super().__init__(model, backend)
        self.layer = layer

    def attribute(self, inputs: torch.Tensor, target: Target = None, relu_attributions: bool = False) -> torch.Tensor:
        cam = methods.gradcam(self.model, inputs, target, self.layer, relu=relu_attributions, backend=self.backend)
        return cam[:, None]


class GuidedGradCam(LayerGradCam):
    """captum.attr.GuidedGradCam: guided backprop x nearest-upsampled Grad-CAM, shaped like inputs."""

    def attribute(self, inputs: torch.Tensor, target: Target = None,  # type: ignore[override]
                  interpolate_mode: str = "nearest") -> torch.Tensor:
        return methods.guided_gradcam(self.model, inputs, target, self.layer, interpolate=interpolate_mode,
                                      backend=self.backend)


class LRPEpsilon(_Attribution):
    """LRP-epsilon everywhere (FeatureVis' rule); Captum's LRP picks rules per layer type instead."""

    def __init__(self, model: torch.nn.Module, eps: float = 1e-3, backend: str | None = None) -> None:
        super().__init__(model, backend)
        self.eps = eps

    def attribute(self, inputs: torch.Tensor, target: Target = None) -> torch.Tensor:
        return _lrp.lrp(self.model, inputs, target, eps=self.eps, backend=self.backend)
