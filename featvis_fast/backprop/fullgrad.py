"""FullGrad (Srinivas & Fleuret, NeurIPS 2019), with pytorch-grad-cam's definition.

map = psi(|x * dS/dx|) + sum over bias layers l, channels c of psi(|b_lc * dS/dz_l|),
where z_l is the output of a Conv2d with a bias or of a BatchNorm2d (whose effective bias is
beta - mean * gamma / sqrt(var + eps)), and psi min-max normalizes one (image, channel) map
(x - min, / (max + 1e-7)) and resizes it bilinearly to the input, summed over channels.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .._maps import resize_maps
from .._validate import check_model_and_batch
from ..engine import Target, backward_seed, cached_cpu_memory, find_module, select_output
from .methods import _graph_leaf, check_create_graph


def _bias_layers(model: nn.Module, layer: str | None) -> list[tuple[str, nn.Module]]:
    """Conv2d layers with a bias and BatchNorm2d layers with an affine shift (exact types, as
    pytorch-grad-cam), in definition order, under `layer` (None: the whole model)."""
    root = model if layer is None else find_module(model, layer)
    found = [(name, m) for name, m in root.named_modules()
             if type(m) in (nn.Conv2d, nn.BatchNorm2d) and m.bias is not None]
    if not found:
        raise ValueError(f"fullgrad found no Conv2d or BatchNorm2d layer with a bias under {layer or 'the model'!r}")
    return found


def _effective_bias(module: nn.Module) -> torch.Tensor:
    if isinstance(module, nn.BatchNorm2d):
        return module.bias - module.running_mean * module.weight / torch.sqrt(module.running_var + module.eps)
    return module.bias


def _psi(maps: torch.Tensor, size) -> torch.Tensor:
    """(B, K, h, w) -> (B, H, W): each (image, channel) map min-max normalized, resized, summed over K."""
    batch, channels = maps.shape[:2]
    flat = maps.reshape(batch * channels, *maps.shape[2:])
    flat = flat - flat.amin(dim=(1, 2), keepdim=True)
    flat = flat / (1e-7 + flat.amax(dim=(1, 2), keepdim=True))
    if tuple(flat.shape[1:]) != tuple(size):
        flat = resize_maps(flat, size, "bilinear")
    return flat.reshape(batch, channels, *size).sum(dim=1)


def fullgrad(model: torch.nn.Module, x: torch.Tensor, target: Target = None, layer: str | None = None, *,
             grad_seed: str = "onehot", create_graph: bool = False) -> torch.Tensor:
    """FullGrad (Srinivas & Fleuret, NeurIPS 2019): input-gradient and bias-gradient maps, summed.

    One forward and one backward give dS/dx and dS/dz at the output z of every Conv2d with a bias
    and every BatchNorm2d (pytorch-grad-cam's choice of layers, by exact type). The gradient at a
    layer is taken at its own output, before any in-place rectifier that follows it. Departures
    from pytorch-grad-cam: the per-map resize is torch's bilinear (align_corners=False) where it
    uses OpenCV's (the same weights), everything stays in x's dtype on its device, and the sum is
    not min-max normalized at the end (pytorch-grad-cam's final scale_cam_image).

    Args:
        model: the CNN (eval mode; it is not modified).
        x: images (B, C, H, W), float32 or float64.
        target: what is explained, a featvis_fast.Target at the output (None: the predicted class).
        layer: None (every bias layer of the model) or a module name whose bias layers are used.
        grad_seed: "onehot" (the gradient of the selected outputs' sum) or "activation".
        create_graph: keep the map in the autograd graph, differentiable with respect to x (when
            it requires grad) and the model's parameters, biases included (plain autograd; see
            fv.saliency).

    Returns:
        the maps (B, H, W), non-negative, in x's dtype.
    """
    check_model_and_batch(model, x)
    in_graph = check_create_graph(create_graph)
    if x.dim() != 4:
        raise ValueError(f"fullgrad needs images (B, C, H, W), got shape {tuple(x.shape)}")
    layers = _bias_layers(model, layer)
    outputs: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(layers))}

    def keeper(i):
        def keep(module, inputs, output):  # the gradient at this output, not at an in-place rectifier's
            outputs[i].append(output)
            return output.clone()

        return keep

    with cached_cpu_memory(x.device), torch.enable_grad():
        leaf = _graph_leaf(x) if in_graph else x.detach().requires_grad_(True)
        handles = [m.register_forward_hook(keeper(i)) for i, (_, m) in enumerate(layers)]
        try:
            selected = select_output(model(leaf), target)
        finally:
            for h in handles:
                h.remove()
        runs = [(name, len(outputs[i])) for i, (name, _) in enumerate(layers) if len(outputs[i]) != 1]
        if runs:
            raise ValueError(f"fullgrad needs each bias layer to run once in the forward pass; {runs[0][0]!r} "
                             f"ran {runs[0][1]} times")
        grads = torch.autograd.grad(selected, [leaf, *(outputs[i][0] for i in range(len(layers)))],
                                    backward_seed(selected, grad_seed, in_graph=in_graph), allow_unused=True,
                                    create_graph=in_graph)
    size = tuple(x.shape[-2:])
    with torch.set_grad_enabled(in_graph and torch.is_grad_enabled()):
        total = _psi((grads[0] * (leaf if in_graph else x.detach())).abs(), size)
        for (_, module), grad in zip(layers, grads[1:]):
            if grad is not None:
                bias = _effective_bias(module)
                bias = (bias if in_graph else bias.detach()).to(grad.dtype)
                total = total + _psi((bias[None, :, None, None] * grad).abs(), size)
    return total
