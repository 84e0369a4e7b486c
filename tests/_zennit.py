"""Zennit as the LRP reference of the tests: the composites by our names, its relevance for a
target, and canonizers for timm's blocks (Zennit ships them for torchvision's only).

Import after _zoo.torchvision_models() (Zennit imports torchvision); the test modules skip when
Zennit is missing.
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import _zoo
import torch
import torch.nn as nn
import zennit.composites as zennit_composites
from zennit.canonizers import AttributeCanonizer, NamedMergeBatchNorm
from zennit.layer import Sum

BOX = dict(low=-4.0, high=4.0)
COMPOSITES = {
    "epsilon-plus": (zennit_composites.EpsilonPlus, {}),
    "epsilon-plus-flat": (zennit_composites.EpsilonPlusFlat, {}),
    "epsilon-gamma-box": (zennit_composites.EpsilonGammaBox, BOX),
    "epsilon-alpha2-beta1": (zennit_composites.EpsilonAlpha2Beta1, {}),
    "epsilon-alpha2-beta1-flat": (zennit_composites.EpsilonAlpha2Beta1Flat, {}),
}


_CASES: dict = {}


def model_case(name: str, make: Callable[[], nn.Module]):
    """(float32 model with realistic batch-norm statistics, float64 copy, float64 input
    (2, 3, 32, 32), predicted classes), built once per name."""
    if name not in _CASES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.manual_seed(0)
            model = _zoo.realistic(make(), 32, batch=4)
        x64 = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        m64 = copy.deepcopy(model).double()
        with torch.no_grad():
            target = m64(x64).argmax(1)
        _CASES[name] = (model, m64, x64, target)
    return _CASES[name]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    b = b.double()
    return ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


def zennit_relevance(model, x, target, composite, *, identity_batch_norm=True):
    """Zennit's relevance at x for the target's activation as the output relevance.

    identity_batch_norm: set the eps of merged batch norms to 0 (Zennit's merge keeps eps, so the
    batch norm it leaves computes x / sqrt(1 + eps) instead of the identity it means)."""
    x = x.detach().clone().requires_grad_(True)
    with composite.context(model) as modified:
        norms = [(m, m.eps) for m in modified.modules() if isinstance(m, nn.BatchNorm2d)]
        if identity_batch_norm:
            for m, _ in norms:
                m.eps = 0.0
        try:
            out = modified(x)
            seed = torch.zeros_like(out)
            rows = torch.arange(len(target))
            seed[rows, target] = out[rows, target].detach()
            (relevance,) = torch.autograd.grad(out, x, seed)
        finally:
            for m, eps in norms:
                m.eps = eps
    return relevance


def merge_batch_norms(model: nn.Module, x: torch.Tensor) -> NamedMergeBatchNorm:
    """Zennit's canonizer merging every batch norm whose input is exactly a convolution's or
    linear layer's output, found by running the model once (whatever the modules' nesting)."""
    names = {m: n for n, m in model.named_modules()}
    outputs, pairs = {}, []

    def hook(module, inputs, output):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            outputs[id(output)] = names[module]
        elif id(inputs[0]) in outputs:
            pairs.append(((outputs[id(inputs[0])],), names[module]))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return NamedMergeBatchNorm(pairs)


class TimmResidualCanonizer(AttributeCanonizer):
    """timm's residual blocks with their sum through a Zennit Sum module (the norm rule), as
    Zennit's ResNetCanonizer does for torchvision's: resnet BasicBlock, EfficientNet
    InvertedResidual and DepthwiseSeparableConv with a skip."""

    def __init__(self):
        super().__init__(self._attribute_map)

    @classmethod
    def _attribute_map(cls, name, module):
        from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual
        from timm.models.resnet import BasicBlock

        forward = None
        if isinstance(module, BasicBlock):
            forward = cls._basic_block
        elif isinstance(module, InvertedResidual) and module.has_skip:
            forward = cls._inverted_residual
        elif isinstance(module, DepthwiseSeparableConv) and module.has_skip:
            forward = cls._separable
        return None if forward is None else {"forward": forward.__get__(module), "canonizer_sum": Sum()}

    @staticmethod
    def _basic_block(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.bn2(self.conv2(self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))))
        if self.se is not None:
            y = self.se(y)
        if self.drop_path is not None:
            y = self.drop_path(y)
        return self.act2(self.canonizer_sum(torch.stack([shortcut, y], dim=-1)))

    @staticmethod
    def _inverted_residual(self, x):
        y = self.bn3(self.conv_pwl(self.se(self.aa(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))))))
        return self.canonizer_sum(torch.stack([x, self.drop_path(y)], dim=-1))

    @staticmethod
    def _separable(self, x):
        y = self.bn2(self.conv_pw(self.se(self.aa(self.bn1(self.conv_dw(x))))))
        return self.canonizer_sum(torch.stack([x, self.drop_path(y)], dim=-1))
