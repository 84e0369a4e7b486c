"""Plain PyTorch reference of the rectifier-rule kernels: the `torch` backend, the test oracle
and the benchmark baseline. Semantics here define what every backend computes.

A rectifier y = r(x) with pass-through mask m (FeatureVis; Springenberg et al. 2015 for guided
backprop, Zeiler & Fergus 2014 for DeconvNet):

    clamp family (ReLU, ReLU6, Hardtanh, clamp(min=0)):  y = clamp(x, lo, hi),  m = lo < x < hi
    leaky (LeakyReLU, lo = 0, hi = inf):                  y = x if x > 0 else slope * x,  m = x > 0

Backward rules, with f(m) = 1 where m else slope and d(g) = 1 where g > 0 else slope:

    BACKPROP (plain gradient)   dx = g * f(m)
    DECONVNET                   dx = g * d(g)            (no mask is saved)
    GUIDED                      dx = g * (f(m) * d(g))

With slope = 0 these are FeatureVis' rules `g*m`, `g*(g>0)` and `g*m*(g>0)`. Masks are packed
one bit per element: element i lives in bit (i % 32) of int32 word i // 32, LSB first.
"""
from __future__ import annotations

import math

import torch

from ._abi import RULE_BACKPROP as BACKPROP
from ._abi import RULE_DECONVNET as DECONVNET
from ._abi import RULE_GUIDED as GUIDED

RULES = (BACKPROP, DECONVNET, GUIDED)
_SHIFTS = torch.arange(32, dtype=torch.int64)


def words_for(n: int) -> int:
    """Number of int32 words that hold an n-element mask."""
    return (n + 31) // 32


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Boolean mask (any shape, n elements) -> (ceil(n/32),) int32, bit i % 32 of word i // 32."""
    flat = mask.reshape(-1).to(torch.int64)
    n = flat.numel()
    padded = torch.zeros(words_for(n) * 32, dtype=torch.int64, device=flat.device)
    padded[:n] = flat
    words = (padded.view(-1, 32) << _SHIFTS.to(flat.device)).sum(1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_mask(words: torch.Tensor, n: int) -> torch.Tensor:
    """(ceil(n/32),) int32 words -> (n,) bool."""
    bits = (words.to(torch.int64)[:, None] >> _SHIFTS.to(words.device)) & 1
    return bits.reshape(-1)[:n].bool()


def rectify(x: torch.Tensor, lo: float, hi: float, slope: float, save_mask: bool,
            compute_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x (any shape) -> (y shaped like x in x's dtype, packed mask (ceil(n/32),) int32 or (0,) when
    save_mask is False). NaN passes through to y with mask bit 0."""
    if compute_dtype is None:  # like the kernels: fp32 arithmetic for fp16/bf16
        compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    v = x.to(compute_dtype)
    if slope != 0.0:
        y = torch.where(v > lo, v, v * slope)
    else:
        y = torch.clamp(v, min=lo, max=None if math.isinf(hi) else hi)
    mask = (v > lo) & (v < hi)
    packed = pack_mask(mask) if save_mask else torch.zeros(0, dtype=torch.int32, device=x.device)
    return y.to(x.dtype), packed


def rectify_backward(grad: torch.Tensor, packed: torch.Tensor, rule: int, slope: float,
                     compute_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """grad (any shape, n elements), packed (ceil(n/32),) int32 -> dx shaped and typed like grad."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule}; expected 0 (backprop), 1 (deconvnet) or 2 (guided)")
    g = grad.to(compute_dtype)
    one = torch.ones((), dtype=compute_dtype, device=grad.device)
    factor = torch.ones_like(g)
    if rule != DECONVNET:
        m = unpack_mask(packed, grad.numel()).view(grad.shape)
        factor = torch.where(m, one, one * slope)
    if rule != BACKPROP:
        factor = factor * torch.where(g > 0, one, one * slope)
    return (g * factor).to(grad.dtype)
