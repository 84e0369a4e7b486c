"""Occlusion rows of bench/perturbation.py: incremental inference (Krypton) against our full
recompute, Captum's Occlusion and the bare batched forwards, plus Krypton's per-layer view.

Kinds, each measured in a fresh process (one warm-up call on a 2 x 2 window grid, then the median
of the timed calls):
  incremental  fv.occlusion(model, x, target, window, stride) (incremental=True, the default)
  full         the same with incremental=False: every copy through the whole model
  captum       captum.attr.Occlusion at one perturbations_per_eval (the table keeps the best)
  bare         windows + 1 forwards of the plain model on prebuilt batches (torch.no_grad),
               contiguous NCHW: what a loop around model(batch) costs
  bare-cl      the same with the model and batches channels-last (PyTorch's faster CPU layout):
               the table keeps the faster of the two
  layers       no timing: per convolution, the multiply-adds the incremental pass does against
               those of the full recompute (Krypton's theoretical speed-up per layer depth)
"""
from __future__ import annotations

import copy
import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import _zoo  # noqa: E402
from _common import timed_median  # noqa: E402

TARGET = 281
SIDE = 224
MODELS = ("resnet50", "vgg16", "mobilenet_v2", "efficientnet-lite0")
CONFIGS = [(16, 4), (16, 8), (16, 16), (32, 4), (32, 8), (32, 16)]


def build(name: str, device: str) -> torch.nn.Module:
    """The default model (real weights), or a torchvision CNN with random weights and realistic BN."""
    if name == "efficientnet-lite0":
        import featvis_fast as fv

        return fv.load_model(device=device)[0]
    torch.manual_seed(0)
    model = getattr(_zoo.torchvision_models(), name)(weights=None)
    return _zoo.realistic(model, SIDE, batch=2).to(device).eval()


def windows(window: int, stride: int) -> int:
    per_dim = -(-(SIDE - window) // stride) + 1
    return per_dim * per_dim




def run_kind(kind: str, name: str, window: int, stride: int, device: str, repeats: int, extra: int) -> dict:
    """One measurement in this process. extra: perturbations_per_eval (captum), batch size (bare)."""
    import featvis_fast as fv

    warnings.simplefilter("ignore")
    model = build(name, device)
    x = torch.randn(1, 3, SIDE, SIDE, device=device, generator=torch.Generator(device).manual_seed(0))
    row = {"kind": kind, "model": name, "window": window, "stride": stride, "windows": windows(window, stride)}
    if kind in ("incremental", "full"):
        def call(w=window, s=stride):
            return fv.occlusion(model, x, TARGET, window=w, stride=s, progress=False, incremental=kind == "incremental")

        call(SIDE // 2, SIDE // 2)  # warm-up: kernels, plans, allocator
        row["seconds"] = timed_median(call, device, repeats)
        from featvis_fast.engine import batches

        row["batch"] = batches.pick_batch_size(None, row["windows"], torch.device(device),
                                               batches.laid_out_batch(model, x)[1])
    elif kind == "captum":
        from captum.attr import Occlusion

        occ = Occlusion(model)

        def call():
            with torch.no_grad():
                occ.attribute(x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                              baselines=0.0, target=TARGET, perturbations_per_eval=extra)

        row["seconds"], row["ppe"] = timed_median(call, device, repeats), extra
    elif kind in ("bare", "bare-cl"):
        layout = torch.channels_last if kind == "bare-cl" else torch.contiguous_format
        model = copy.deepcopy(model).to(memory_format=layout)
        n = windows(window, stride) + 1
        prebuilt = [x.expand(min(extra, n - s), -1, -1, -1).contiguous(memory_format=layout)
                    for s in range(0, n, extra)]

        def call():
            with torch.no_grad():
                for b in prebuilt:
                    model(b)

        call()
        row["seconds"], row["batch"] = timed_median(call, device, repeats), extra
    elif kind == "layers":
        row["layers"] = layer_work(model, x, window, stride)
    else:
        raise ValueError(kind)
    return row


def layer_work(model: torch.nn.Module, x: torch.Tensor, window: int, stride: int) -> list[dict]:
    """Per convolution, in forward order: multiply-adds of the incremental pass and of the full
    recompute over every window (the batches fv.occlusion would run)."""
    from featvis_fast import _backend
    from featvis_fast.engine import batches, incremental
    from featvis_fast.engine.patched import occluded
    from featvis_fast.perturbation import _windows

    backend = _backend.resolve_backend(None, x.device)
    x, item_bytes = batches.laid_out_batch(model, x)
    recording = incremental.record(model, x)
    spec = _windows.parse_specs(window, stride, SIDE, SIDE)[0]
    boxes = _windows.boxes_for(spec, SIDE, SIDE, "inside").long()
    n = boxes.shape[0]
    occ = torch.cat([boxes, torch.tensor([0, 3]).expand(n, 2)], dim=1).to(torch.int32).to(x.device)
    src = torch.zeros(n, dtype=torch.int32, device=x.device)
    probe = incremental.IncrementalProbe(model, recording)
    size = batches.pick_batch_size(None, n, x.device, item_bytes)
    for start in range(0, n, size):
        probe(occluded(x, torch.zeros_like(x), src[start:start + size], occ[start:start + size], backend))
    return [{"call": index, "macs_done": done, "macs_full": full}
            for index, (done, full) in sorted(probe.work.items())]


def krypton_table(name: str, window: int, stride: int, layers: list[dict]) -> list[str]:
    """Markdown: per convolution depth, the layer's speed-up and the cumulative one up to it."""
    lines = [f"Per-layer multiply-adds, {name}, window {window} stride {stride} "
             f"({windows(window, stride)} windows): full recompute / incremental",
             "", "| conv depth | layer speed-up | cumulative speed-up |", "|---|---|---|"]
    done = full = 0
    for depth, row in enumerate(layers, 1):
        done, full = done + row["macs_done"], full + row["macs_full"]
        lines.append(f"| {depth} | {row['macs_full'] / max(row['macs_done'], 1):.2f}x | "
                     f"{full / max(done, 1):.2f}x |")
    return lines + [""]


def theoretical(layers: list[dict]) -> float:
    """Whole-network speed-up in multiply-adds (convolutions), full recompute / incremental."""
    return sum(r["macs_full"] for r in layers) / max(sum(r["macs_done"] for r in layers), 1)
