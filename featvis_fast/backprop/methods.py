"""The deconvolution / backprop family of the FeatureVis taxonomy, batched, on any CNN.

saliency           plain gradient (Simonyan et al. 2014)
deconvnet          DeconvNet rule at rectifiers (Zeiler & Fergus 2014)
guided_backprop    guided rule at rectifiers (Springenberg et al. 2015)
gradcam            Grad-CAM (Selvaraju et al. 2017): ReLU(sum_k mean_ij(dS/dA_k) A_k) at a layer
guided_gradcam     guided backprop x upsampled Grad-CAM (Selvaraju et al. 2017)
lrp                LRP-epsilon (Bach et al. 2015), relevance at the input pixels

Rectifiers are found by RectifierRuleMode whatever their spelling; the model is never modified.
Inputs x: (B, C, H, W) (any (B, ...) for the gradient methods); results on x's device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _backend
from .. import _rectifier_reference as ref
from .._validate import check_model_and_batch
from ..engine import (
    LayerCapture,
    RectifierRuleMode,
    Target,
    as_unit,
    cached_cpu_memory,
    fold_batch_norms,
    run_in_best_layout,
    seed_for,
    select_output,
    select_unit,
)
from ..engine import rewrites as _rewrites


def _forward_selected(model, x, target: Target) -> torch.Tensor:
    """Run the forward pass (inside the mode) and return the activations the target selects."""
    unit = as_unit(target)
    if unit is None:
        return select_output(model(x), target)
    with LayerCapture(model, unit.layer, unit.call, stop=True) as capture:
        model(x)
    return select_unit(capture.result(), unit)



def _in_best_layout(run, x: torch.Tensor):
    """run(x in the layout engine.layout picks; again contiguous if the model cannot take it),
    with CPU tensors from the caching allocator (engine.cpu_cache)."""
    x = x.detach()
    with cached_cpu_memory(x.device):
        return run_in_best_layout(run, x)


def _attribute(model, x, target, rule, *, seed, backend, nonlinear, method, lrp_eps=None) -> torch.Tensor:
    """d(selected)/dx with `rule` at every rectifier; x's gradient, shaped like x (contiguous)."""
    check_model_and_batch(model, x)
    chosen = _backend.resolve_backend(backend, x.device)

    def run(laid_out, rewrites):
        leaf = laid_out.requires_grad_(True)
        mode = RectifierRuleMode(rule, chosen, lrp_eps=lrp_eps, nonlinear=nonlinear, rewrites=rewrites)
        with torch.enable_grad():
            with mode:
                selected = _forward_selected(model, leaf, target)
            if rewrites is not None:
                rewrites.check_no_escapes()
            if not selected.requires_grad:
                raise ValueError(f"{method}: the target does not depend on x")
            if lrp_eps is None:
                fold_batch_norms(selected)
            (grad,) = torch.autograd.grad(selected, leaf, seed_for(selected, seed))
        del selected
        if rewrites is not None and as_unit(target) is None:  # a unit's forward stops early: consumers unknown
            rewrites.learn()
        mode.warn_nonlinear(method)
        return grad.contiguous()

    return _in_best_layout(lambda laid_out: _rewrites.run(model, lambda f: run(laid_out, f), allowed=lrp_eps is None),
                           x)


def saliency(model: torch.nn.Module, x: torch.Tensor, target: Target = None, *, seed: str = "onehot",
             abs: bool = False, backend: str | None = None) -> torch.Tensor:
    """Plain gradient of the target w.r.t. x (Simonyan et al. 2014) -> shaped like x.

    abs=True returns |gradient| (Captum Saliency's default). Rectifiers still save bit-packed
    masks instead of activations, so the backward keeps less memory than autograd's."""
    grad = _attribute(model, x, target, ref.BACKPROP, seed=seed, backend=backend, nonlinear="ignore",
                      method="saliency")
    return grad.abs() if abs else grad


def deconvnet(model: torch.nn.Module, x: torch.Tensor, target: Target = None, *, seed: str = "onehot",
              nonlinear: str = "warn", backend: str | None = None) -> torch.Tensor:
    """DeconvNet (Zeiler & Fergus 2014): dx = dy * (dy > 0) at every rectifier -> shaped like x."""
    return _attribute(model, x, target, ref.DECONVNET, seed=seed, backend=backend, nonlinear=nonlinear,
                      method="deconvnet")


def guided_backprop(model: torch.nn.Module, x: torch.Tensor, target: Target = None, *, seed: str = "onehot",
                    nonlinear: str = "warn", backend: str | None = None) -> torch.Tensor:
    """Guided backprop (Springenberg et al. 2015): dx = dy * m * (dy > 0) at every rectifier -> like x."""
    return _attribute(model, x, target, ref.GUIDED, seed=seed, backend=backend, nonlinear=nonlinear,
                      method="guided_backprop")


def lrp(model: torch.nn.Module, x: torch.Tensor, target: Target = None, *, eps: float = 1e-3,
        nonlinear: str = "warn", backend: str | None = None) -> torch.Tensor:
    """LRP-epsilon relevance at the input (Bach et al. 2015; FeatureVis' eps * sign(z)) -> like x.

    The relevance that enters is the target's activation; see featvis_fast.engine.lrp_epsilon for the rules."""
    if not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"eps must be a number >= 0, got {eps!r}")
    grad = _attribute(model, x, target, ref.BACKPROP, seed="onehot", backend=backend, nonlinear=nonlinear,
                      method="lrp", lrp_eps=float(eps))
    return x.detach() * grad


def _upsample(maps: torch.Tensor, size, mode: str) -> torch.Tensor:
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(maps[:, None], size=tuple(size), mode=mode, **kwargs)[:, 0]


def gradcam(model: torch.nn.Module, x: torch.Tensor, target: Target = None, layer: str = None, *,
            relu: bool = True, upsample: bool | str = False, call: int = 0, seed: str = "onehot",
            backend: str | None = None) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) at `layer` -> (B, h, w), or (B, H, W) with upsample.

    weights_k = mean over (i, j) of dS/dA_k; map = ReLU(sum_k weights_k A_k) (relu=False keeps the
    sign, as Captum's LayerGradCam does by default). upsample: False, True/"bilinear", or "nearest".
    The backward stops at `layer`; nothing before it is recorded."""
    check_model_and_batch(model, x)
    if layer is None:
        raise ValueError("gradcam needs a layer name (see featvis_fast.layer_names(model))")
    chosen = _backend.resolve_backend(backend, x.device)

    def run(laid_out, rewrites):
        with torch.enable_grad():
            mode = RectifierRuleMode(ref.BACKPROP, chosen, rewrites=rewrites)
            with mode, LayerCapture(model, layer, call, as_leaf=True) as capture:
                selected = _forward_selected(model, laid_out, target)
            if rewrites is not None:
                rewrites.check_no_escapes()
            acts = capture.result()
            if acts.dim() != 4:
                raise ValueError(f"Grad-CAM needs a (B, C, h, w) layer output; {layer!r} gives {tuple(acts.shape)}")
            if not selected.requires_grad:
                raise ValueError(f"gradcam: the target does not depend on layer {layer!r} (is it after the target?)")
            fold_batch_norms(selected)
            (grads,) = torch.autograd.grad(selected, acts, seed_for(selected, seed))
        del selected
        if rewrites is not None and as_unit(target) is None:
            rewrites.learn()
        return (grads.mean(dim=(2, 3), keepdim=True) * acts.detach()).sum(dim=1).contiguous()

    cam = _in_best_layout(lambda laid_out: _rewrites.run(model, lambda f: run(laid_out, f)), x)
    if relu:
        cam = cam.clamp_min(0)
    if upsample:
        cam = _upsample(cam, x.shape[-2:], "bilinear" if upsample is True else upsample)
    return cam


def guided_gradcam(model: torch.nn.Module, x: torch.Tensor, target: Target = None, layer: str = None, *,
                   interpolate: str = "nearest", call: int = 0, seed: str = "onehot", nonlinear: str = "warn",
                   backend: str | None = None) -> torch.Tensor:
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backprop x Grad-CAM upsampled to x -> like x.

    interpolate: how the (B, h, w) map is upsampled ("nearest", Captum's default, or "bilinear")."""
    cam = gradcam(model, x, target, layer, relu=True, call=call, seed=seed, backend=backend)
    guided = guided_backprop(model, x, target, seed=seed, nonlinear=nonlinear, backend=backend)
    return guided * _upsample(cam, x.shape[-2:], interpolate)[:, None]
