"""Each perturbation backend (occlude, box_accumulate, rise_masks, apply_masks) against the
float64 PyTorch reference: odd shapes, fp32/fp16/bf16, contiguous, channels-last and
non-contiguous inputs, outputs poisoned before the kernel runs."""
import pytest
import torch
from conftest import backend_params, kernel_backends

from featvis_fast import _perturbation_reference as ref
from featvis_fast import ops

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
LAYOUTS = ["contiguous", "channels_last", "strided"]


def _images(shape, dtype, layout, gen):
    b, c, h, w = shape
    if layout == "strided":  # a non-contiguous slice of a larger tensor
        big = torch.randn(b, c + 2, h, w + 3, generator=gen).to(dtype)
        return big[:, 1:c + 1, :, 2:w + 2]
    x = torch.randn(shape, generator=gen).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def _boxes(n, planes, h, w, gen):
    """Random boxes plus the edge cases: empty, whole image, one pixel, one channel, last row/column."""
    y = torch.sort(torch.randint(0, h + 1, (n, 2), generator=gen), dim=1).values
    x = torch.sort(torch.randint(0, w + 1, (n, 2), generator=gen), dim=1).values
    c = torch.sort(torch.randint(0, planes + 1, (n, 2), generator=gen), dim=1).values
    boxes = torch.stack([y[:, 0], y[:, 1], x[:, 0], x[:, 1], c[:, 0], c[:, 1]], dim=1)
    special = torch.tensor([[0, 0, 0, 0, 0, planes], [0, h, 0, w, 0, planes], [h - 1, h, w - 1, w, 0, 1],
                            [1, h, 0, 1, planes - 1, planes]])
    return torch.cat([special, boxes]).to(torch.int32)


SHAPES = [(1, 1, 1, 1), (2, 3, 13, 17), (3, 5, 31, 9)]


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_occlude_matches_reference(device, backend, dtype, layout, shape, poison_outputs):
    gen = torch.Generator().manual_seed(hash((shape, layout, str(dtype))) % 2**31)
    x = _images(shape, dtype, layout, gen)
    fill = _images(shape, dtype, "contiguous", gen)
    boxes = _boxes(11, shape[1], shape[2], shape[3], gen)
    src = torch.randint(0, shape[0], (boxes.shape[0],), generator=gen, dtype=torch.int32)
    out = ops.occlude(x.to(device), fill.to(device), src.to(device), boxes.to(device), backend)
    expected = ref.occlude(x.double(), fill.double(), src, boxes).to(dtype)
    assert out.shape == expected.shape and out.dtype == dtype
    assert torch.equal(out.cpu(), expected), "occlusion is a copy: it must be exact"
    if layout == "channels_last" and out.dim() == 4 and shape[1] > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("planes", [1, 4])
@pytest.mark.parametrize("hw", [(1, 1), (13, 17), (40, 7)], ids=lambda s: "x".join(map(str, s)))
def test_box_accumulate_matches_reference(device, backend, planes, hw, poison_outputs):
    h, w = hw
    gen = torch.Generator().manual_seed(planes * 1000 + h * 31 + w)
    batch = 3
    boxes = _boxes(40, planes, h, w, gen)
    src = torch.randint(0, batch, (boxes.shape[0],), generator=gen, dtype=torch.int32)
    values = torch.randn(boxes.shape[0], generator=gen)
    sums, counts = ops.box_accumulate(values.to(device), src.to(device), boxes.to(device), batch, planes, h, w,
                                      backend)
    s64, c64 = ref.box_accumulate(values.double(), src, boxes, batch, planes, h, w)
    assert sums.shape == (batch, planes, h, w) and sums.dtype == torch.float32
    assert torch.equal(counts.cpu().double(), c64)
    assert torch.allclose(sums.cpu().double(), s64.double(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", kernel_backends("cpu") + ["torch"])
def test_float64_keeps_its_precision(backend):
    """float64 values, grids and masks stay float64 (the reference runs them): box sums, RISE's
    bilinear upsampling and the masked copies equal plain float64 PyTorch."""
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
    h, w, batch, planes = 11, 14, 2, 3
    boxes = _boxes(25, planes, h, w, gen)
    src = torch.randint(0, batch, (boxes.shape[0],), generator=gen, dtype=torch.int32)
    values = torch.randn(boxes.shape[0], generator=gen, dtype=torch.float64) * 1e3 + 1 / 3
    sums, counts = ops.box_accumulate(values, src, boxes, batch, planes, h, w, backend)
    expected = torch.zeros(batch, planes, h, w, dtype=torch.float64)
    for v, b, (y0, y1, x0, x1, c0, c1) in zip(values, src.tolist(), boxes.tolist()):
        expected[b, c0:c1, y0:y1, x0:x1] += v
    assert sums.dtype == counts.dtype == torch.float64
    assert torch.allclose(sums, expected, rtol=1e-14, atol=1e-11)

    cells = torch.rand(4, 3, 5, generator=gen, dtype=torch.float64)
    up_h, up_w = ref.upsampled_size(h, w, 3, 5)
    shifts = torch.tensor([[0, 0], [up_h - h, up_w - w], [1, 2], [2, 0]], dtype=torch.int32)
    masks = ops.rise_masks(cells, shifts, h, w, backend)
    up = torch.nn.functional.interpolate(cells[:, None], size=(up_h, up_w), mode="bilinear", align_corners=False)[:, 0]
    assert masks.dtype == torch.float64
    assert torch.equal(masks, torch.stack([up[n, dy:dy + h, dx:dx + w] for n, (dy, dx) in enumerate(shifts.tolist())]))

    x = torch.randn(batch, 3, h, w, generator=gen, dtype=torch.float64)
    fill = torch.randn(batch, 3, h, w, generator=gen, dtype=torch.float64)
    pick = torch.tensor([1, 0, 1, 1], dtype=torch.int32)
    copies = ops.apply_masks(x, fill, masks, pick, backend)
    m = masks[:, None]
    assert torch.allclose(copies, x[pick.long()] * m + fill[pick.long()] * (1 - m), rtol=1e-15, atol=1e-15)
    with pytest.raises(ValueError, match="float32, got torch.float64"):
        ops.apply_masks(x.float(), fill.float(), masks, pick, backend)


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("grid", [(1, 1), (7, 7), (5, 3)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("hw", [(1, 1), (32, 32), (29, 45)], ids=lambda s: "x".join(map(str, s)))
def test_rise_masks_match_reference(device, backend, grid, hw, poison_outputs):
    h, w = hw
    gen = torch.Generator().manual_seed(grid[0] * 100 + h)
    n = 6
    cells = torch.rand(n, *grid, generator=gen)
    cells[: n // 2] = (cells[: n // 2] < 0.5).float()  # RISE's binary grids, and arbitrary values
    up_h, up_w = ref.upsampled_size(h, w, *grid)
    shifts = torch.stack([torch.randint(0, up_h - h + 1, (n,), generator=gen),
                          torch.randint(0, up_w - w + 1, (n,), generator=gen)], dim=1).to(torch.int32)
    shifts[0] = torch.tensor([up_h - h, up_w - w])  # the largest shift
    masks = ops.rise_masks(cells.to(device), shifts.to(device), h, w, backend)
    expected = ref.rise_masks(cells.double(), shifts, h, w)
    assert masks.shape == (n, h, w) and masks.dtype == torch.float32
    assert torch.allclose(masks.cpu().double(), expected.double(), atol=2e-6)
    if backend == "cpp":  # torch's own upsampling inside: plain PyTorch's float32 masks, bit for bit
        assert torch.equal(masks, ref.rise_masks(cells, shifts, h, w))


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_apply_masks_matches_reference(device, backend, dtype, layout, poison_outputs):
    gen = torch.Generator().manual_seed(hash((layout, str(dtype))) % 2**31)
    shape = (3, 5, 19, 23)
    x = _images(shape, dtype, layout, gen)
    fill = _images(shape, dtype, "contiguous", gen)
    src = torch.tensor([2, 0, 0, 1, 2, 1, 0], dtype=torch.int32)
    masks = torch.rand(src.numel(), 19, 23, generator=gen)
    masks[0] = 0.0
    masks[1] = 1.0
    out = ops.apply_masks(x.to(device), fill.to(device), masks.to(device), src.to(device), backend)
    exact = ref.apply_masks(x.double(), fill.double(), masks.double(), src)
    assert out.shape == (src.numel(),) + shape[1:] and out.dtype == dtype
    o, e = out.cpu().double(), exact.to(dtype).double()
    tol = torch.finfo(dtype).eps * e.abs().clamp_min(torch.finfo(dtype).tiny) + (1e-6 if dtype == torch.float32 else 0)
    assert bool(((o - e).abs() <= tol).all()), f"max diff {(o - e).abs().max().item():.3g}"
    assert torch.equal(out[0].cpu(), fill[2]) and torch.equal(out[1].cpu(), x[0])


@pytest.mark.parametrize("backend", kernel_backends("cpu"))
def test_bad_arguments_give_clear_errors(backend):
    x = torch.randn(2, 3, 8, 8)
    src = torch.tensor([0], dtype=torch.int32)
    with pytest.raises(ValueError, match="boxes must lie inside"):
        ops.occlude(x, x, src, torch.tensor([[0, 9, 0, 8, 0, 3]], dtype=torch.int32), backend)
    with pytest.raises(ValueError, match="outside"):
        ops.occlude(x, x, torch.tensor([2], dtype=torch.int32), torch.zeros(1, 6, dtype=torch.int32), backend)
    with pytest.raises(ValueError, match="fill must match"):
        ops.occlude(x, x[:1], src, torch.zeros(1, 6, dtype=torch.int32), backend)
    with pytest.raises(ValueError, match="shifts must lie"):
        ops.rise_masks(torch.ones(1, 7, 7), torch.tensor([[100, 0]], dtype=torch.int32), 32, 32, backend)


@pytest.mark.parametrize("backend", kernel_backends("cpu"))
def test_opcheck(backend):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 10, generator=gen)
    src = torch.tensor([1, 0, 1], dtype=torch.int32)
    boxes = torch.tensor([[0, 4, 1, 5, 0, 3], [2, 9, 0, 10, 1, 2], [0, 0, 0, 0, 0, 0]], dtype=torch.int32)
    torch.library.opcheck(torch.ops.featvis.occlude.default, (x, torch.zeros_like(x), src, boxes, backend))
    acc_boxes = boxes.clone()
    acc_boxes[:, 4:] = torch.tensor([0, 1])
    torch.library.opcheck(torch.ops.featvis.box_accumulate.default,
                          (torch.randn(3, generator=gen), src, acc_boxes, 2, 1, 9, 10, backend))
    shifts = torch.tensor([[0, 1], [2, 3], [1, 0]], dtype=torch.int32)
    torch.library.opcheck(torch.ops.featvis.rise_masks.default,
                          (torch.rand(3, 4, 4, generator=gen), shifts, 9, 10, backend))
    torch.library.opcheck(torch.ops.featvis.apply_masks.default,
                          (x, torch.zeros_like(x), torch.rand(3, 9, 10, generator=gen), src, backend))
