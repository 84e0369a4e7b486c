"""Each backend of featvis::dissect_tally against the PyTorch reference (featvis_fast._dissection_reference):
exact equality of the three int64 tallies on fresh random inputs. Odd sizes (label maps larger and smaller
than the activation maps), U and K of 1 and primes, unannotated concepts, all-true / all-false labels,
thresholds at +-inf and at the exact value of an upsampled pixel (a single rounding difference in the
float64 interpolation, e.g. an FMA, flips that pixel), non-finite activations, non-contiguous inputs,
float16 / bfloat16 activations, outputs poisoned before the kernel runs, opcheck and argument errors."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import backend_params, kernel_backends

from featvis_fast import _dissection_reference as ref
from featvis_fast import ops
from featvis_fast.ops import _registry, dissection

POISON = 0x5555555555555555


@pytest.fixture
def poison_outputs(monkeypatch):
    """Kernel outputs start as 0x5555... so any count a kernel leaves unwritten (or adds to) shows."""
    def poisoned(shape, dtype, device):
        t = torch.empty(shape, dtype=dtype, device=device)
        return t.fill_(POISON if dtype == torch.int64 else 0x55)

    monkeypatch.setattr(_registry, "empty", poisoned)


def _thresholds(acts: torch.Tensor, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
    """(U,) float64: for half the units the exact value of one random upsampled pixel of the unit (that
    pixel must then stay off, its equals too), quantiles 0.8 and 0.995 (sparse masks) for the others, the
    last two units -inf and +inf when U >= 6."""
    b, u = acts.shape[:2]
    if b * u == 0:
        return torch.zeros(u, dtype=torch.float64)
    flat = ref.upsample(acts, height, width).transpose(0, 1).reshape(u, -1)
    idx = torch.randint(0, flat.shape[1], (u, 1), generator=gen)
    thr = flat.gather(1, idx)[:, 0].clone()
    finite = torch.where(flat.isfinite(), flat, torch.zeros((), dtype=torch.float64))
    for first, q in ((1, 0.8), (3, 0.995)):
        if u > first:
            thr[first::4] = torch.quantile(finite[first::4], q, dim=1)
    if u >= 6:
        thr[-2:] = torch.tensor([float("-inf"), float("inf")], dtype=torch.float64)
    return thr.contiguous()


def _inputs(shape, seed, dtype=torch.float32):
    b, u, h, w, k, height, width = shape
    gen = torch.Generator().manual_seed(seed)
    acts = torch.randn(b, u, h, w, generator=gen).to(dtype)
    labels = torch.rand(b, k, height, width, generator=gen) < torch.rand(b, k, 1, 1, generator=gen)
    annotated = torch.rand(b, k, generator=gen) < 0.75
    if b and k:
        labels[0, 0] = True  # a whole-image concept
        labels[-1, -1] = False  # an empty one
        annotated[0, 0] = True
        annotated[-1] = False  # an image with nothing annotated
        if b > 2:
            annotated[1] = True
    return acts, _thresholds(acts, height, width, gen), labels, annotated


def _expect(acts, thresholds, labels, annotated):
    return ref.dissect_tally(acts.cpu(), thresholds.cpu(), labels.cpu().bool(), annotated.cpu().bool())


def _assert_equal(out, expected):
    names = ("intersection", "unit_area", "label_area")
    for name, o, e in zip(names, out, expected):
        assert o.dtype == torch.int64 and o.shape == e.shape, f"{name}: {o.dtype} {tuple(o.shape)}"
        o = o.cpu()
        assert torch.equal(o, e), f"{name} differs at {(o != e).nonzero()[:5].tolist()}: {o[o != e][:5].tolist()} " \
                                  f"vs {e[o != e][:5].tolist()}"


# (B, U, h, w, K, H, W)
SHAPES = [
    (2, 1, 1, 1, 1, 1, 1),
    (3, 5, 3, 5, 7, 13, 11),
    (2, 7, 7, 7, 3, 28, 28),
    (3, 2, 7, 7, 5, 5, 3),      # label maps smaller than the activation maps
    (2, 3, 14, 14, 2, 1, 1),
    (2, 11, 5, 3, 13, 13, 11),
    (1, 3, 17, 19, 2, 70, 67),  # wide source rows, several words per row
    (2, 4, 7, 7, 3, 112, 112),  # a sparse mask (unit 3: top 0.5%)
]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_dissect_tally_matches_reference(device, backend, dtype, shape, poison_outputs):
    acts, thr, labels, annotated = _inputs(shape, seed=sum(shape) * 7 + len(str(dtype)), dtype=dtype)
    out = ops.dissect_tally(acts.to(device), thr.to(device), labels.to(device), annotated.to(device), backend)
    _assert_equal(out, _expect(acts, thr, labels, annotated))


@pytest.mark.parametrize("device,backend", backend_params())
def test_non_contiguous_inputs(device, backend, poison_outputs):
    gen = torch.Generator().manual_seed(5)
    b, u, h, w, k, height, width = 3, 5, 6, 7, 4, 17, 19
    big = torch.randn(b, h, u + 2, w + 1, generator=gen)
    acts = big.permute(0, 2, 1, 3)[:, 1:u + 1, :, :w]  # (b, u, h, w), strided
    labels = (torch.rand(b, k + 3, width, height, generator=gen) < 0.4).transpose(2, 3)[:, 1:k + 1]
    annotated = (torch.rand(k, b, generator=gen) < 0.7).T
    thr = _thresholds(acts, height, width, gen)
    thr = torch.stack([thr, thr], dim=1)[:, 0]  # strided too
    assert not (acts.is_contiguous() or labels.is_contiguous() or annotated.is_contiguous() or thr.is_contiguous())
    dev = lambda t: t.to(device)  # noqa: E731  (a CPU tensor keeps its strides)
    out = ops.dissect_tally(dev(acts), dev(thr), dev(labels), dev(annotated), backend)
    _assert_equal(out, _expect(acts, thr, labels, annotated))


@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")  # inf * 0
@pytest.mark.parametrize("device,backend", backend_params())
def test_threshold_edges_and_non_finite_activations(device, backend, poison_outputs):
    """Thresholds at each unit's exact source maximum / minimum and just past them (the C++ kernel's
    whole-unit shortcuts), +-inf, and NaN / +-inf activations (NaN compares false, inf * 0 is NaN)."""
    gen = torch.Generator().manual_seed(11)
    b, u, h, w, k, height, width = 3, 8, 5, 6, 3, 23, 21
    acts = torch.randn(b, u, h, w, generator=gen)
    per_unit = acts.transpose(0, 1).reshape(u, -1).double()
    hi, lo = per_unit.max(dim=1).values, per_unit.min(dim=1).values
    thr = torch.stack([hi, lo, hi + 1e-9 * (hi.abs() + 1), lo - 1e-9 * (lo.abs() + 1), hi, lo,
                       torch.full_like(hi, float("inf")), torch.full_like(hi, float("-inf"))], dim=1)
    thr = thr[torch.arange(u), torch.arange(u) % 8].contiguous()
    acts[0, 4, 1, 2] = float("nan")
    acts[1, 5, 0, 0] = float("inf")
    acts[2, 4, 4, 5] = float("-inf")
    acts[1, 6, 2, 3] = float("nan")
    acts[2, 7, 0, 1] = float("inf")
    labels = torch.rand(b, k, height, width, generator=gen) < 0.5
    annotated = torch.ones(b, k, dtype=torch.bool)
    out = ops.dissect_tally(acts.to(device), thr.to(device), labels.to(device), annotated.to(device), backend)
    _assert_equal(out, _expect(acts, thr, labels, annotated))


@pytest.mark.parametrize("device,backend", backend_params())
def test_smooth_sparse_activations(device, backend, poison_outputs):
    """Spatially smooth ReLU maps (as a CNN's): large areas below / above the threshold, the case the C++
    kernel's skipped 8-pixel groups are for, with thresholds at exact pixel values and top quantiles."""
    gen = torch.Generator().manual_seed(8)
    b, u, k = 3, 9, 4
    coarse = torch.randn(b * u, 1, 4, 5, generator=gen)
    acts = torch.relu(torch.nn.functional.interpolate(coarse, size=(13, 15), mode="bicubic", align_corners=False))
    acts = acts.view(b, u, 13, 15)
    height, width = 61, 75
    thr = _thresholds(acts, height, width, gen)
    labels = torch.rand(b, k, height, width, generator=gen) < 0.3
    annotated = torch.rand(b, k, generator=gen) < 0.8
    out = ops.dissect_tally(acts.to(device), thr.to(device), labels.to(device), annotated.to(device), backend)
    _assert_equal(out, _expect(acts, thr, labels, annotated))


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("shape", [(0, 3, 3, 3, 2, 5, 5), (2, 0, 3, 3, 2, 5, 5), (2, 3, 3, 3, 0, 5, 5),
                                   (0, 0, 1, 1, 0, 1, 1)], ids=lambda s: "x".join(map(str, s)))
def test_empty_batch_units_or_concepts(device, backend, shape, poison_outputs):
    acts, thr, labels, annotated = _inputs(shape, seed=3)
    out = ops.dissect_tally(acts.to(device), thr.to(device), labels.to(device), annotated.to(device), backend)
    _assert_equal(out, _expect(acts, thr, labels, annotated))
    if shape[1] == 0 and shape[0]:
        assert out[2].sum() > 0, "label_area counts even without units"


@pytest.mark.parametrize("device,backend", backend_params())
def test_uint8_masks_and_float64_activations(device, backend, poison_outputs):
    """uint8 labels / annotated count nonzero as set (255 and 2 too); float64 activations run the reference."""
    acts, thr, labels, annotated = _inputs((2, 3, 4, 4, 3, 9, 10), seed=21)
    gen = torch.Generator().manual_seed(2)
    labels8 = labels.to(torch.uint8) * torch.randint(1, 256, labels.shape, generator=gen, dtype=torch.uint8)
    annotated8 = annotated.to(torch.uint8) * 2
    expected = _expect(acts, thr, labels, annotated)
    dev = lambda t: t.to(device)  # noqa: E731
    _assert_equal(ops.dissect_tally(dev(acts), dev(thr), dev(labels8), dev(annotated8), backend), expected)
    _assert_equal(ops.dissect_tally(dev(acts.double()), dev(thr), dev(labels), dev(annotated), backend), expected)
    _assert_equal(ops.dissect_tally(dev(acts), dev(thr.float().double()), dev(labels), dev(annotated), backend),
                  _expect(acts, thr.float().double(), labels, annotated))


@pytest.mark.parametrize("backend", kernel_backends("cpu"))
def test_bad_arguments_give_clear_errors(backend):
    acts, thr, labels, annotated = _inputs((2, 3, 4, 4, 5, 8, 8), seed=0)
    call = lambda *a: ops.dissect_tally(*a, backend)  # noqa: E731
    with pytest.raises(ValueError, match=r"thresholds must be \(3,\)"):
        call(acts, thr[:2], labels, annotated)
    with pytest.raises(ValueError, match=r"thresholds must be \(3,\)"):
        call(acts, torch.zeros(3, dtype=torch.int64), labels, annotated)
    with pytest.raises(ValueError, match="labels hold 1 images but acts hold 2"):
        call(acts, thr, labels[:1], annotated[:1])
    with pytest.raises(ValueError, match=r"annotated must be \(B, K\) = \(2, 5\)"):
        call(acts, thr, labels, annotated[:, :4])
    with pytest.raises(ValueError, match=r"annotated must be \(B, K\) = \(2, 5\)"):
        call(acts, thr, labels, annotated.float())
    with pytest.raises(ValueError, match="labels must be"):
        call(acts, thr, labels.float(), annotated)
    with pytest.raises(ValueError, match="labels must be"):
        call(acts, thr, labels[0], annotated)
    with pytest.raises(ValueError, match="acts must be"):
        call(acts[0], thr, labels, annotated)
    with pytest.raises(ValueError, match="acts must be"):
        call(acts.to(torch.int32), thr, labels, annotated)
    with pytest.raises(ValueError, match="at least 1x1"):
        call(acts[:, :, :0], thr, labels, annotated)
    with pytest.raises(ValueError, match="backend must be"):
        ops.dissect_tally(acts, thr, labels, annotated, "fortran")


@pytest.mark.parametrize("backend", kernel_backends("cpu"))
def test_opcheck(backend):
    acts, thr, labels, annotated = _inputs((2, 3, 4, 5, 3, 9, 7), seed=1)
    torch.library.opcheck(torch.ops.featvis.dissect_tally.default, (acts, thr, labels, annotated, backend))
    torch.library.opcheck(torch.ops.featvis.dissect_tally.default,
                          (acts.half(), thr, labels.to(torch.uint8), annotated, backend))


def test_exported_and_registered():
    assert ops.dissect_tally is dissection.dissect_tally
    assert hasattr(torch.ops.featvis, "dissect_tally")


def test_triton_kernel_compiles_for_sm90_without_fma():
    """The Triton kernel builds for an H100-class GPU (sm_90) without a GPU here, with no fused float64
    multiply-add in its PTX (the interpreter tests cannot see contraction) and int64 reductions."""
    code = textwrap.dedent("""
        import sys
        try:
            from triton.backends.compiler import GPUTarget
            from triton.compiler import ASTSource
            import triton
        except Exception as exc:
            print("NO_BACKEND", exc); sys.exit(0)
        from featvis_fast.kernels.dissection import _tally_kernel
        names = ["acts_ptr", "thr_ptr", "labels_ptr", "ann_ptr", "y0_ptr", "y1_ptr", "wy0_ptr", "wy1_ptr", "x0_ptr",
                 "x1_ptr", "wx0_ptr", "wx1_ptr", "inter_ptr", "uarea_ptr", "larea_ptr", "U", "K", "src_w",
                 "src_plane", "W", "HW", "BLOCK_U", "BLOCK_P"]
        types = ["*fp32", "*fp64", "*u8", "*u8", "*i32", "*i32", "*fp64", "*fp64", "*i32", "*i32", "*fp64", "*fp64",
                 "*i64", "*i64", "*i64", "i32", "i32", "i32", "i32", "i32", "i32", "constexpr", "constexpr"]
        src = ASTSource(fn=_tally_kernel, signature=dict(zip(names, types)), constexprs={"BLOCK_U": 16, "BLOCK_P": 256})
        try:
            kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                                    options={"enable_fp_fusion": False, "num_warps": 4})
        except FileNotFoundError as exc:  # no ptxas shipped
            print("NO_BACKEND", exc); sys.exit(0)
        ptx = kernel.asm["ptx"]
        print("FMA" if "fma.rn.f64" in ptx else "NOFMA", "RED64" if "add.u64" in ptx else "NORED64")
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if "NO_BACKEND" in proc.stdout:
        pytest.skip(f"Triton cannot compile for CUDA here: {proc.stdout.strip()}")
    assert "NOFMA RED64" in proc.stdout, proc.stdout
