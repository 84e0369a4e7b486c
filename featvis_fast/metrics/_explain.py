"""The explanation function robustness and randomisation metrics call again on changed inputs or models.

`explainer(method, **kwargs)` accepts a callable explain(model, x, target) -> attributions, or the
name of a method of this package ("saliency", "gradcam", ...; its keyword arguments, e.g. the
CAMs' layer, in kwargs). Attributions come back as (B, Ca, H, W) (CAMs upsampled to x).
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from .. import backprop, perturbation
from ._inputs import attribution_maps

# methods that take (model, x, target, **kwargs); the CAMs also need layer= and are upsampled to x
GRADIENT_METHODS = ("saliency", "input_x_gradient", "guided_backprop", "deconvnet", "integrated_gradients",
                    "gradient_shap", "lrp", "excitation_backprop", "occlusion", "rise", "extremal_perturbation")
CAM_METHODS = ("gradcam", "gradcam_pp", "xgradcam", "layercam", "hirescam", "eigencam", "eigengradcam",
               "scorecam", "ablationcam", "fullgrad", "guided_gradcam")
METHODS = GRADIENT_METHODS + CAM_METHODS
# the methods that need layer= (fullgrad's is optional); all but guided Grad-CAM return layer-sized maps
LAYER_METHODS = tuple(m for m in CAM_METHODS if m != "fullgrad")

Explain = Callable[[torch.nn.Module, torch.Tensor, object], torch.Tensor]


def default_cam_layer(model: torch.nn.Module) -> str:
    """The name of the model's last Conv2d module: the CAMs' usual layer (the last feature maps).

    Args:
        model: the CNN.

    Returns:
        the module name, e.g. "_conv_head" for the bundled EfficientNet-Lite0, "layer4.1.conv2" for a ResNet-18.
    """
    names = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Conv2d)]
    if not names:
        raise ValueError("the model has no Conv2d layer; give the CAMs a layer (--layer)")
    return names[-1]


def _method(name: str, kwargs: dict) -> Explain:
    fn = getattr(perturbation if hasattr(perturbation, name) else backprop, name)
    if name in LAYER_METHODS and "layer" not in kwargs:
        raise ValueError(f"the explanation method {name!r} needs layer= (a module name of the model)")
    if name in LAYER_METHODS and name != "guided_gradcam":
        kwargs = {"upsample": "bilinear", **kwargs}
    if name in ("occlusion", "rise", "scorecam", "ablationcam", "extremal_perturbation"):
        kwargs = {"progress": False, **kwargs}
    return functools.partial(fn, **kwargs)


def explain_item_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Estimated bytes one image costs in an explanation batch: three times the sum of all leaf
    modules' outputs of a one-image pass (what a backward keeps, its gradients, and workspace)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    return 3 * max(total, x[:1].numel() * x.element_size())


def explainer(method: str | Explain, **kwargs) -> Explain:
    """explain(model, x, target) -> (B, Ca, H, W) attributions, without gradients kept.

    Args:
        method: a callable (model, x, target) -> attributions, or one of METHODS.
        **kwargs: keyword arguments of the named method (ignored with a callable: bind them yourself).

    Returns:
        the explanation function.
    """
    if isinstance(method, str):
        if method not in METHODS:
            raise ValueError(f"unknown explanation method {method!r}; choose one of {', '.join(METHODS)} "
                             "or pass a callable (model, x, target) -> attributions")
        fn = _method(method, dict(kwargs))
    elif callable(method):
        if kwargs:
            raise TypeError("keyword arguments are for named methods; bind them into your callable")
        fn = method
    else:
        raise TypeError(f"explain must be a method name or a callable (model, x, target), got {type(method).__name__}")

    def explain(model: torch.nn.Module, x: torch.Tensor, target) -> torch.Tensor:
        out = fn(model, x, target)
        if isinstance(out, tuple):  # methods that may also return a delta
            out = out[0]
        return attribution_maps(out, x, name="the explanation")

    return explain
