"""featvis::gather_patches and scatter_patches (exact incremental occlusion) on every backend against
the PyTorch reference: a pure copy, so equal bit for bit (NaN and -0.0 included) in every dtype, for
odd shapes, tiles reaching past every edge of the map or lying wholly outside it, empty and
map-sized patches, non-contiguous and channels-last inputs, outputs poisoned before the kernel runs;
the reference itself against a plain loop over every element."""
import math

import pytest
import torch
from conftest import backend_params, kernel_backends

from featvis_fast import _patches_reference as ref
from featvis_fast import ops
from featvis_fast.ops._layout import channels_last

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
LAYOUTS = ["contiguous", "channels_last", "strided"]
WORDS = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _special(t: torch.Tensor) -> torch.Tensor:
    """A few values a float round trip would alter: NaN, -0.0, inf (a copy keeps their bits)."""
    flat = t.view(-1) if t.is_contiguous() else None
    if flat is not None and flat.numel() >= 3:
        flat[0], flat[1], flat[2] = float("nan"), -0.0, float("inf")
    return t


def _base(shape, dtype, layout, gen):
    b, c, h, w = shape
    if layout == "strided":  # a non-contiguous slice of a larger tensor
        big = _special(torch.randn(b, c + 2, h + 1, w + 3, generator=gen).to(dtype))
        return big[:, 1:c + 1, 1:, 2:w + 2]
    x = _special(torch.randn(shape, generator=gen).to(dtype))
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def _patches(n, c, ph, pw, dtype, strided, gen):
    if strided:  # a transposed view: stored (N, C, pw, ph)
        return _special(torch.randn(n, c, pw, ph, generator=gen).to(dtype)).transpose(2, 3)
    return _special(torch.randn(n, c, ph, pw, generator=gen).to(dtype))


def _randint(lo, hi, n, gen):
    """n ints uniform in [lo, hi] (inclusive)."""
    return torch.randint(lo, hi + 1, (n,), generator=gen)


def _corners(n, h, w, ph, pw, th, tw, placement, gen):
    """(N, 4) int32 (tile_y, tile_x, patch_y, patch_x). Patch boxes inside the map (any values where
    the patch is empty); tiles "random" (reaching past every edge), "around" the patch (Krypton's
    tiles: the patch plus a margin, cut by the map's edges), or wholly "outside" the map."""
    if ph * pw > 0:
        py, px = _randint(0, h - ph, n, gen), _randint(0, w - pw, n, gen)
    else:  # not looked at: anything, also outside the map
        py, px = _randint(-5, h + 5, n, gen), _randint(-5, w + 5, n, gen)
    if placement == "random":
        ty, tx = _randint(-th - 1, h + 1, n, gen), _randint(-tw - 1, w + 1, n, gen)
        if n >= 2:  # the four edges for sure: top-left and bottom-right corners past the map
            ty[0], tx[0], ty[1], tx[1] = -1, -1, h - th + 1, w - tw + 1
    elif placement == "around":
        ty = py - _randint(0, max(th - ph, 0), n, gen)
        tx = px - _randint(0, max(tw - pw, 0), n, gen)
    else:  # outside: above, below, left of, right of the map, in turn
        ty, tx = _randint(-2 * th - 3, h + 3, n, gen), _randint(-2 * tw - 3, w + 3, n, gen)
        side, step = torch.arange(n) % 4, _randint(0, 3, n, gen)
        ty = torch.where(side == 0, -th - step, torch.where(side == 1, h + step, ty))
        tx = torch.where(side == 2, -tw - step, torch.where(side == 3, w + step, tx))
    return torch.stack([ty, tx, py, px], dim=1).to(torch.int32)


# name: (B, C, H, W), windows N, patch (ph, pw), tile (tile_h, tile_w), placement
CASES = {
    "odd": ((2, 3, 13, 17), 7, (3, 2), (5, 7), "random"),
    "one_channel_tile_past_every_edge": ((1, 1, 7, 5), 1, (2, 3), (11, 9), "around"),
    "c17_around": ((3, 17, 11, 13), 7, (4, 4), (6, 6), "around"),
    "no_windows": ((2, 3, 5, 7), 0, (2, 2), (3, 3), "random"),
    "patch_without_rows": ((2, 3, 13, 11), 7, (0, 3), (5, 4), "random"),
    "no_patch": ((2, 5, 7, 11), 7, (0, 0), (3, 8), "random"),
    "patch_is_the_map": ((2, 3, 7, 11), 7, (7, 11), (9, 13), "random"),
    "tiles_outside": ((2, 3, 7, 5), 7, (2, 2), (3, 4), "outside"),
    "empty_tiles": ((2, 3, 7, 5), 7, (2, 2), (0, 4), "random"),
    "one_pixel_map": ((1, 3, 1, 1), 3, (1, 1), (3, 3), "random"),
}


def _inputs(case, dtype, layout, seed):
    shape, n, (ph, pw), (th, tw), placement = CASES[case]
    gen = torch.Generator().manual_seed(seed)
    base = _base(shape, dtype, layout, gen)
    patches = _patches(n, shape[1], ph, pw, dtype, layout == "strided", gen)
    src = _randint(0, shape[0] - 1, n, gen).to(torch.int32)
    corners = _corners(n, shape[2], shape[3], ph, pw, th, tw, placement, gen)
    return base, src, corners, th, tw, patches


def _assert_bitwise(out, expected):
    assert out.shape == expected.shape and out.dtype == expected.dtype
    word = WORDS[expected.element_size()]
    assert torch.equal(out.cpu().contiguous().view(word), expected.contiguous().view(word)), \
        "gather_patches is a copy: it must be exact"


def _assert_layout(out, base):
    if channels_last(base):
        assert out.is_contiguous(memory_format=torch.channels_last)
    else:
        assert out.is_contiguous()


def _oracle(base, src, corners, tile_h, tile_w, patches, pad):
    """The semantics, one element at a time."""
    n, (_, c, h, w), (ph, pw) = src.numel(), base.shape, patches.shape[2:]
    out = torch.empty(n, c, tile_h, tile_w, dtype=base.dtype)
    for k, (ty, tx, py, px) in enumerate(corners.tolist()):
        for ch in range(c):
            for i in range(tile_h):
                for j in range(tile_w):
                    y, x = ty + i, tx + j
                    if py <= y < py + ph and px <= x < px + pw:
                        out[k, ch, i, j] = patches[k, ch, y - py, x - px]
                    elif 0 <= y < h and 0 <= x < w:
                        out[k, ch, i, j] = base[src[k], ch, y, x]
                    else:
                        out[k, ch, i, j] = pad
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", ["odd", "one_channel_tile_past_every_edge", "patch_without_rows",
                                  "patch_is_the_map", "tiles_outside", "one_pixel_map"])
def test_the_reference_matches_a_loop_over_every_element(case, dtype):
    base, src, corners, th, tw, patches = _inputs(case, dtype, "strided", 1)
    for pad in (0.0, -math.inf, 1 / 3):
        out = ref.gather_patches(base, src, corners, th, tw, patches, pad)
        _assert_bitwise(out, _oracle(base, src, corners, th, tw, patches, ref.pad_value(pad, dtype)))


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_gather_patches_matches_reference(device, backend, dtype, layout, case, poison_outputs):
    base, src, corners, th, tw, patches = _inputs(case, dtype, layout, sorted(CASES).index(case) * 10
                                                  + LAYOUTS.index(layout))
    out = ops.gather_patches(base.to(device), src.to(device), corners.to(device), th, tw, patches.to(device), 1.5,
                             backend)
    _assert_bitwise(out, ref.gather_patches(base, src, corners, th, tw, patches, 1.5))
    _assert_layout(out, base)


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("pad", [0.0, 1.5, -math.inf, 1 / 3, 1e6], ids=str)
def test_every_pad_value_is_converted_like_the_reference(device, backend, dtype, pad, poison_outputs):
    """pad takes base's dtype as PyTorch converts it (1/3 and 1e6 round; 1e6 overflows float16 to inf)."""
    for case in ("odd", "tiles_outside"):
        base, src, corners, th, tw, patches = _inputs(case, dtype, "channels_last", 7)
        out = ops.gather_patches(base.to(device), src.to(device), corners.to(device), th, tw, patches.to(device), pad,
                                 backend)
        expected = ref.gather_patches(base, src, corners, th, tw, patches, pad)
        _assert_bitwise(out, expected)
        assert torch.equal(expected[0, 0, 0, 0], torch.tensor(pad, dtype=torch.float64).to(dtype))  # past the map


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_channels_last_patches_with_a_contiguous_base(device, backend, dtype, poison_outputs):
    base, src, corners, th, tw, patches = _inputs("c17_around", dtype, "contiguous", 3)
    patches = patches.contiguous(memory_format=torch.channels_last)
    out = ops.gather_patches(base.to(device), src.to(device), corners.to(device), th, tw, patches.to(device), 0.0,
                             backend)
    _assert_bitwise(out, ref.gather_patches(base, src, corners, th, tw, patches, 0.0))
    assert out.is_contiguous()


@pytest.mark.parametrize("device,backend", backend_params())
def test_krypton_sized_tiles(device, backend, poison_outputs):
    """Tiles of a patch plus a one-pixel margin (a 3x3 convolution's receptive field), channels-last."""
    gen = torch.Generator().manual_seed(11)
    base = torch.randn(2, 64, 28, 28, generator=gen).contiguous(memory_format=torch.channels_last)
    n = 40
    patches = torch.randn(n, 64, 7, 7, generator=gen)
    src = _randint(0, 1, n, gen).to(torch.int32)
    corners = _corners(n, 28, 28, 7, 7, 9, 9, "around", gen)
    corners[:, :2] = corners[:, 2:] - 1  # the margin reaches past the map for patches on its edges
    out = ops.gather_patches(base.to(device), src.to(device), corners.to(device), 9, 9, patches.to(device), 0.0,
                             backend)
    _assert_bitwise(out, ref.gather_patches(base, src, corners, 9, 9, patches, 0.0))
    _assert_layout(out, base)


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("patch", [(4, 3), (0, 3), (11, 13)], ids=lambda p: "x".join(map(str, p)))
def test_scatter_patches_pastes_into_full_maps(device, backend, dtype, layout, patch, poison_outputs):
    ph, pw = patch
    gen = torch.Generator().manual_seed(ph * 100 + pw + LAYOUTS.index(layout))
    base = _base((3, 5, 11, 13), dtype, layout, gen)
    n = 7
    patches = _patches(n, 5, ph, pw, dtype, layout == "strided", gen)
    src = _randint(0, 2, n, gen).to(torch.int32)
    corners = torch.stack([_randint(0, 11 - ph, n, gen), _randint(0, 13 - pw, n, gen)], dim=1).to(torch.int32)
    corners[0] = torch.tensor([0, 0])
    corners[1] = torch.tensor([11 - ph, 13 - pw])
    out = ops.scatter_patches(base.to(device), src.to(device), corners.to(device), patches.to(device), backend)
    expected = base[src.long()].clone()
    for k, (py, px) in enumerate(corners.tolist()):
        expected[k, :, py:py + ph, px:px + pw] = patches[k]
    _assert_bitwise(out, expected)
    _assert_layout(out, base)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=str)
def test_the_cpp_kernel_copies_every_element_size(dtype):
    """float64 runs the reference through the op, but the C++ kernel moves 8-byte words as well."""
    if "cpp" not in kernel_backends("cpu"):
        pytest.skip("the C++ extension is unavailable here")
    from featvis_fast import _extensions

    for layout in ("contiguous", "channels_last"):
        base, src, corners, th, tw, patches = _inputs("odd", dtype, layout, 5)
        cl = layout == "channels_last"
        out = torch.full((src.numel(), th, tw, 3) if cl else (src.numel(), 3, th, tw), 7.0, dtype=dtype)
        bv = base.permute(0, 2, 3, 1) if cl else base
        pv = patches.permute(0, 2, 3, 1).contiguous() if cl else patches
        _extensions.load_cpu().gather_patches(bv, src, corners, pv, -math.inf, cl, out)
        _assert_bitwise(out.permute(0, 3, 1, 2) if cl else out,
                        ref.gather_patches(base, src, corners, th, tw, patches, -math.inf))


@pytest.mark.parametrize("backend", kernel_backends("cpu"))
def test_bad_arguments_give_clear_errors(backend):
    base = torch.randn(2, 3, 8, 9)
    src = torch.tensor([1], dtype=torch.int32)
    corners = torch.tensor([[0, 0, 2, 3]], dtype=torch.int32)
    patches = torch.randn(1, 3, 4, 5)

    def call(b=base, s=src, k=corners, th=5, tw=6, p=patches):
        return ops.gather_patches(b, s, k, th, tw, p, 0.0, backend)

    call()  # the arguments above are fine
    bad = [
        (dict(b=base[0]), r"base must be \(B, C, H, W\)"),
        (dict(b=base.int(), p=patches.int()), "base must be float32, float16, bfloat16 or float64"),
        (dict(p=patches[0]), r"patches must be \(N, C, ph, pw\)"),
        (dict(p=patches.half()), "patches must match base's dtype and device"),
        (dict(p=torch.randn(1, 4, 4, 5)), "patches must have base's 3 channels"),
        (dict(s=src.long()), "src must be a 1-D int32 tensor"),
        (dict(s=src[None]), "src must be a 1-D int32 tensor"),
        (dict(s=torch.tensor([2], dtype=torch.int32)), r"src holds image indices outside \[0, 2\)"),
        (dict(s=torch.tensor([-1], dtype=torch.int32)), r"src holds image indices outside \[0, 2\)"),
        (dict(p=torch.randn(2, 3, 4, 5)), "patches holds 2 windows for 1 src entries"),
        (dict(k=corners[:, :2]), r"corners must be \(1, 4\) int32"),
        (dict(k=corners.long()), r"corners must be \(1, 4\) int32"),
        (dict(th=-1), "tile_h and tile_w must be >= 0"),
        (dict(tw=-2), "tile_h and tile_w must be >= 0"),
        (dict(k=torch.tensor([[0, 0, -1, 3]], dtype=torch.int32)), "patch boxes must lie inside the 8 x 9 map"),
        (dict(k=torch.tensor([[0, 0, 5, 3]], dtype=torch.int32)), "patch boxes must lie inside the 8 x 9 map"),
        (dict(k=torch.tensor([[0, 0, 2, -1]], dtype=torch.int32)), "patch boxes must lie inside the 8 x 9 map"),
        (dict(k=torch.tensor([[0, 0, 2, 5]], dtype=torch.int32)), "patch boxes must lie inside the 8 x 9 map"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            call(**kwargs)
    # an empty patch is never looked at: its corner may lie anywhere
    call(k=torch.tensor([[0, 0, -100, 100]], dtype=torch.int32), p=torch.randn(1, 3, 0, 5))
    with pytest.raises(ValueError, match=r"corners must be \(1, 2\) int32 \(patch_y, patch_x\)"):
        ops.scatter_patches(base, src, corners, patches, backend)
    with pytest.raises(ValueError, match="src must be a 1-D int32 tensor"):
        ops.scatter_patches(base, src.long(), corners[:, 2:], patches, backend)
    with pytest.raises(ValueError, match="patch boxes must lie inside"):
        ops.scatter_patches(base, src, torch.tensor([[5, 0]], dtype=torch.int32), patches, backend)


@pytest.mark.parametrize("backend", kernel_backends("cpu"))
def test_opcheck(backend):
    gen = torch.Generator().manual_seed(0)
    src = torch.tensor([1, 0, 1], dtype=torch.int32)
    corners = torch.tensor([[-1, -2, 0, 0], [3, 4, 5, 6], [9, 9, 2, 1]], dtype=torch.int32)
    patches = torch.randn(3, 3, 4, 4, generator=gen)
    for base in (torch.randn(2, 3, 9, 10, generator=gen),
                 torch.randn(2, 3, 9, 10, generator=gen).contiguous(memory_format=torch.channels_last)):
        torch.library.opcheck(torch.ops.featvis.gather_patches.default,
                              (base, src, corners, 6, 5, patches, -math.inf, backend))
