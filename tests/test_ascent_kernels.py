"""Each backend of featvis::ascent_step against the float64 reference (featvis_fast._ascent_reference):
odd sizes, fp32/fp16/bf16 images, SGD, Nesterov and Adam, every regularizer, normalization, clipping,
outputs poisoned before the kernel runs."""
import pytest
import torch
from conftest import backend_params, kernel_backends

from featvis_fast import _ascent_reference as ref
from featvis_fast.ops.ascent import ascent_step

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
CASES = {
    "sgd": dict(optimizer="sgd", normalize=False, l1=0.0, l2=0.0, lp=0.0, tv=0.0, clip=None),
    "sgd-all": dict(optimizer="sgd", normalize=True, l1=0.01, l2=0.02, lp=0.001, tv=0.05, clip=(-1.5, 1.5)),
    "nesterov-all": dict(optimizer="nesterov", normalize=True, l1=0.01, l2=0.02, lp=0.001, tv=0.05, clip=(-1.5, 1.5)),
    "adam-all": dict(optimizer="adam", normalize=True, l1=0.01, l2=0.02, lp=0.001, tv=0.05, clip=(-1.5, 1.5)),
    "adam-tv1": dict(optimizer="adam", normalize=False, l1=0.0, l2=0.0, lp=0.0, tv=0.2, clip=None, beta=1.0),
}
SHAPES = [(1, 1, 1, 1, 1, 1), (2, 3, 9, 11, 7, 8), (3, 3, 16, 13, 12, 13)]  # N, C, H, W, crop h, crop w


def _inputs(shape, dtype, optimizer, seed):
    n, c, h, w, ch, cw = shape
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, h, w, generator=gen)).to(dtype)
    g = torch.randn(n, c, ch, cw, generator=gen)
    offsets = torch.stack([torch.randint(0, h - ch + 1, (n,), generator=gen),
                           torch.randint(0, w - cw + 1, (n,), generator=gen)], 1).to(torch.int32)
    nxt = torch.stack([torch.randint(0, h - ch + 1, (n,), generator=gen),
                       torch.randint(0, w - cw + 1, (n,), generator=gen)], 1).to(torch.int32)
    m = torch.randn(n, c, h, w, generator=gen) * 0.1
    v = torch.rand(n, c, h, w, generator=gen) * 0.1 if optimizer == "adam" else None
    return x, g, offsets, nxt, m, v


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_ascent_step_matches_float64_reference(device, backend, dtype, case, shape, poison_outputs):
    k = CASES[case]
    x, g, offsets, nxt, m, v = _inputs(shape, dtype, k["optimizer"], seed=sum(shape) + len(case))
    lo, hi = k["clip"] if k["clip"] else (1.0, -1.0)
    args = dict(step=3, lr=0.05, optimizer=k["optimizer"], momentum=0.9, beta1=0.9, beta2=0.99, eps=1e-8,
                normalize=k["normalize"], l1=k["l1"], l2=k["l2"], lp=k["lp"], p=6.0, tv=k["tv"],
                beta=k.get("beta", 2.0), tv_eps=1e-8, clip_lo=lo, clip_hi=hi, crop_h=shape[4], crop_w=shape[5])
    dev = lambda t: None if t is None else t.to(device)  # noqa: E731
    out, m2, v2, crop = ascent_step(dev(x), dev(g), dev(offsets), dev(m), dev(v), dev(nxt), backend=backend, **args)
    r = ref.Regularizers(l1=k["l1"], l2=k["l2"], lp=k["lp"], p=6.0, tv=k["tv"], beta=k.get("beta", 2.0))
    e_out, e_m, e_v, _ = ref.ascent_step(x.double(), g.double(), offsets, m.double(),
                                         None if v is None else v.double(), step=3, lr=0.05,
                                         optimizer=k["optimizer"], momentum=0.9, betas=(0.9, 0.99), eps=1e-8,
                                         normalize=k["normalize"], regularizers=r, clip=k["clip"])
    assert out.dtype == dtype and out.shape == x.shape and m2.dtype == torch.float32
    assert torch.allclose(m2.cpu().double(), e_m, rtol=1e-5, atol=1e-5)
    if v is not None:
        assert torch.allclose(v2.cpu().double(), e_v, rtol=1e-5, atol=1e-6)
    exact = e_out.to(dtype).double()
    tol = torch.finfo(dtype).eps * exact.abs() + (2e-5 if dtype == torch.float32 else torch.finfo(dtype).eps)
    assert bool(((out.cpu().double() - exact).abs() <= tol).all()), (
        f"max diff {(out.cpu().double() - exact).abs().max()}")
    assert torch.equal(crop.cpu(), ref.crop(out.cpu(), nxt, shape[4], shape[5])), "the crop is of this step's image"


@pytest.mark.parametrize("backend", kernel_backends("cpu"))
def test_bad_arguments_give_clear_errors(backend):
    x, g, offsets, nxt, m, _ = _inputs((2, 3, 9, 11, 7, 8), torch.float32, "sgd", 0)
    base = dict(step=1, lr=0.1, momentum=0.9, beta1=0.9, beta2=0.99, eps=1e-8, normalize=False, l1=0.0, l2=0.0,
                lp=0.0, p=6.0, tv=0.0, beta=2.0, tv_eps=1e-8, clip_lo=1.0, clip_hi=-1.0, crop_h=7, crop_w=8,
                backend=backend)
    with pytest.raises(ValueError, match="optimizer must be"):
        ascent_step(x, g, offsets, m, None, nxt, optimizer="rmsprop", **base)
    with pytest.raises(ValueError, match="optimizer state"):
        ascent_step(x, g, offsets, m, None, nxt, optimizer="adam", **base)
    out, _, v, _ = ascent_step(x, g, offsets, m, None, nxt, optimizer="nesterov", **base)
    assert v.numel() == 0 and torch.isfinite(out).all(), "Nesterov keeps no second moment"
    with pytest.raises(ValueError, match="outside"):
        ascent_step(x, g, torch.tensor([[5, 0], [0, 0]], dtype=torch.int32), m, None, nxt, optimizer="sgd", **base)
