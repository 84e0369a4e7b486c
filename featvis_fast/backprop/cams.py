"""The gradient CAM family beyond Grad-CAM, with pytorch-grad-cam's definitions.

From a layer's activations A (B, K, h, w) and the target's gradient G = dS/dA:

gradcam_pp     Grad-CAM++ (Chattopadhyay et al. 2018): w_k = sum_ij relu(G) a_ij,
               a = G^2 / (2 G^2 + sum_ij(A) G^3 + 1e-6) where G != 0
xgradcam       XGrad-CAM (Fu et al. 2020): w_k = sum_ij G A / (sum_ij A + 1e-7)
layercam       LayerCAM (Jiang et al. 2021): sum_k relu(G) A
hirescam       HiResCAM (Draelos & Carin 2020): sum_k G A
eigencam       Eigen-CAM (Muhammad & Yeasin 2020): A's first principal component per image
eigengradcam   Eigen-CAM on G A

Channel-weight methods give sum_k w_k A_k. Each map is clamped at 0 (relu=True, as
pytorch-grad-cam does before its per-image min-max and resize) and optionally upsampled to x.
Departures from pytorch-grad-cam, on purpose: everything runs on x's device in x's dtype (it
computes in NumPy and returns float32), the maps are not min-max normalized (any display does
that; fv.colorize, or its `scale_cam_image`), and Eigen-CAM's sign, arbitrary in an SVD, is
fixed: the projection is flipped where its largest magnitude is negative (the sign correction
of Seg-Eigen-CAM, Chung & Ying 2025); pytorch-grad-cam's plain Eigen-CAM keeps LAPACK's sign.
"""
from __future__ import annotations

import torch

from .._maps import upsample_maps
from ..engine import Target
from .methods import layer_activations_and_gradients


def _weighted(weights: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """sum_k w_k A_k: (B, K) weights, (B, K, h, w) activations -> (B, h, w)."""
    return (weights[:, :, None, None] * acts).sum(dim=1)


def _first_component(maps: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) -> (B, h, w): each image's positions (h*w, K), centred, projected on their
    first right singular vector, with the sign that makes the largest magnitude positive."""
    batch, channels, height, width = maps.shape
    rows = maps.reshape(batch, channels, -1).transpose(1, 2)
    rows = rows - rows.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(rows, full_matrices=False)
    projection = rows @ vh[:, 0, :, None]
    projection = projection.reshape(batch, height, width)
    flat = projection.reshape(batch, -1)
    flip = flat.amin(dim=1).abs() > flat.amax(dim=1).abs()
    return torch.where(flip[:, None, None], -projection, projection)


def _grad_cam_pp(acts, grads):
    g2 = grads * grads
    g3 = g2 * grads
    alpha = g2 / (2 * g2 + acts.sum(dim=(2, 3), keepdim=True) * g3 + 1e-6)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    return _weighted((grads.clamp_min(0) * alpha).sum(dim=(2, 3)), acts)


def _xgrad_cam(acts, grads):
    return _weighted((grads * acts / (acts.sum(dim=(2, 3), keepdim=True) + 1e-7)).sum(dim=(2, 3)), acts)


MAPS = {
    "gradcam_pp": _grad_cam_pp,
    "xgradcam": _xgrad_cam,
    "layercam": lambda acts, grads: (grads.clamp_min(0) * acts).sum(dim=1),
    "hirescam": lambda acts, grads: (grads * acts).sum(dim=1),
    "eigencam": lambda acts, grads: _first_component(acts),
    "eigengradcam": lambda acts, grads: _first_component(grads * acts),
}


def _cam(name, model, x, target, layer, relu, upsample, call, grad_seed, create_graph, backend) -> torch.Tensor:
    acts, grads = layer_activations_and_gradients(model, x, target, layer, call=call, grad_seed=grad_seed,
                                                  create_graph=create_graph, backend=backend, method=name)
    cam = MAPS[name](acts, grads).contiguous()
    if relu:
        cam = cam.clamp_min(0)
    return upsample_maps(cam, x.shape[-2:], upsample)


def gradcam_pp(model: torch.nn.Module, x: torch.Tensor, target: Target = None, layer: str = None, *,
               relu: bool = True, upsample: bool | str = False, call: int = 0, grad_seed: str = "onehot",
               create_graph: bool = False, backend: str | None = None) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018): sum_k w_k A_k, w_k = sum_ij relu(G) a, where
    a = G^2 / (2 G^2 + sum_ij(A_k) G^3 + 1e-6) and G != 0 (a = 0 elsewhere).

    Args:
        model: the CNN (eval mode; it is not modified).
        x: inputs (B, C, H, W), float32 or float64.
        target: what is explained, a featvis_fast.Target (None: the predicted class per sample).
        layer: the module whose (B, K, h, w) output A is used (see featvis_fast.layer_names).
        relu: clamp the map at 0 (pytorch-grad-cam's; False keeps the sign).
        upsample: False (the layer's h x w), True / "bilinear" or "nearest" (to x's H x W).
        call: which call of a module that runs several times (0: the first).
        grad_seed: "onehot" (the gradient of the selected activations' sum) or "activation".
        create_graph: keep the map in the autograd graph, differentiable with respect to x (when
            it requires grad) and the model's parameters (plain autograd; see fv.saliency).
        backend: kernel backend (None: the fastest for x's device).

    Returns:
        the maps (B, h, w), or (B, H, W) with upsample, in x's dtype.
    """
    return _cam("gradcam_pp", model, x, target, layer, relu, upsample, call, grad_seed, create_graph, backend)


def xgradcam(model: torch.nn.Module, x: torch.Tensor, target: Target = None, layer: str = None, *,
             relu: bool = True, upsample: bool | str = False, call: int = 0, grad_seed: str = "onehot",
             create_graph: bool = False, backend: str | None = None) -> torch.Tensor:
    """XGrad-CAM (Fu et al., BMVC 2020): sum_k w_k A_k, w_k = sum_ij G A / (sum_ij A_k + 1e-7).

    Args:
        model: the CNN (eval mode; it is not modified).
        x: inputs (B, C, H, W), float32 or float64.
        target: what is explained, a featvis_fast.Target (None: the predicted class per sample).
        layer: the module whose (B, K, h, w) output A is used (see featvis_fast.layer_names).
        relu: clamp the map at 0 (pytorch-grad-cam's; False keeps the sign).
        upsample: False (the layer's h x w), True / "bilinear" or "nearest" (to x's H x W).
        call: which call of a module that runs several times (0: the first).
        grad_seed: "onehot" (the gradient of the selected activations' sum) or "activation".
        create_graph: keep the map in the autograd graph, differentiable with respect to x (when
            it requires grad) and the model's parameters (plain autograd; see fv.saliency).
        backend: kernel backend (None: the fastest for x's device).

    Returns:
        the maps (B, h, w), or (B, H, W) with upsample, in x's dtype.
    """
    return _cam("xgradcam", model, x, target, layer, relu, upsample, call, grad_seed, create_graph, backend)


def layercam(model: torch.nn.Module, x: torch.Tensor, target: Target = None, layer: str = None, *,
             relu: bool = True, upsample: bool | str = False, call: int = 0, grad_seed: str = "onehot",
             create_graph: bool = False, backend: str | None = None) -> torch.Tensor:
    """LayerCAM (Jiang et al., IEEE TIP 2021): sum_k relu(G_k) A_k, position by position.

    Args:
        model: the CNN (eval mode; it is not modified).
        x: inputs (B, C, H, W), float32 or float64.
        target: what is explained, a featvis_fast.Target (None: the predicted class per sample).
        layer: the module whose (B, K, h, w) output A is used (see featvis_fast.layer_names).
        relu: clamp the map at 0 (pytorch-grad-cam's; False keeps the sign).
        upsample: False (the layer's h x w), True / "bilinear" or "nearest" (to x's H x W).
        call: which call of a module that runs several times (0: the first).
        grad_seed: "onehot" (the gradient of the selected activations' sum) or "activation".
        create_graph: keep the map in the autograd graph, differentiable with respect to x (when
            it requires grad) and the model's parameters (plain autograd; see fv.saliency).
        backend: kernel backend (None: the fastest for x's device).

    Returns:
        the maps (B, h, w), or (B, H, W) with upsample, in x's dtype.
    """
    return _cam("layercam", model, x, target, layer, relu, upsample, call, grad_seed, create_graph, backend)


def hirescam(model: torch.nn.Module, x: torch.Tensor, target: Target = None, layer: str = None, *,
             relu: bool = True, upsample: bool | str = False, call: int = 0, grad_seed: str = "onehot",
             create_graph: bool = False, backend: str | None = None) -> torch.Tensor:
    """HiResCAM (Draelos & Carin 2020): sum_k G_k A_k, position by position (no spatial average).

    Args:
        model: the CNN (eval mode; it is not modified).
        x: inputs (B, C, H, W), float32 or float64.
        target: what is explained, a featvis_fast.Target (None: the predicted class per sample).
        layer: the module whose (B, K, h, w) output A is used (see featvis_fast.layer_names).
        relu: clamp the map at 0 (pytorch-grad-cam's; False keeps the sign).
        upsample: False (the layer's h x w), True / "bilinear" or "nearest" (to x's H x W).
        call: which call of a module that runs several times (0: the first).
        grad_seed: "onehot" (the gradient of the selected activations' sum) or "activation".
        create_graph: keep the map in the autograd graph, differentiable with respect to x (when
            it requires grad) and the model's parameters (plain autograd; see fv.saliency).
        backend: kernel backend (None: the fastest for x's device).

    Returns:
        the maps (B, h, w), or (B, H, W) with upsample, in x's dtype.
    """
    return _cam("hirescam", model, x, target, layer, relu, upsample, call, grad_seed, create_graph, backend)


def eigencam(model: torch.nn.Module, x: torch.Tensor, target: Target = None, layer: str = None, *,
             relu: bool = True, upsample: bool | str = False, call: int = 0, grad_seed: str = "onehot",
             create_graph: bool = False, backend: str | None = None) -> torch.Tensor:
    """Eigen-CAM (Muhammad & Yeasin, IJCNN 2020): A's first principal component per image.

    Each image's positions (h*w rows of K channels), centred, projected on their first right
    singular vector, with the sign that makes the largest magnitude positive. The map does not
    depend on the target (the gradient pass still runs, and checks it).

    Args:
        model: the CNN (eval mode; it is not modified).
        x: inputs (B, C, H, W), float32 or float64.
        target: what is explained, a featvis_fast.Target (None: the predicted class per sample).
        layer: the module whose (B, K, h, w) output A is used (see featvis_fast.layer_names).
        relu: clamp the map at 0 (pytorch-grad-cam's; False keeps the sign).
        upsample: False (the layer's h x w), True / "bilinear" or "nearest" (to x's H x W).
        call: which call of a module that runs several times (0: the first).
        grad_seed: "onehot" (the gradient of the selected activations' sum) or "activation".
        create_graph: keep the map in the autograd graph, differentiable with respect to x (when
            it requires grad) and the model's parameters (plain autograd; see fv.saliency).
        backend: kernel backend (None: the fastest for x's device).

    Returns:
        the maps (B, h, w), or (B, H, W) with upsample, in x's dtype.
    """
    return _cam("eigencam", model, x, target, layer, relu, upsample, call, grad_seed, create_graph, backend)


def eigengradcam(model: torch.nn.Module, x: torch.Tensor, target: Target = None, layer: str = None, *,
                 relu: bool = True, upsample: bool | str = False, call: int = 0, grad_seed: str = "onehot",
                 create_graph: bool = False, backend: str | None = None) -> torch.Tensor:
    """Eigen-Grad-CAM (pytorch-grad-cam): the first principal component of G * A, as eigencam.

    Args:
        model: the CNN (eval mode; it is not modified).
        x: inputs (B, C, H, W), float32 or float64.
        target: what is explained, a featvis_fast.Target (None: the predicted class per sample).
        layer: the module whose (B, K, h, w) output A is used (see featvis_fast.layer_names).
        relu: clamp the map at 0 (pytorch-grad-cam's; False keeps the sign).
        upsample: False (the layer's h x w), True / "bilinear" or "nearest" (to x's H x W).
        call: which call of a module that runs several times (0: the first).
        grad_seed: "onehot" (the gradient of the selected activations' sum) or "activation".
        create_graph: keep the map in the autograd graph, differentiable with respect to x (when
            it requires grad) and the model's parameters (plain autograd; see fv.saliency).
        backend: kernel backend (None: the fastest for x's device).

    Returns:
        the maps (B, h, w), or (B, H, W) with upsample, in x's dtype.
    """
    return _cam("eigengradcam", model, x, target, layer, relu, upsample, call, grad_seed, create_graph, backend)
