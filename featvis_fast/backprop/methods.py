"""The deconvolution / backprop family of the FeatureVis taxonomy, batched, on any CNN.

saliency           plain gradient (Simonyan et al. 2014)
deconvnet          DeconvNet rule at rectifiers (Zeiler & Fergus 2014)
guided_backprop    guided rule at rectifiers (Springenberg et al. 2015)
gradcam            Grad-CAM (Selvaraju et al. 2017): ReLU(sum_k mean_ij(dS/dA_k) A_k) at a layer
guided_gradcam     guided backprop x upsampled Grad-CAM (Selvaraju et al. 2017)
input_x_gradient   x * gradient (Shrikumar et al. 2016; Captum's InputXGradient)

Rectifiers are found by RectifierRuleMode whatever their spelling; the model is never modified.
Inputs x: (B, C, H, W) (any (B, ...) for the gradient methods); results on x's device.
"""
from __future__ import annotations

import torch

from .. import _backend
from .. import _rectifier_reference as ref
from .._deprecation import renamed_keywords
from .._maps import resize_maps, upsample_maps
from .._validate import check_model_and_batch
from ..engine import (
    LayerCapture,
    RectifierRuleMode,
    Target,
    as_unit,
    backward_seed,
    cached_cpu_memory,
    check_grad_seed,
    fold_batch_norms,
    run_in_best_layout,
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


def _graph_leaf(x: torch.Tensor) -> torch.Tensor:
    """x itself where it requires grad (the caller's graph continues through it), else a leaf that does."""
    return x if x.requires_grad else x.detach().requires_grad_(True)


def check_create_graph(create_graph: object) -> bool:
    """create_graph if it is a bool, else TypeError."""
    if not isinstance(create_graph, bool):
        raise TypeError(f"create_graph must be True or False, got {create_graph!r}")
    return create_graph


def _graph_gradient(model, x, target, grad_seed, method) -> torch.Tensor:
    """dS/dx by plain autograd with create_graph=True: differentiable with respect to x (where it
    requires grad) and the model's parameters. No rule mode, rewrites or lean functions: their
    backward functions are first-order only."""
    with torch.enable_grad():
        leaf = _graph_leaf(x)
        selected = _forward_selected(model, leaf, target)
        if not selected.requires_grad:
            raise ValueError(f"{method}: the target does not depend on x")
        (grad,) = torch.autograd.grad(selected, leaf, backward_seed(selected, grad_seed, in_graph=True),
                                      create_graph=True)
    return grad


def _attribute(model, x, target, rule, *, grad_seed, backend, nonlinear, method, lrp_eps=None,
               create_graph=False) -> torch.Tensor:
    """d(selected)/dx with `rule` at every rectifier; x's gradient, shaped like x (contiguous).
    create_graph (plain gradient only): the result stays in the autograd graph (see _graph_gradient)."""
    check_model_and_batch(model, x)
    check_grad_seed(grad_seed)
    if check_create_graph(create_graph):
        if rule != ref.BACKPROP or lrp_eps is not None:
            raise ValueError(f"{method} has no create_graph form (only plain-gradient methods are differentiable)")
        return _graph_gradient(model, x, target, grad_seed, method)
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
            (grad,) = torch.autograd.grad(selected, leaf, backward_seed(selected, grad_seed))
        del selected
        if rewrites is not None and as_unit(target) is None:  # a unit's forward stops early: consumers unknown
            rewrites.learn()
        mode.warn_nonlinear(method)
        return grad.contiguous()

    return _in_best_layout(lambda laid_out: _rewrites.run(model, lambda f: run(laid_out, f), allowed=lrp_eps is None),
                           x)


@renamed_keywords(seed="grad_seed")
def saliency(model: torch.nn.Module, x: torch.Tensor, target: Target = None, *, grad_seed: str = "onehot",
             abs: bool = False, create_graph: bool = False, backend: str | None = None) -> torch.Tensor:
    """Plain gradient of the target with respect to the input (Simonyan et al. 2014).

    Rectifiers save bit-packed masks instead of their activations, so the backward keeps less
    memory than autograd's; the values are autograd's.

    Args:
        model: the CNN (its rectifiers are found however they are spelled; it is not modified).
        x: inputs (B, C, H, W) (any (B, ...) works), float32 or float64, on the model's device.
        target: what is explained, a featvis_fast.Target (None: the predicted class per sample).
        grad_seed: "onehot" (the gradient of the selected activations' sum, Captum's) or
            "activation" (the backward starts from the activations, FeatureVis').
        abs: return |gradient| (Captum Saliency's default).
        create_graph: keep the result in the autograd graph, differentiable with respect to x (when
            x requires grad) and the model's parameters (plain autograd with create_graph=True,
            without the fused kernels; see docs: Backprop attributions, Differentiable results).
        backend: kernel backend (None: the fastest for x's device).

    Returns:
        the gradient, shaped like x, in x's dtype, on x's device.
    """
    grad = _attribute(model, x, target, ref.BACKPROP, grad_seed=grad_seed, backend=backend, nonlinear="ignore",
                      method="saliency", create_graph=create_graph)
    return grad.abs() if abs else grad


def input_x_gradient(model: torch.nn.Module, x: torch.Tensor, target: Target = None, *, grad_seed: str = "onehot",
                     create_graph: bool = False, backend: str | None = None) -> torch.Tensor:
    """Input times gradient (Shrikumar et al. 2016, "Not just a black box"), Captum's InputXGradient.

    Args:
        model: the CNN (see saliency).
        x: inputs (B, C, H, W) (any (B, ...) works), float32 or float64.
        target: what is explained, a featvis_fast.Target (None: the predicted class per sample).
        grad_seed: "onehot" or "activation" (see saliency).
        create_graph: keep the result in the autograd graph (see saliency).
        backend: kernel backend (None: the fastest for x's device).

    Returns:
        x * dS/dx, shaped like x, in x's dtype.
    """
    grad = _attribute(model, x, target, ref.BACKPROP, grad_seed=grad_seed, backend=backend, nonlinear="ignore",
                      method="input_x_gradient", create_graph=create_graph)
    return (x if create_graph else x.detach()) * grad


@renamed_keywords(seed="grad_seed")
def deconvnet(model: torch.nn.Module, x: torch.Tensor, target: Target = None, *, grad_seed: str = "onehot",
              nonlinear: str = "warn", backend: str | None = None) -> torch.Tensor:
    """DeconvNet attribution (Zeiler & Fergus 2014): dx = dy * (dy > 0) at every rectifier.

    Args:
        model: the CNN (see saliency).
        x: inputs (B, C, H, W), float32 or float64.
        target: what is explained, a featvis_fast.Target (None: the predicted class per sample).
        grad_seed: "onehot" or "activation" (see saliency).
        nonlinear: what to do on a non-piecewise-linear activation (SiLU, GELU, ...), which the
            rule does not cover: "warn" (NonPiecewiseLinearWarning), "error" or "ignore".
        backend: kernel backend (None: the fastest for x's device).

    Returns:
        the attribution, shaped like x, in x's dtype.
    """
    return _attribute(model, x, target, ref.DECONVNET, grad_seed=grad_seed, backend=backend, nonlinear=nonlinear,
                      method="deconvnet")


@renamed_keywords(seed="grad_seed")
def guided_backprop(model: torch.nn.Module, x: torch.Tensor, target: Target = None, *, grad_seed: str = "onehot",
                    nonlinear: str = "warn", backend: str | None = None) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015): dx = dy * (y > 0) * (dy > 0) at every rectifier.

    Args:
        model: the CNN (see saliency).
        x: inputs (B, C, H, W), float32 or float64.
        target: what is explained, a featvis_fast.Target (None: the predicted class per sample).
        grad_seed: "onehot" or "activation" (see saliency).
        nonlinear: "warn", "error" or "ignore" on a non-piecewise-linear activation (see deconvnet).
        backend: kernel backend (None: the fastest for x's device).

    Returns:
        the attribution, shaped like x, in x's dtype.
    """
    return _attribute(model, x, target, ref.GUIDED, grad_seed=grad_seed, backend=backend, nonlinear=nonlinear,
                      method="guided_backprop")


def layer_activations_and_gradients(model, x: torch.Tensor, target: Target, layer: str, *, call: int = 0,
                                    grad_seed: str = "onehot", create_graph: bool = False,
                                    backend: str | None = None,
                                    method: str = "gradcam") -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's activations A and the target's gradient dS/dA, both (B, K, h, w), detached.

    The backward stops at `layer`; nothing before it is recorded. The CAM family is built on it.
    With create_graph, both stay in the autograd graph (plain autograd, create_graph=True), so any
    map computed from them is differentiable with respect to x (when it requires grad) and the
    model's parameters.

    Args:
        model: the CNN.
        x: inputs (B, C, H, W), float32 or float64.
        target: what is explained, a featvis_fast.Target (None: the predicted class per sample).
        layer: the module whose (B, K, h, w) output is taken (see featvis_fast.layer_names).
        call: which call of a module that runs several times (0: the first).
        grad_seed: "onehot" or "activation" (see saliency).
        create_graph: keep both in the autograd graph (see above).
        backend: kernel backend (None: the fastest for x's device).
        method: the calling method's name, for error messages.

    Returns:
        (activations, gradients), each (B, K, h, w) in x's dtype.
    """
    check_model_and_batch(model, x)
    check_grad_seed(grad_seed)
    if layer is None:
        raise ValueError(f"{method} needs a layer name (see featvis_fast.layer_names(model))")
    if check_create_graph(create_graph):
        return _graph_layer_gradients(model, x, target, layer, call, grad_seed, method)
    chosen = _backend.resolve_backend(backend, x.device)

    def run(laid_out, rewrites):
        with torch.enable_grad():
            mode = RectifierRuleMode(ref.BACKPROP, chosen, rewrites=rewrites)
            with mode, LayerCapture(model, layer, call, as_leaf=True) as capture:
                selected = _forward_selected(model, laid_out, target)
            if rewrites is not None:
                rewrites.check_no_escapes()
            acts = capture.result()
            _check_layer_output(acts, layer, method)
            if not selected.requires_grad:
                raise ValueError(f"{method}: the target does not depend on layer {layer!r} (is it after the target?)")
            fold_batch_norms(selected)
            (grads,) = torch.autograd.grad(selected, acts, backward_seed(selected, grad_seed))
        del selected
        if rewrites is not None and as_unit(target) is None:
            rewrites.learn()
        return acts.detach(), grads

    return _in_best_layout(lambda laid_out: _rewrites.run(model, lambda f: run(laid_out, f)), x)


def _check_layer_output(acts: torch.Tensor, layer: str, method: str) -> None:
    if acts.dim() != 4:
        raise ValueError(f"{method} needs a (B, C, h, w) layer output; {layer!r} gives {tuple(acts.shape)}")


def _graph_layer_gradients(model, x, target, layer, call, grad_seed, method) -> tuple[torch.Tensor, torch.Tensor]:
    """layer_activations_and_gradients with create_graph: the layer's output and dS/d(output), in the graph."""
    with torch.enable_grad():
        with LayerCapture(model, layer, call, as_branch=True) as capture:
            selected = _forward_selected(model, x, target)
        acts = capture.result()
        _check_layer_output(acts, layer, method)
        if capture.branch is None or not selected.requires_grad:
            raise ValueError(f"{method}: the target does not depend on layer {layer!r} (is it after the target?)")
        (grads,) = torch.autograd.grad(selected, capture.branch, backward_seed(selected, grad_seed, in_graph=True),
                                       create_graph=True)
    return acts, grads


@renamed_keywords(seed="grad_seed")
def gradcam(model: torch.nn.Module, x: torch.Tensor, target: Target = None, layer: str = None, *,
            relu: bool = True, upsample: bool | str = False, call: int = 0, grad_seed: str = "onehot",
            create_graph: bool = False, backend: str | None = None) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) at a layer: ReLU(sum_k mean_ij(dS/dA_k) A_k).

    The backward stops at `layer`; nothing before it is recorded.

    Args:
        model: the CNN.
        x: inputs (B, C, H, W), float32 or float64.
        target: what is explained, a featvis_fast.Target (None: the predicted class per sample).
        layer: the module whose (B, K, h, w) output A is weighted (see featvis_fast.layer_names).
        relu: clamp the map at 0 (False keeps the sign, as Captum's LayerGradCam does by default).
        upsample: False (the layer's h x w), True / "bilinear" or "nearest" (to x's H x W).
        call: which call of a module that runs several times (0: the first).
        grad_seed: "onehot" or "activation" (see saliency).
        create_graph: keep the map in the autograd graph, differentiable with respect to x (when
            it requires grad) and the model's parameters (see saliency).
        backend: kernel backend (None: the fastest for x's device).

    Returns:
        the maps (B, h, w), or (B, H, W) with upsample, in x's dtype.
    """
    acts, grads = layer_activations_and_gradients(model, x, target, layer, call=call, grad_seed=grad_seed,
                                                  create_graph=create_graph, backend=backend, method="gradcam")
    cam = (grads.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1).contiguous()
    if relu:
        cam = cam.clamp_min(0)
    return upsample_maps(cam, x.shape[-2:], upsample)


@renamed_keywords(seed="grad_seed")
def guided_gradcam(model: torch.nn.Module, x: torch.Tensor, target: Target = None, layer: str = None, *,
                   interpolate: str = "nearest", call: int = 0, grad_seed: str = "onehot", nonlinear: str = "warn",
                   backend: str | None = None) -> torch.Tensor:
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backprop times Grad-CAM upsampled to x.

    Args:
        model: the CNN.
        x: inputs (B, C, H, W), float32 or float64.
        target: what is explained, a featvis_fast.Target (None: the predicted class per sample).
        layer: the Grad-CAM layer (see gradcam).
        interpolate: how the (B, h, w) map is upsampled: "nearest" (Captum's default) or "bilinear".
        call: which call of a module that runs several times (0: the first).
        grad_seed: "onehot" or "activation" (see saliency).
        nonlinear: "warn", "error" or "ignore" on a non-piecewise-linear activation.
        backend: kernel backend (None: the fastest for x's device).

    Returns:
        the attribution, shaped like x, in x's dtype.
    """
    cam = gradcam(model, x, target, layer, relu=True, call=call, grad_seed=grad_seed, backend=backend)
    guided = guided_backprop(model, x, target, grad_seed=grad_seed, nonlinear=nonlinear, backend=backend)
    return guided * resize_maps(cam, x.shape[-2:], interpolate)[:, None]
