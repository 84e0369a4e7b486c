"""LRP-epsilon (Bach et al. 2015, as FeatureVis implements it) through the gradient machinery.

Write the relevance at every tensor a as R_a = a * g_a. For a linear layer z = W a + b the
epsilon rule R_a = a * W^T (R_z / (z + eps * sign(z))) then reads g_a = W^T (g_z * z / z_stab): the
plain backward of the layer after scaling the incoming signal by z / (z + eps * sign(z)) (sign(0)
taken as +1). Rectifiers pass relevance unchanged, which in g is the plain gradient rule. So LRP
is: backprop rule at rectifiers, `epsilon_ratio` after every conv / linear / eval-mode batch norm,
seed g = 1 at the target (relevance = the target's activation), and R_input = x * g_x.
Other layers keep their gradient: max-pooling sends relevance to the winner, average pooling and
residual additions split it in proportion to their inputs (the z-rule without epsilon).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LINEAR_FUNCS = frozenset({F.conv1d, F.conv2d, F.conv3d, F.linear, F.batch_norm})


def epsilon_factor(z: torch.Tensor, eps: float) -> torch.Tensor:
    """z / (z + eps * sign(z)), sign(0) = +1."""
    return z / (z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype))


class _EpsilonRatio(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, eps):
        ctx.save_for_backward(epsilon_factor(z, eps))
        return z.clone()  # not a view: an in-place rectifier may follow

    @staticmethod
    def backward(ctx, grad):
        (factor,) = ctx.saved_tensors
        return grad * factor, None


def epsilon_ratio(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Identity forward (a copy); backward multiplies the incoming signal by z / (z + eps * sign(z)).
    Used for linear layers the lean functions do not cover (featvis_fast.engine.lean applies
    the ratio itself, without the copy)."""
    if not (torch.is_grad_enabled() and z.requires_grad):
        return z
    return _EpsilonRatio.apply(z, eps)
