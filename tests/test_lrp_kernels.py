"""featvis::lrp_ratio (every backend) against the float64 reference, and against the float32
reference bit for bit: odd sizes, zeros (sign(0) = +1), both stabilizer signs, one and two z
terms, contiguous and channels-last layouts, outputs poisoned; mixed layouts and other dtypes
take the reference."""
import pytest
import torch
from conftest import backend_params, kernel_backends

from featvis_fast import _lrp_reference as ref
from featvis_fast import ops


def _z(shape, gen):
    z = torch.randn(shape, generator=gen)
    flat = z.view(-1)
    flat[::7] = 0.0                      # sign(0) = +1
    flat[1::11] = -1e-7                  # smaller than the stabilizer: the sign decides
    flat[2::13] = 1e-7
    return z


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("shape, channels_last", [((1,), False), ((3, 5), False), ((2, 3, 7, 11), False),
                                                   ((2, 3, 7, 11), True), ((1, 1, 1, 1), True), ((3, 1, 2, 5), True)],
                         ids=["1", "3x5", "2x3x7x11", "2x3x7x11-channels_last", "1x1x1x1-channels_last",
                              "3x1x2x5-channels_last"])
@pytest.mark.parametrize("terms", [1, 2])
def test_lrp_ratio_matches_the_reference(device, backend, shape, terms, channels_last, poison_outputs):
    gen = torch.Generator().manual_seed(hash((shape, terms, channels_last)) % 2**31)
    r, z1 = torch.randn(shape, generator=gen), _z(shape, gen)
    z2 = _z(shape, gen) if terms == 2 else None
    if channels_last:
        r, z1 = (t.contiguous(memory_format=torch.channels_last) for t in (r, z1))
        z2 = None if z2 is None else z2.contiguous(memory_format=torch.channels_last)
    for eps in (1e-6, 0.25):
        exact = ref.lrp_ratio(r.double(), z1.double(), None if z2 is None else z2.double(), eps)
        plain = ref.lrp_ratio(r, z1, z2, eps)
        out = ops.lrp_ratio(r.to(device), z1.to(device), None if z2 is None else z2.to(device), eps, backend)
        assert out.shape == r.shape and out.dtype == torch.float32
        assert out.stride() == r.stride()
        assert torch.equal(out.cpu(), plain), "the kernels round as the float32 reference does"
        assert (out.cpu().double() - exact).abs().max() <= (plain.double() - exact).abs().max()


@pytest.mark.parametrize("backend", kernel_backends("cpu"))
def test_mixed_layouts_and_other_dtypes_take_the_reference(backend):
    gen = torch.Generator().manual_seed(0)
    r, z = torch.randn(2, 3, 4, 5, generator=gen), _z((2, 3, 4, 5), gen)
    mixed = ops.lrp_ratio(r, z.contiguous(memory_format=torch.channels_last), None, 1e-6, backend)
    assert torch.equal(mixed, ref.lrp_ratio(r, z, None, 1e-6))
    half = ops.lrp_ratio(r.half(), z.half(), None, 1e-3, backend)
    assert torch.equal(half, ref.lrp_ratio(r.half(), z.half(), None, 1e-3))
    with pytest.raises(ValueError, match="one shape"):
        ops.lrp_ratio(r, z[:1], None, 1e-6, backend)


@pytest.mark.parametrize("backend", ["torch", *kernel_backends("cpu")])
def test_opcheck(backend):
    gen = torch.Generator().manual_seed(1)
    r, z1, z2 = torch.randn(2, 3, 4, 5, generator=gen), _z((2, 3, 4, 5), gen), _z((2, 3, 4, 5), gen)
    torch.library.opcheck(torch.ops.featvis.lrp_ratio.default, (r, z1, z2, 1e-6, backend))
    torch.library.opcheck(torch.ops.featvis.lrp_ratio.default, (r, z1, None, 1e-6, backend))
