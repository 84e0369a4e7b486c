"""Per-query latency of per-pixel feature similarity: our backends vs plain PyTorch, side by side.

Baselines: F.cosine_similarity on the raw (C, h, w) map (what a script would do per hover) and
the best plain-PyTorch pipeline (normalize once, then per query a matmul, aminmax and a LUT
lookup), in float32, float16 and bfloat16 storage, fastest kept. Ours: FeatureSimilarity.query
(similarity map) and .render (RGBA with min/max stretch) per backend and storage dtype.
GB/s (feature bytes read + similarity/RGBA bytes written) against a same-device copy of
1 GiB (GPU) / 256 MiB (CPU) measured in the same run, the memory ceiling.

    python bench/similarity.py [--device cpu|cuda] [--repeats N] [--shapes C,h,w ...]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import copy_bandwidth, environment, median_seconds, write_results  # noqa: E402

import featvis_fast as fv  # noqa: E402
from featvis_fast import _backend  # noqa: E402

CPU_SHAPES = [(256, 256, 256), (1024, 128, 128), (2048, 64, 64)]
GPU_SHAPES = CPU_SHAPES + [(2048, 256, 256), (1024, 512, 512), (2048, 512, 512), (2048, 1024, 1024)]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
OUR_DTYPES = DTYPES | {"int8": torch.int8}


def torch_pipeline(features: torch.Tensor, dtype: torch.dtype, lut: torch.Tensor):
    """Best-effort plain PyTorch: normalized cache built once; per query matmul + aminmax + LUT."""
    C, h, w = features.shape
    flat = features.reshape(C, -1)
    cache = (flat / flat.norm(dim=0, keepdim=True).clamp_min(1e-12)).to(dtype).contiguous()

    def query(i: int, j: int, render: bool):
        q = cache[:, i * w + j]
        sim = (q[None] @ cache)[0].float()
        if not render:
            return sim
        lo, hi = torch.aminmax(sim)
        idx = ((sim - lo) * (255.0 / (hi - lo)) + 0.5).clamp_(0, 255).long()
        return lut[idx]
    return query


def cosine_similarity_baseline(features: torch.Tensor, lut: torch.Tensor):
    def query(i: int, j: int, render: bool):
        sim = F.cosine_similarity(features, features[:, i:i + 1, j:j + 1], dim=0)
        if not render:
            return sim
        lo, hi = torch.aminmax(sim)
        idx = ((sim - lo) * (255.0 / (hi - lo)) + 0.5).clamp_(0, 255).long()
        return lut[idx]
    return query


def our_backends(device: str) -> list[str]:
    names = ["cpp", "torch"] if device == "cpu" else ["cuda", "triton", "torch"]
    return [b for b in names if _backend._probe(b, device) is None]


def bench_shape(shape, device, repeats, include_cosine) -> list[dict]:
    C, h, w = shape
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(shape, generator=gen).abs_().to(device)
    lut = fv.colormap("fire", device)
    point = (h // 3, w // 2)
    rows = []

    def record(method, dtype, task, seconds, feature_bytes):
        out_bytes = h * w * 4 * (3 if task == "render" else 1)  # sim write (+ read + RGBA write)
        rows.append({"shape": list(shape), "method": method, "dtype": dtype, "task": task,
                     "seconds": seconds, "bytes": feature_bytes + out_bytes})
        print(f"  {str(shape):18s} {method:22s} {dtype:5s} {task:7s} {seconds * 1e3:10.3f} ms", flush=True)

    for task in ("query", "render"):
        render = task == "render"
        if include_cosine:
            fn = cosine_similarity_baseline(features, lut)
            record("F.cosine_similarity", "fp32", task, median_seconds(lambda: fn(*point, render), device, repeats),
                   C * h * w * 4)
        for dname, dtype in DTYPES.items():
            fn = torch_pipeline(features, dtype, lut)
            record("torch pipeline", dname, task, median_seconds(lambda: fn(*point, render), device, repeats),
                   C * h * w * dtype.itemsize)
        for backend in our_backends(device):
            for dname, dtype in OUR_DTYPES.items():
                sim = fv.FeatureSimilarity(features, metric="cosine", dtype=dtype, backend=backend)
                fn = (lambda: sim.render(point)) if render else (lambda: sim.query(point))
                scale_bytes = h * w * 4 if dtype == torch.int8 else 0
                record(f"featvis {backend}", dname, task, median_seconds(fn, device, repeats),
                       C * h * w * dtype.itemsize + scale_bytes)
    return rows


def summarize(rows: list[dict], env: dict, copy_bps: float | None) -> str:
    lines = [f"# Per-pixel similarity, one query: {env['device']}", "",
             f"torch {env['torch']}, triton {env['triton']}, {env['date']}. Median per-query latency; "
             "ratio = baseline time / ours (higher is better)."]
    if copy_bps:
        lines.append(f"Same-device copy (read + write) in this run: {copy_bps / 1e9:.0f} GB/s.")
    lines += ["", "| shape (C,h,w) | task | method | dtype | ms | vs cosine_similarity | vs best torch pipeline |"
              + (" GB/s | % of copy |" if copy_bps else ""),
              "|---|---|---|---|---|---|---|" + ("---|---|" if copy_bps else "")]
    for shape in dict.fromkeys(tuple(r["shape"]) for r in rows):
        for task in ("query", "render"):
            sel = [r for r in rows if tuple(r["shape"]) == shape and r["task"] == task]
            cos = next((r["seconds"] for r in sel if r["method"] == "F.cosine_similarity"), None)
            best = min(r["seconds"] for r in sel if r["method"] == "torch pipeline")
            for r in sel:
                gbs = r["bytes"] / r["seconds"] / 1e9
                cells = [str(shape), task, r["method"], r["dtype"], f"{r['seconds'] * 1e3:.3f}",
                         f"{cos / r['seconds']:.1f}x" if cos else "-", f"{best / r['seconds']:.2f}x"]
                if copy_bps:
                    cells += [f"{gbs:.0f}", f"{100 * gbs * 1e9 / copy_bps:.0f}%"]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--shapes", nargs="*", help="C,h,w triples (default: the standard set for the device)")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args()
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes else (
        GPU_SHAPES if args.device == "cuda" else CPU_SHAPES)
    env = environment(args.device)
    print(f"device: {env['device']}", flush=True)
    copy_bps = copy_bandwidth(args.device, nbytes=1 << 30 if args.device == "cuda" else 1 << 28)
    rows = []
    for shape in shapes:
        # F.cosine_similarity materializes C*h*w temporaries: skip it on the largest GPU caches
        rows += bench_shape(shape, args.device, args.repeats, include_cosine=shape[0] * shape[1] * shape[2] <= 2**28)
    md = summarize(rows, env, copy_bps)
    print(md)
    if not args.no_write:
        for path in write_results("similarity", args.device, env | {"copy_bytes_per_s": copy_bps}, rows, md):
            print("wrote", path)


if __name__ == "__main__":
    main()
