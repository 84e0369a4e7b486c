"""Each similarity backend against the float64 PyTorch reference: op level."""
import pytest
import torch
from _oracle import assert_similarity_close
from conftest import backend_params

from featvis_fast import _reference, ops
from featvis_fast.render import colormap

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(1, 1, 1), (1, 97, 2), (17, 97, 3), (3, 1009, 1), (130, 127, 9), (64, 4099, 20)]
METRICS = [_reference.INNER, _reference.ANGULAR, _reference.EUCLIDEAN]


def _inputs(C, N, Q, dtype, metric, device, gen):
    f = torch.randn(C, N, generator=gen) * 3
    if metric == _reference.ANGULAR:  # angular runs on unit vectors
        f = f / f.norm(dim=0, keepdim=True)
    f = f.to(dtype)
    cols = torch.randint(0, N, (Q,), generator=gen)
    q = f[:, cols].t().contiguous()
    if Q > 1:  # also a query that is not a pixel of the map
        q[-1] = (torch.randn(C, generator=gen) / max(1, C) ** 0.5).to(dtype)
    return f.to(device), q.to(device)


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("metric", METRICS, ids=["inner", "angular", "euclidean"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "C%d-N%d-Q%d" % s)
def test_pixel_similarity_matches_float64_reference(device, backend, dtype, metric, shape, poison_outputs):
    gen = torch.Generator().manual_seed(hash((shape, metric, str(dtype))) % 2**31)
    f, q = _inputs(*shape, dtype, metric, device, gen)
    sim, minmax = ops.pixel_similarity(f, q, metric, None, None, backend)
    assert_similarity_close(sim, f.cpu(), q.cpu(), metric)
    assert minmax.shape == (shape[2], 2)
    assert torch.equal(minmax[:, 0], sim.amin(1)) and torch.equal(minmax[:, 1], sim.amax(1))


@pytest.mark.parametrize("device,backend", backend_params())
def test_pixel_similarity_non_contiguous_inputs(device, backend, poison_outputs):
    gen = torch.Generator().manual_seed(7)
    base = torch.randn(2 * 33, 211, generator=gen).to(device)
    f = base[::2]                      # stride-2 rows
    q = base[:, :5].t()[:, ::2]        # transposed, strided
    assert not f.is_contiguous() and not q.is_contiguous()
    sim, _ = ops.pixel_similarity(f, q, _reference.INNER, None, None, backend)
    assert_similarity_close(sim, f.cpu().contiguous(), q.cpu().contiguous(), _reference.INNER)


@pytest.mark.parametrize("device,backend", backend_params())
def test_zero_vectors_give_zero_angular_and_inner(device, backend, poison_outputs):
    f = torch.randn(16, 50)
    f = f / f.norm(dim=0, keepdim=True)
    f[:, [3, 17, 49]] = 0
    q = f[:, [3, 5]].t().contiguous()
    for metric in (_reference.INNER, _reference.ANGULAR):
        sim, _ = ops.pixel_similarity(f.to(device), q.to(device), metric, None, None, backend)
        sim = sim.cpu()
        assert torch.all(sim[0] == 0), "a zero query vector must give 0 everywhere"
        assert torch.all(sim[1, [3, 17, 49]] == 0), "zero pixels must give 0"
        assert sim[1, 5] > 0.99


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("name", ["fire", "viridis", "gray"])
def test_colorize_matches_reference_exactly(device, backend, name, poison_outputs):
    gen = torch.Generator().manual_seed(3)
    sim = torch.randn(4, 1031, generator=gen)
    sim[0, :5] = torch.tensor([float("nan"), -1e9, 1e9, 0.0, 0.5])
    lo = torch.tensor([-0.5, -3.0, 1.0, 0.25])
    hi = torch.tensor([0.5, 3.0, 1.0, 0.2500001])   # row 2: empty range -> index 0
    # exact stretch endpoints and the 0.5-rounding boundaries are the hard cases
    sim[1, :256] = lo[1] + (hi[1] - lo[1]) * (torch.arange(256) + 0.5) / 255
    lut = colormap(name)
    ref = _reference.colorize(sim, lo, hi, lut)
    out = ops.colorize(sim.to(device), lo.to(device), hi.to(device), lut.to(device), backend).cpu()
    assert out.shape == (4, 1031, 4) and out.dtype == torch.uint8
    assert torch.equal(out, ref)
    assert torch.equal(out[2], lut[0].expand(1031, 4))


@pytest.mark.parametrize("device,backend", backend_params())
def test_opcheck(device, backend):
    f = torch.randn(9, 37).to(device)
    q = f[:, :3].t().contiguous()
    torch.library.opcheck(ops.pixel_similarity, (f, q, 0, None, None, backend))
    torch.library.opcheck(ops.pixel_similarity, (f.half(), q.half(), 2, None, None, backend))
    sim, mm = ops.pixel_similarity(f, q, 0, None, None, backend)
    torch.library.opcheck(ops.colorize, (sim, mm[:, 0].contiguous(), mm[:, 1].contiguous(),
                                         colormap("fire", device), backend))


def test_ops_trace_under_torch_compile_fullgraph():
    f = torch.randn(8, 41)
    q = f[:, :2].t().contiguous()
    lut = colormap("magma")

    def pipeline(features, queries):
        sim, mm = ops.pixel_similarity(features, queries, 0, None, None, "torch")
        return ops.colorize(sim, mm[:, 0], mm[:, 1], lut, "torch")

    compiled = torch.compile(pipeline, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(f, q), pipeline(f, q))


def _int8_inputs(C, N, Q, gen, device):
    f = torch.randint(-127, 128, (C, N), generator=gen, dtype=torch.int8)
    f[:, N // 2] = 0  # an all-zero pixel
    scales = torch.rand(N, generator=gen) / 127
    cols = torch.randint(0, N, (Q,), generator=gen)
    q = f[:, cols].t().contiguous()
    return f.to(device), q.to(device), scales.to(device), scales[cols].contiguous().to(device)


# beyond SHAPES: channel counts and pixel runs that reach the 16-pixel / channel-pair vector paths
INT8_SHAPES = SHAPES + [(1031, 33, 2), (17, 1024, 9), (64, 4096, 20), (1031, 32, 12)]


@pytest.mark.parametrize("device,backend", backend_params())
@pytest.mark.parametrize("metric", [_reference.INNER, _reference.ANGULAR], ids=["inner", "angular"])
@pytest.mark.parametrize("shape", INT8_SHAPES, ids=lambda s: "C%d-N%d-Q%d" % s)
def test_int8_storage_is_exact_integer_accumulation(device, backend, metric, shape, poison_outputs):
    gen = torch.Generator().manual_seed(11 + shape[0] * 7 + shape[1])
    f, q, sc, qsc = _int8_inputs(*shape, gen, device)
    sim, minmax = ops.pixel_similarity(f, q, metric, sc, qsc, backend)
    # exact integer sums, then (float32(sum) * scale[n]) * query_scale[q]: every backend bit for bit
    ref, _ = _reference.pixel_similarity(f.cpu(), q.cpu(), _reference.INNER, sc.cpu(), qsc.cpu())
    if metric == _reference.INNER:
        assert torch.equal(sim.cpu(), ref)
    else:
        from _oracle import angular_bounds
        lo, hi = angular_bounds(ref.double(), 1e-7)
        assert bool(((sim.cpu().double() >= lo) & (sim.cpu().double() <= hi)).all())
    assert torch.equal(minmax[:, 0], sim.amin(1)) and torch.equal(minmax[:, 1], sim.amax(1))


@pytest.mark.parametrize("device,backend", backend_params())
def test_int8_argument_errors(device, backend):
    gen = torch.Generator().manual_seed(1)
    f, q, sc, qsc = _int8_inputs(5, 9, 2, gen, device)
    with pytest.raises(ValueError, match="euclidean"):
        ops.pixel_similarity(f, q, _reference.EUCLIDEAN, sc, qsc, backend)
    with pytest.raises(ValueError, match="scales"):
        ops.pixel_similarity(f, q, _reference.INNER, None, None, backend)
    with pytest.raises(ValueError, match="only used with int8"):
        ops.pixel_similarity(f.float(), q.float(), _reference.INNER, sc, qsc, backend)


@pytest.mark.parametrize("device,backend", backend_params())
def test_opcheck_int8(device, backend):
    gen = torch.Generator().manual_seed(2)
    f, q, sc, qsc = _int8_inputs(13, 29, 3, gen, device)
    torch.library.opcheck(ops.pixel_similarity, (f, q, 1, sc, qsc, backend))
