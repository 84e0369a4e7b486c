"""`featvis::ascent_step`: the fused gradient-ascent step of the reconstruction family (semantics:
featvis_fast._ascent_reference). One pass per step reads the image, the objective's gradient (of
the previous jittered crop), the optimizer state, and writes the next image, the next state and
the next step's jittered crop. The per-image gradient scale (normalization) is one reduction
before it. Backends: C++ CPU, Triton, CUDA, PyTorch reference; float64 always runs the reference.
"""
from __future__ import annotations

import torch

from .. import _abi
from .. import _ascent_reference as ref
from . import _registry
from ._registry import Kernels

OPTIMIZER_CODES = {"sgd": _abi.OPTIMIZER_SGD, "adam": _abi.OPTIMIZER_ADAM, "nesterov": _abi.OPTIMIZER_NESTEROV}


KERNELS = Kernels("ascent", ascent_step="ascent_step_triton")


def _check(x, grad_crop, offsets, m, v, next_offsets, optimizer, crop_h, crop_w):
    if x.dim() != 4:
        raise ValueError(f"x must be (N, C, H, W), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    if grad_crop.dim() != 4 or grad_crop.shape[:2] != (n, c) or grad_crop.shape[2] > h or grad_crop.shape[3] > w:
        raise ValueError(f"grad_crop must be (N, C, h <= H, w <= W) for x {tuple(x.shape)}, "
                         f"got {tuple(grad_crop.shape)}")
    for name, t, size in (("offsets", offsets, grad_crop.shape[2:]), ("next_offsets", next_offsets, (crop_h, crop_w))):
        if t.shape != (n, 2) or t.dtype != torch.int32:
            raise ValueError(f"{name} must be ({n}, 2) int32, got {t.dtype} {tuple(t.shape)}")
        if n and (int(t.min()) < 0 or int(t[:, 0].max()) > h - size[0] or int(t[:, 1].max()) > w - size[1]):
            raise ValueError(f"{name} put a {tuple(size)} crop outside the {h}x{w} image")
    state = torch.float64 if x.dtype == torch.float64 else torch.float32
    if m.shape != x.shape or m.dtype != state or (optimizer == "adam" and (v is None or v.shape != x.shape
                                                                            or v.dtype != state)):
        raise ValueError(f"optimizer state must be {state} tensors shaped like x {tuple(x.shape)}")
    if not (0 < crop_h <= h and 0 < crop_w <= w):
        raise ValueError(f"the crop size ({crop_h}, {crop_w}) must fit the {h}x{w} image")


@torch.library.custom_op("featvis::ascent_step", mutates_args=())
def ascent_step(x: torch.Tensor, grad_crop: torch.Tensor, offsets: torch.Tensor, m: torch.Tensor,
                v: torch.Tensor | None, next_offsets: torch.Tensor, step: int, lr: float, optimizer: str,
                momentum: float, beta1: float, beta2: float, eps: float, normalize: bool, l1: float, l2: float,
                lp: float, p: float, tv: float, beta: float, tv_eps: float, clip_lo: float, clip_hi: float,
                crop_h: int, crop_w: int, backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                 torch.Tensor]:
    """-> (x, m, v (empty for SGD and Nesterov), next jittered crop (N, C, crop_h, crop_w)).
    clip_lo > clip_hi: no clipping."""
    if optimizer not in OPTIMIZER_CODES:
        raise ValueError(f"optimizer must be one of {tuple(OPTIMIZER_CODES)}, got {optimizer!r}")
    _check(x, grad_crop, offsets, m, v, next_offsets, optimizer, crop_h, crop_w)
    regs = ref.Regularizers(l1=l1, l2=l2, lp=lp, p=p, tv=tv, beta=beta, tv_eps=tv_eps)
    clip = (clip_lo, clip_hi) if clip_lo <= clip_hi else None
    module = KERNELS.for_call(backend, x.dtype)
    if module is None:
        new, m2, v2, nxt = ref.ascent_step(x, grad_crop, offsets, m, v, step=step, lr=lr, optimizer=optimizer,
                                           momentum=momentum, betas=(beta1, beta2), eps=eps, normalize=normalize,
                                           regularizers=regs, clip=clip, next_offsets=next_offsets,
                                           crop_size=(crop_h, crop_w))
        return new, m2, (v2 if v2 is not None else m2.new_empty(0)), nxt.contiguous()
    g = grad_crop.float().contiguous()
    n = x.shape[0]
    scale = ((1.0 / (g.abs().sum(dim=(1, 2, 3)) / (x[0].numel()) + 1e-8)) if normalize
             else torch.ones(n, device=x.device))
    out = _registry.empty(tuple(x.shape), x.dtype, x.device)
    m_out = _registry.empty(tuple(x.shape), torch.float32, x.device)
    v_out = _registry.empty(tuple(x.shape) if optimizer == "adam" else (0,), torch.float32, x.device)
    nxt = _registry.empty((n, x.shape[1], crop_h, crop_w), x.dtype, x.device)
    v_in = v.contiguous() if v is not None else m.new_empty(0)
    module.ascent_step(x.contiguous(), g, offsets.contiguous(), scale.float().contiguous(), m.contiguous(), v_in,
                       next_offsets.contiguous(), int(step), float(lr), OPTIMIZER_CODES[optimizer], float(momentum),
                       float(beta1), float(beta2), float(eps), float(l1), float(l2), float(lp), float(p), float(tv),
                       float(beta), float(tv_eps), float(clip_lo), float(clip_hi), out, m_out, v_out, nxt)
    return out, m_out, v_out, nxt


@ascent_step.register_fake
def _(x, grad_crop, offsets, m, v, next_offsets, step, lr, optimizer, momentum, beta1, beta2, eps, normalize, l1,
      l2, lp, p, tv, beta, tv_eps, clip_lo, clip_hi, crop_h, crop_w, backend):
    state = torch.float64 if x.dtype == torch.float64 else torch.float32
    v_shape = tuple(x.shape) if optimizer == "adam" else (0,)
    return (torch.empty_like(x), x.new_empty(x.shape, dtype=state), x.new_empty(v_shape, dtype=state),
            x.new_empty((x.shape[0], x.shape[1], crop_h, crop_w)))
