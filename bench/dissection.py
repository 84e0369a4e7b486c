"""Network Dissection: fv.dissect against NetDissect-Lite's procedure in NumPy, side by side.

Synthetic data (made once, in memory): N images of 112 x 112 whose K concept masks (random blobs at
56 x 56, three categories, one left unannotated in a quarter of the images) come with them, and a
random convolution with U units at 14 x 14 (an 8 x 8 stride-8 convolution + ReLU) as the layer.
  ours    fv.dissect(model, dataset, "units"): both passes (the forwards included), exact
          streaming thresholds, the fused tally featvis::dissect_tally
  numpy   tests/_netdissect_reference.py: the same features (computed beforehand, not timed),
          numpy.quantile thresholds, then per image and per unit the upsampling, threshold and
          per-concept tallies, as NetDissect-Lite's feature_operation.py loops. It runs on the first
          --numpy-images images and its time is scaled to N (the loops cost the same per image:
          the scaled quantile time is measured on all N).
Both give the same thresholds and tallies (checked on the subset). GPU: --device cuda.

    python bench/dissection.py [--device cpu|cuda] [--images 2000] [--units 256] [--concepts 30]
                               [--numpy-images 100]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from _common import environment, write_results  # noqa: E402
from _netdissect_reference import dissect as numpy_dissect  # noqa: E402

import featvis_fast as fv  # noqa: E402
from featvis_fast.dissection import Concept  # noqa: E402


class Units(nn.Module):
    def __init__(self, units: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.units = nn.Sequential(nn.Conv2d(3, units, 8, stride=8), nn.ReLU())
        with torch.no_grad():
            self.units[0].weight.copy_(torch.randn(self.units[0].weight.shape, generator=gen) * 0.05)
        self.eval()

    def forward(self, x):
        return self.units(x)


class BlobData:
    """N images (3, 112, 112) and K concepts as blobs at 56 x 56 (see the module docstring)."""

    def __init__(self, n: int, k: int, batch: int = 64, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.concepts = [Concept(f"c{i}", f"cat{i % 3}") for i in range(k)]
        self.images = torch.rand(n, 3, 112, 112, generator=gen)
        field = F.interpolate(torch.rand(n, k, 7, 7, generator=gen), size=(56, 56), mode="bilinear",
                              align_corners=False)
        self.masks = field > 0.8
        self.annotated = torch.ones(n, k, dtype=torch.bool)
        self.annotated[torch.rand(n, generator=gen) < 0.25, 2::3] = False
        self.masks &= self.annotated[..., None, None]
        self.batch = batch

    def __len__(self) -> int:
        return self.images.shape[0]

    def head(self, m: int) -> "BlobData":
        """The first m images (and their masks) as a dataset of their own."""
        part = object.__new__(BlobData)
        part.concepts, part.batch = self.concepts, self.batch
        part.images, part.masks, part.annotated = self.images[:m], self.masks[:m], self.annotated[:m]
        return part

    def __iter__(self):
        for s in range(0, len(self), self.batch):
            yield self.images[s:s + self.batch], self.masks[s:s + self.batch], self.annotated[s:s + self.batch]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--units", type=int, default=256)
    p.add_argument("--concepts", type=int, default=30)
    p.add_argument("--numpy-images", type=int, default=100)
    a = p.parse_args()
    env = environment(a.device)
    model = Units(a.units).to(a.device)
    data = BlobData(a.images, a.concepts)
    kw = dict(mean=(0, 0, 0), std=(1, 1, 1), progress=False)
    fv.dissect(model, BlobData(64, a.concepts), "units", **kw)  # warm-up (extension load, first calls)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    ours = fv.dissect(model, data, "units", **kw)
    sync()
    t_ours = time.perf_counter() - t0

    with torch.no_grad():
        features = torch.cat([model(x.to(a.device)).cpu() for x, _, _ in data]).numpy()
    t0 = time.perf_counter()
    np.quantile(features.transpose(1, 0, 2, 3).reshape(a.units, -1).astype(np.float64), 0.995, axis=1)
    t_quantile = time.perf_counter() - t0
    m = a.numpy_images
    t0 = time.perf_counter()
    ref = numpy_dissect(features[:m], data.masks[:m].numpy(), data.annotated[:m].numpy())
    t_subset = time.perf_counter() - t0
    # the subset's loops cost per image what the whole run's do; its quantile is replaced by the full one
    t_numpy = (t_subset - t_quantile * m / a.images) * a.images / m + t_quantile
    sub = fv.dissect(model, data.head(m), "units", **kw)
    same = np.array_equal(sub.intersection.numpy(), ref["intersection"]) and \
        np.array_equal(sub.thresholds.numpy(), ref["thresholds"])
    row = {"images": a.images, "units": a.units, "concepts": a.concepts, "ours_s": t_ours,
           "numpy_s_scaled": t_numpy, "numpy_subset_images": m, "numpy_subset_s": t_subset,
           "speedup": t_numpy / t_ours, "same_on_subset": bool(same),
           "interpretable": int(ours.interpretable.sum())}
    print(f"{a.images} images, {a.units} units, {a.concepts} concepts on {env['device']}: ours {t_ours:.2f} s, "
          f"NumPy procedure {t_numpy:.1f} s (scaled from {m} images: {t_subset:.2f} s), x{row['speedup']:.1f}; "
          f"identical on the subset: {same}", flush=True)
    md = (f"# Dissection, {env['device']}, torch {env['torch']}, {env['date']}\n\n"
          f"| images | units | concepts | ours | NumPy procedure (scaled from {m} images) | speed-up |\n"
          f"|---|---|---|---|---|---|\n| {a.images} | {a.units} | {a.concepts} | {t_ours:.2f} s | "
          f"{t_numpy:.1f} s | {row['speedup']:.1f}x |\n\nOurs includes both forward passes; the NumPy "
          f"procedure gets precomputed features. Thresholds and tallies identical on the subset: {same}.\n")
    print("wrote", *write_results("dissection", a.device, env, [row], md))


if __name__ == "__main__":
    main()
