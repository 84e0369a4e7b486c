"""Excitation backprop and contrastive excitation backprop (Zhang et al., ECCV 2016), as TorchRay.

Excitation backprop passes a probability-like signal top-down: at every convolution, linear
layer and average pool, an output's signal is shared among its inputs in proportion to their
positive contributions, p_in = a * f^T(p / (f(a; W+, 0) + 1e-20); W+) (the rule "excitation" of
engine.lrp_rules, on the layer's input as it is, as TorchRay computes it). Batch norms,
rectifiers and other activations pass the signal, max pooling routes it to the winner, residual
sums split it in proportion to their inputs. The signal enters as 1 at the target (TorchRay's
one-hot); the map is its sum over the channels of `layer`'s output (the input pixels when
`layer` is None).

Contrastive excitation backprop subtracts, at `contrast_layer`'s output, the signal that the
classifier with negated weights sends there, and keeps the positive part of the map.
"""
from __future__ import annotations

from contextlib import ExitStack

import torch
import torch.nn as nn

from .._maps import upsample_maps
from .._validate import check_model_and_batch
from ..engine import LayerCapture, Target, find_module
from ..engine.lrp_rules import Rule
from ..engine.relevance_mode import RelevanceMode
from .methods import _forward_selected, _in_best_layout

STABILIZER = 1e-20  # TorchRay's (and the Caffe original's) guard against 0 / 0
_AFFINE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def classifier_layer(model: nn.Module) -> str:
    """The name of the model's last convolution or linear layer (TorchRay's default classifier)."""
    names = [name for name, m in model.named_modules() if isinstance(m, _AFFINE)]
    if not names:
        raise ValueError("the model has no convolution or linear layer to use as the classifier")
    return names[-1]


def _signal(model, x, target, layer, *, negate=None, contrast_layer=None, contrast=None):
    """The excitation signal at `layer`'s output (or at x when layer is None), (B, C, ...), and,
    with contrast_layer and no contrast, the one at contrast_layer's output."""
    layers = {id(m.weight): (name, m) for name, m in model.named_modules()
              if isinstance(getattr(m, "weight", None), torch.Tensor)}

    def choose(name, module, kind, first):
        return Rule("excitation", stabilizer=STABILIZER, negate=negate is not None and name == negate)

    def run(laid_out):
        leaf = laid_out.requires_grad_(True)
        mode = RelevanceMode(choose, layers, merge_batch_norm=False, batch_norm_rule=Rule("pass"),
                             sum_stabilizer=STABILIZER, no_merge=set())
        names = [n for n in (layer, contrast_layer) if n is not None]
        with torch.enable_grad(), ExitStack() as stack:
            captures = {n: stack.enter_context(LayerCapture(model, n)) for n in names}
            with mode:
                selected = _forward_selected(model, leaf, target)
            if not selected.requires_grad:
                raise ValueError("excitation_backprop: the target does not depend on x")
        captured = {n: c.output for n, c in captures.items()}
        for n, t in captured.items():
            if t is None or not t.requires_grad:
                raise ValueError(f"layer {n!r} did not run before the target, or does not depend on x")
        if contrast is not None:
            captured[contrast_layer].register_hook(lambda g: g - contrast.to(g.dtype))
        wanted = [captured[layer] if layer is not None else leaf]
        if contrast_layer is not None and contrast is None:
            wanted.append(captured[contrast_layer])
        grads = torch.autograd.grad(selected, wanted, torch.ones_like(selected))
        return tuple(g.detach() for g in grads)

    return _in_best_layout(run, x)


def excitation_backprop(model: nn.Module, x: torch.Tensor, target: Target = None, layer: str | None = None, *,
                        contrastive: bool = False, contrast_layer: str | None = None,
                        classifier: str | None = None, upsample: bool | str = False) -> torch.Tensor:
    """Excitation backprop's map at a layer (Zhang et al., ECCV 2016; TorchRay's definitions).

    Args:
        model: the CNN (eval mode; it is not modified).
        x: inputs (B, C, H, W), float32 or float64.
        target: what is explained, a featvis_fast.Target (None: the predicted class per sample).
        layer: the module whose output the map is read at (None: the input pixels).
        contrastive: contrastive excitation backprop (needs contrast_layer).
        contrast_layer: the module at whose output the contrast signal is subtracted (TorchRay's
            example on VGG-16: layer "features.23", contrast_layer "features.30").
        classifier: the layer whose weights the contrast pass negates (None: the last
            convolution or linear layer).
        upsample: False, True / "bilinear" or "nearest": resize the maps to x's size (as fv.gradcam).

    Returns:
        (B, h, w) maps, the signal summed over the channels of `layer`'s output (contrastive:
        its positive part), in x's dtype.
    """
    check_model_and_batch(model, x)
    for name in (layer, contrast_layer, classifier):
        if name is not None:
            find_module(model, name)
    if contrastive:
        if contrast_layer is None:
            raise ValueError("contrastive excitation backprop needs contrast_layer= (a module name)")
        negate = classifier if classifier is not None else classifier_layer(model)
        (_, contrast) = _signal(model, x, target, layer, negate=negate, contrast_layer=contrast_layer)
        (signal,) = _signal(model, x, target, layer, contrast_layer=contrast_layer, contrast=contrast)
        maps = signal.sum(dim=1).clamp(min=0)
    else:
        (signal,) = _signal(model, x, target, layer)
        maps = signal.sum(dim=1)
    if maps.dim() != 3:
        raise ValueError(f"layer {layer!r} output has shape {tuple(signal.shape)}; a map needs (B, C, h, w)")
    return upsample_maps(maps, tuple(x.shape[-2:]), upsample)
