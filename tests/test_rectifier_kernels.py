"""Each rectifier-rule backend against the float64 PyTorch reference: op level."""
import math

import pytest
import torch
from conftest import backend_params, kernel_backends

from featvis_fast import _rectifier_reference as ref
from featvis_fast import ops

INF = math.inf
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(1,), (32,), (33,), (1000,), (3, 5, 7, 11), (2, 7, 67, 67)]
# (lo, hi, slope): ReLU, ReLU6, Hardtanh, LeakyReLU
FORMS = {"relu": (0.0, INF, 0.0), "relu6": (0.0, 6.0, 0.0), "hardtanh": (-1.0, 1.0, 0.0), "leaky": (0.0, INF, 0.01)}
RULE_IDS = {ref.BACKPROP: "backprop", ref.DECONVNET: "deconvnet", ref.GUIDED: "guided"}


def _activations(shape, dtype, lo, hi, gen):
    x = torch.randn(shape, generator=gen) * 4
    flat = x.view(-1)
    specials = torch.tensor([lo, hi if hi != INF else 1e30, -0.0, 0.0, float("nan"), -INF, INF])
    k = min(flat.numel(), specials.numel())
    idx = torch.randperm(flat.numel(), generator=gen)[:k]
    flat[idx] = specials[:k]
    return x.to(dtype)


def _assert_close_to_f64(out, expected64, dtype, exact):
    """exact: must equal the float64 result rounded to dtype; else within one rounding of it."""
    expected = expected64.to(dtype)
    assert out.dtype == dtype and out.shape == expected.shape
    same_nan = torch.isnan(out.cpu()) == torch.isnan(expected)
    assert bool(same_nan.all()), "NaN positions differ"
    o, e = out.cpu().double().nan_to_num(0.0), expected.double().nan_to_num(0.0)
    if exact:
        assert torch.equal(o, e), f"max diff {(o - e).abs().max().item():.3g}"
    else:
        ulp = torch.finfo(dtype).eps * e.abs().clamp_min(torch.finfo(dtype).tiny)
        assert bool(((o - e).abs() <= ulp).all()), f"max diff {(o - e).abs().max().item():.3g}"


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_rectify_matches_float64_reference(device, backend, dtype, form, shape, poison_outputs):
    lo, hi, slope = FORMS[form]
    gen = torch.Generator().manual_seed(hash((shape, form, str(dtype))) % 2**31)
    x = _activations(shape, dtype, lo, hi, gen)
    y, packed = ops.rectify(x.to(device), lo, hi, slope, ref.GUIDED, backend)
    y64, packed64 = ref.rectify(x.double(), lo, hi, slope, save_mask=True)
    _assert_close_to_f64(y, y64, dtype, exact=slope == 0.0)
    assert packed.dtype == torch.int32 and packed.shape == (ref.words_for(x.numel()),)
    assert torch.equal(packed.cpu(), packed64)
    # DeconvNet saves no mask at all
    y_d, packed_d = ops.rectify(x.to(device), lo, hi, slope, ref.DECONVNET, backend)
    assert packed_d.numel() == 0
    assert torch.equal(y_d.cpu().nan_to_num(), y.cpu().nan_to_num())


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("rule", list(RULE_IDS), ids=RULE_IDS.get)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_rectify_backward_matches_float64_reference(device, backend, dtype, form, rule, shape,
                                                     poison_outputs):
    lo, hi, slope = FORMS[form]
    gen = torch.Generator().manual_seed(hash((shape, form, rule, str(dtype))) % 2**31)
    x = _activations(shape, dtype, lo, hi, gen)
    grad = (torch.randn(shape, generator=gen) * 3).to(dtype)
    grad.view(-1)[0] = 0.0
    packed = ref.rectify(x, lo, hi, slope, save_mask=True)[1]
    dx = ops.rectify_backward(grad.to(device), packed.to(device), rule, slope, False, backend)
    expected = ref.rectify_backward(grad.double(), packed, rule, slope, compute_dtype=torch.float64)
    _assert_close_to_f64(dx, expected, dtype, exact=slope == 0.0)


def test_rules_are_featvis_rules_for_relu():
    """slope 0: backprop g*m, DeconvNet g*(g>0), guided g*m*(g>0) (FeatureVis)."""
    gen = torch.Generator().manual_seed(0)
    x, g = torch.randn(1000, generator=gen), torch.randn(1000, generator=gen)
    packed = ref.pack_mask(x > 0)
    m = (x > 0).float()
    assert torch.equal(ref.rectify_backward(g, packed, ref.BACKPROP, 0.0), g * m)
    assert torch.equal(ref.rectify_backward(g, packed, ref.DECONVNET, 0.0), g * (g > 0))
    assert torch.equal(ref.rectify_backward(g, packed, ref.GUIDED, 0.0), g * m * (g > 0))


@pytest.mark.parametrize("n", [1, 5, 31, 32, 33, 64, 1000, 4097])
def test_mask_packing_round_trip(n):
    gen = torch.Generator().manual_seed(n)
    mask = torch.rand(n, generator=gen) > 0.5
    words = ref.pack_mask(mask)
    assert words.dtype == torch.int32 and words.shape == (ref.words_for(n),)
    assert torch.equal(ref.unpack_mask(words, n), mask)
    # bit i % 32 of word i // 32, LSB first: check one element by hand
    i = n - 1
    assert bool((int(words[i // 32]) >> (i % 32)) & 1) == bool(mask[i])


@pytest.mark.parametrize("device,backend", backend_params())
def test_kernel_masks_unpack_to_the_pass_through_region(device, backend, poison_outputs):
    x = torch.randn(7, 9, 13) * 5
    _, packed = ops.rectify(x.to(device), 0.0, 6.0, 0.0, ref.GUIDED, backend)
    assert torch.equal(ref.unpack_mask(packed.cpu(), x.numel()), ((x > 0) & (x < 6)).view(-1))


@pytest.mark.parametrize("device,backend", backend_params())
def test_non_contiguous_inputs(device, backend, poison_outputs):
    base = torch.randn(2, 40, 33, 6).to(device)
    x = base.permute(0, 3, 1, 2)[:, ::2]
    g = torch.randn(x.shape).to(device).transpose(2, 3).contiguous().transpose(2, 3)
    assert not x.is_contiguous() and not g.is_contiguous()
    y, packed = ops.rectify(x, 0.0, INF, 0.0, ref.GUIDED, backend)
    y_ref, packed_ref = ref.rectify(x.cpu().contiguous(), 0.0, INF, 0.0, save_mask=True)
    assert torch.equal(y.cpu(), y_ref) and torch.equal(packed.cpu(), packed_ref)
    dx = ops.rectify_backward(g, packed, ref.GUIDED, 0.0, False, backend)
    assert torch.equal(dx.cpu(), ref.rectify_backward(g.cpu().contiguous(), packed_ref, ref.GUIDED, 0.0))


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_inplace_rectify_and_its_autograd(device, backend, dtype):
    gen = torch.Generator().manual_seed(5)
    x0 = (torch.randn(3, 37, generator=gen) * 8).to(dtype).to(device)
    leaf = x0.clone().requires_grad_()
    x = leaf * 1  # a non-leaf, as inside a network
    y = ops.rectify_inplace(x, 0.0, 6.0, 0.0, ref.GUIDED, backend)
    assert y is x
    assert torch.equal(x.detach().cpu(), ref.rectify(x0.cpu(), 0.0, 6.0, 0.0, True)[0])
    g = torch.randn(3, 37, generator=gen).to(dtype).to(device)
    y.backward(g)
    m = ((x0 > 0) & (x0 < 6)).cpu()
    assert torch.equal(leaf.grad.cpu(), (g.cpu() * m * (g.cpu() > 0)).to(dtype))


@pytest.mark.parametrize("device,backend", backend_params())
def test_autograd_of_rectify_is_the_rule(device, backend):
    gen = torch.Generator().manual_seed(9)
    x = (torch.randn(4, 50, generator=gen) * 3).to(device).requires_grad_()
    g = torch.randn(4, 50, generator=gen).to(device)
    for rule in RULE_IDS:
        y, packed = ops.rectify(x, 0.0, 6.0, 0.0, rule, backend)
        (dx,) = torch.autograd.grad(y, x, g)
        mask_src = ref.pack_mask((x.detach() > 0) & (x.detach() < 6)).to(device)
        assert torch.equal(dx, ref.rectify_backward(g, mask_src, rule, 0.0).to(device)), RULE_IDS[rule]
        assert not packed.requires_grad


def test_backprop_rule_is_the_true_gradient_gradcheck():
    x = (torch.randn(3, 11, dtype=torch.float64) * 3).requires_grad_()
    x.data[(x.data.abs() < 0.05) | ((x.data - 6).abs() < 0.05)] = 1.0  # away from the kinks
    assert torch.autograd.gradcheck(lambda t: ops.rectify(t, 0.0, 6.0, 0.0, ref.BACKPROP, "torch")[0], (x,))
    assert torch.autograd.gradcheck(lambda t: ops.rectify(t, 0.0, INF, 0.2, ref.BACKPROP, "torch")[0], (x,))


@pytest.mark.parametrize("backend", [b for b in kernel_backends("cpu") if b != "triton"])
def test_opcheck(backend):
    x = torch.randn(3, 33) * 3
    g = torch.randn(3, 33)
    packed = ref.pack_mask(x > 0)
    for rule in RULE_IDS:
        torch.library.opcheck(torch.ops.featvis.rectify.default,
                              (x.clone().requires_grad_(), 0.0, 6.0, 0.0, rule, backend))
        torch.library.opcheck(torch.ops.featvis.rectify_.default, (x.clone(), 0.0, INF, 0.1, rule, backend))
        torch.library.opcheck(torch.ops.featvis.rectify_backward.default, (g, packed, rule, 0.0, False, backend))


def test_bad_rule_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown rule 7"):
        ops.rectify(torch.randn(4), 0.0, INF, 0.0, 7, "torch")


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
def test_channels_last_works_in_memory_order(device, backend, inplace, poison_outputs):
    """A channels-last input stays channels-last, the mask is packed in NHWC order, and the
    backward takes the gradient in either layout."""
    gen = torch.Generator().manual_seed(11)
    x0 = (torch.randn(2, 5, 7, 3, generator=gen) * 4).to(device)
    x = x0.contiguous(memory_format=torch.channels_last)
    nhwc = x0.permute(0, 2, 3, 1).contiguous()
    y_ref, packed_ref = ref.rectify(nhwc.cpu(), 0.0, 6.0, 0.0, save_mask=True)
    if inplace:
        leaf = x.clone().requires_grad_()
        y = ops.rectify_inplace(leaf * 1, 0.0, 6.0, 0.0, ref.GUIDED, backend)
    else:
        leaf = x.clone().requires_grad_()
        y, packed = ops.rectify(leaf, 0.0, 6.0, 0.0, ref.GUIDED, backend)
        assert torch.equal(packed.cpu(), packed_ref)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y.detach().cpu(), y_ref.permute(0, 3, 1, 2))
    g = torch.randn(x0.shape, generator=gen).to(device)  # a contiguous (NCHW) gradient
    (dx,) = torch.autograd.grad(y, leaf, g)
    m = (x0 > 0) & (x0 < 6)
    assert torch.equal(dx.cpu(), (g * m * (g > 0)).cpu())


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("rule", list(RULE_IDS), ids=RULE_IDS.get)
def test_squeeze_excitation_maps_with_channels_last_strides(device, backend, rule):
    """(B, C, 1, 1) maps laid out channels-last (squeeze-excitation blocks of MobileNetV3 and
    RegNet) are contiguous with unusual strides on the size-1 dimensions: forward, in place and
    backward all take them, with the reference's values."""
    gen = torch.Generator().manual_seed(5)
    x = (torch.randn(3, 1, 1, 37, generator=gen) * 4).permute(0, 3, 1, 2)  # as a channels-last pool gives
    assert x.is_contiguous() and x.stride() != (37, 1, 1, 1)
    g = torch.randn(3, 1, 1, 37, generator=gen).permute(0, 3, 1, 2)
    y64, packed64 = ref.rectify(x.double().contiguous(), 0.0, INF, 0.0, save_mask=rule != ref.DECONVNET)
    y, packed = ops.rectify(x.to(device), 0.0, INF, 0.0, rule, backend)
    assert torch.equal(y.cpu().double(), y64) and torch.equal(packed.cpu(), packed64)
    inplace = x.clone().to(device)
    assert torch.equal(ops.rectify_(inplace, 0.0, INF, 0.0, rule, backend).cpu(), packed64)
    assert torch.equal(inplace.cpu().double(), y64)
    dx = ops.rectify_backward(g.to(device), packed, rule, 0.0, False, backend)
    dx64 = ref.rectify_backward(g.double().contiguous(), packed64, rule, 0.0, compute_dtype=torch.float64)
    assert torch.equal(dx.cpu().double(), dx64)


_FRESH_CASES = [(shape, fmt) for shape in [(2, 3, 5, 7), (1, 4, 1, 1), (3, 1, 1, 5), (2, 1, 3, 1)]
                for fmt in (torch.contiguous_format, torch.channels_last)]
_FRESH_CASES += [((0, 3, 2, 2), torch.contiguous_format), ((2, 5), torch.contiguous_format)]


@pytest.mark.parametrize("shape,fmt", _FRESH_CASES)
def test_fresh_strides_are_the_strides_torchs_own_ops_allocate(shape, fmt):
    from featvis_fast.ops._layout import fresh_strides

    x = torch.empty(shape, memory_format=fmt)
    assert fresh_strides(x) == torch.relu(x).stride() == torch.nn.functional.batch_norm(
        x, torch.zeros(shape[1]), torch.ones(shape[1])).stride()
