"""Each backend of the extremal-perturbation ops (smooth_masks and its backward, blend_levels and its
backward) against the float64 PyTorch reference on fresh random inputs, odd shapes, non-contiguous
and channels-last data, with outputs poisoned before the kernels run. float32 results may err at
most twice as much as the plain float32 PyTorch computation (plus a few ulps where that is exact)."""
import pytest
import torch
from conftest import backend_params, kernel_backends

from featvis_fast import _extremal_reference as ref
from featvis_fast import ops

# (height, width, step, sigma): odd sizes, steps that do not divide them, TorchRay's default
GEOMETRIES = [(13, 17, 3, 2.0), (20, 9, 4, 5.5), (45, 38, 7, 21.0)]
TORCHRAY_DEFAULT = GEOMETRIES[-1]  # 81 taps x 49 offsets per parameter: minutes in the Triton interpreter


def _mask_cases():
    """(device, backend, geometry): every pair with every geometry, but the interpreted Triton
    backward (one numpy op per tap and offset) with the two smaller ones only."""
    cases = []
    for pair in backend_params():
        device, backend = pair.values
        for geometry in GEOMETRIES:
            if device == "cpu" and backend == "triton" and geometry == TORCHRAY_DEFAULT:
                continue
            cases.append(pytest.param(device, backend, geometry, marks=pair.marks,
                                      id=f"{pair.id}-{'x'.join(map(str, geometry))}"))
    return cases
ULPS = 4 * torch.finfo(torch.float32).eps


def _bar(plain: torch.Tensor, exact: torch.Tensor) -> float:
    scale = exact.abs().max().item()
    return max(2 * (plain.double() - exact).abs().max().item(), ULPS * max(scale, 1.0))


def _params(k, shape, gen, strided):
    p = torch.rand(k, *shape, generator=gen)
    p.view(-1)[:: 7] = 0.0   # exact zeros and ones, as the optimizer's clamp leaves them
    p.view(-1)[3:: 11] = 1.0
    p[0, 0, 0] = 1.6         # above 1: the mask's clamp becomes active somewhere
    if strided:
        wide = torch.zeros(k, shape[0], shape[1] + 3)
        wide[:, :, 1:-2] = p
        return wide[:, :, 1:-2]
    return p


@pytest.mark.parametrize("device,backend,geometry", _mask_cases())
@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
def test_smooth_masks_and_backward_match_the_reference(device, backend, geometry, strided, poison_outputs):
    h, w, step, sigma = geometry
    g = ref.mask_geometry(h, w, step, sigma)
    gen = torch.Generator().manual_seed(hash((geometry, strided)) % 2**31)
    params = _params(3, g.shape_in, gen, strided)
    w32, w64 = ref.tap_weights(g, torch.float32), ref.tap_weights(g, torch.float64)
    exact = ref.smooth_masks(params.double(), w64, g.padding, ref.COLDNESS, g.shape_out)
    plain = ref.smooth_masks(params, w32, g.padding, ref.COLDNESS, g.shape_out)
    out = ops.smooth_masks(params.to(device), w32.to(device), g.padding, ref.COLDNESS, *g.shape_out, backend)
    assert out.shape == exact.shape and out.dtype == torch.float32
    assert (out.cpu().double() - exact).abs().max().item() <= _bar(plain, exact)
    assert out.min() >= 0 and out.max() <= 1

    grad = torch.randn(3, *g.shape_out, generator=gen)
    exact = ref.smooth_masks_backward(grad.double(), params.double(), w64, g.padding, ref.COLDNESS)
    plain = ref.smooth_masks_backward(grad, params, w32, g.padding, ref.COLDNESS)
    got = ops.smooth_masks_backward(grad.to(device), params.to(device), w32.to(device), g.padding, ref.COLDNESS,
                                    backend)
    assert got.shape == params.shape
    assert (got.cpu().double() - exact).abs().max().item() <= _bar(plain, exact)
    assert exact.abs().max() > 0


def test_smooth_masks_equal_torchray_mask_generator():
    """The reference is TorchRay's MaskGenerator (float32, its own weights) to the last bit."""
    pytest.importorskip("torchray")  # installed with --no-deps by .ci/run
    import _zoo

    _zoo.torchvision_models()  # torchray imports torchvision's model schemas
    from torchray.attribution.extremal_perturbation import MaskGenerator

    gen = torch.Generator().manual_seed(5)
    for h, w, step, sigma in GEOMETRIES:
        g = ref.mask_geometry(h, w, step, sigma)
        theirs = MaskGenerator((h, w), step, sigma)
        assert list(g.shape_in) == theirs.shape_in and list(g.shape_out) == theirs.shape_out
        params = torch.rand(2, 1, *g.shape_in, generator=gen)
        cropped, full = theirs.generate(params)
        ours = ref.smooth_masks(params[:, 0], ref.tap_weights(g, torch.float32), g.padding, ref.COLDNESS, g.shape_out)
        assert torch.equal(ours, full[:, 0])
        assert torch.equal(ours[:, g.crop:g.crop + h, g.crop:g.crop + w], cropped[:, 0])


def _masks(n, h, w, levels, gen):
    m = torch.rand(n, h, w, generator=gen)
    flat = m.view(-1)
    flat[::5] = torch.randint(0, levels, (flat[::5].numel(),), generator=gen).float() / (levels - 1)  # level edges
    flat[1::13] = 1.0
    flat[2::17] = 0.0
    return m


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("shape", [(1, 2, 1, 1, 1), (2, 8, 3, 13, 17), (3, 5, 4, 9, 31)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("complement", [False, True], ids=["mask", "complement"])
@pytest.mark.parametrize("flip", [False, True], ids=["plain", "flipped"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_blend_levels_and_backward_match_the_reference(device, backend, shape, complement, flip, channels_last,
                                                       poison_outputs):
    b, levels, c, h, w = shape
    gen = torch.Generator().manual_seed(hash((shape, complement, flip, channels_last)) % 2**31)
    pyramid = torch.randn(b, levels, c, h, w, generator=gen)
    n = 2 * b + 1
    masks = _masks(n, h, w, levels, gen)
    src = torch.randint(0, b, (n,), generator=gen, dtype=torch.int32)
    exact = ref.blend_levels(pyramid.double(), masks.double(), src, complement, flip)
    plain = ref.blend_levels(pyramid, masks, src, complement, flip)
    out = ops.blend_levels(pyramid.to(device), masks.to(device), src.to(device), complement, flip, channels_last,
                           backend)
    assert out.shape == (n, c, h, w)
    if channels_last and c > 1 and h * w > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)
    assert (out.cpu().double() - exact).abs().max().item() <= _bar(plain, exact)

    grad = torch.randn(n, c, h, w, generator=gen)
    if channels_last:
        grad = grad.contiguous(memory_format=torch.channels_last)
    exact = ref.blend_levels_backward(grad.double(), pyramid.double(), masks.double(), src, complement, flip)
    plain = ref.blend_levels_backward(grad, pyramid, masks, src, complement, flip)
    got = ops.blend_levels_backward(grad.to(device), pyramid.to(device), masks.to(device), src.to(device),
                                    complement, flip, backend)
    assert got.shape == (n, h, w)
    assert (got.cpu().double() - exact).abs().max().item() <= _bar(plain, exact)


def test_blend_levels_equals_torchray_perturbation():
    pytest.importorskip("torchray")
    import _zoo

    _zoo.torchvision_models()
    from torchray.attribution.extremal_perturbation import Perturbation

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3, 29, 23, generator=gen)
    for kind in ("blur", "fade"):
        theirs = Perturbation(x, num_levels=6, max_blur=9.0, type=kind)
        ours = ref.pyramid(x, 6, kind, 9.0)[0]
        assert (ours - theirs.pyramid).abs().max() <= 1e-6
        masks = _masks(4, 29, 23, 6, gen)
        expected = theirs.apply(masks[:, None])
        got = ops.blend_levels(ours[None].contiguous(), masks, torch.zeros(4, dtype=torch.int32), False, False, False,
                               "torch")
        assert (got - expected).abs().max() <= 1e-5


def test_the_ops_refuse_mismatched_inputs():
    pyramid = torch.zeros(2, 3, 1, 5, 6)
    with pytest.raises(ValueError, match="must match the pyramid"):
        ops.blend_levels(pyramid, torch.zeros(1, 5, 5), torch.zeros(1, dtype=torch.int32), False, False, False, "torch")
    with pytest.raises(ValueError, match="outside"):
        ops.blend_levels(pyramid, torch.zeros(1, 5, 6), torch.full((1,), 2, dtype=torch.int32), False, False, False,
                         "torch")
    with pytest.raises(ValueError, match="R \\* R"):
        ops.smooth_masks(torch.zeros(1, 3, 3), torch.zeros(2, 2, 8), 1, 20.0, 5, 5, "torch")


@pytest.mark.parametrize("backend", ["torch", *kernel_backends("cpu")])
def test_opcheck(backend):
    gen = torch.Generator().manual_seed(0)
    g = ref.mask_geometry(9, 10, 3, 2.0)
    params, weights = torch.rand(2, *g.shape_in, generator=gen), ref.tap_weights(g, torch.float32)
    torch.library.opcheck(torch.ops.featvis.smooth_masks.default,
                          (params, weights, g.padding, ref.COLDNESS, *g.shape_out, backend))
    torch.library.opcheck(torch.ops.featvis.smooth_masks_backward.default,
                          (torch.randn(2, *g.shape_out, generator=gen), params, weights, g.padding, ref.COLDNESS,
                           backend))
    pyramid = torch.randn(2, 4, 3, 9, 10, generator=gen)
    masks, src = torch.rand(3, 9, 10, generator=gen), torch.tensor([1, 0, 1], dtype=torch.int32)
    for channels_last in (False, True):
        torch.library.opcheck(torch.ops.featvis.blend_levels.default,
                              (pyramid, masks, src, True, True, channels_last, backend))
    torch.library.opcheck(torch.ops.featvis.blend_levels_backward.default,
                          (torch.randn(3, 3, 9, 10, generator=gen), pyramid, masks, src, False, True, backend))
