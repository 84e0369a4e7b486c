"""LRP composites against Zennit 0.5.1, side by side in one run: time and peak memory.

Per model and composite: the median wall time of one call (after the first) of fv.lrp and of
Zennit's Gradient attributor with the same composite and its canonizer (VGGCanonizer /
ResNetCanonizer), entered once and called repeatedly, parameters frozen (Zennit's best case:
no parameter gradients); and each one's peak memory above what the process held before its
first full call, after one call on a small input that loads libraries and kernels (resident
set size, sampled every 2 ms on the CPU; torch.cuda.max_memory_allocated on CUDA). Every
measurement runs in a fresh process, so neither inherits the other's caches. Models:
torchvision's VGG-16 and ResNet-50 (random weights, realistic batch-norm statistics: tests/_zoo.py).

    python bench/lrp.py [--device cpu|cuda] [--batch 8] [--size 224] [--repeats 3]
        [--models vgg16 resnet50] [--composites epsilon-plus ...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import warnings

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import _zoo  # noqa: E402
from _common import environment, median_seconds, write_results  # noqa: E402

ZENNIT = {"epsilon-plus": "EpsilonPlus", "epsilon-plus-flat": "EpsilonPlusFlat",
          "epsilon-gamma-box": "EpsilonGammaBox", "epsilon-alpha2-beta1": "EpsilonAlpha2Beta1",
          "epsilon-alpha2-beta1-flat": "EpsilonAlpha2Beta1Flat"}
CANONIZERS = {"vgg16": "VGGCanonizer", "resnet50": "ResNetCanonizer"}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory above the level at entry: RSS sampled by a thread (CPU), or CUDA's counter."""

    def __init__(self, device: str) -> None:
        self.device, self.peak = device, 0

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            return self
        self.start, self.running = _rss_bytes(), True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, _rss_bytes() - self.start)
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start
        else:
            self.running = False
            self.thread.join()
            self.peak = max(self.peak, _rss_bytes() - self.start)


def child(a) -> dict:
    """One measurement (the tool, model and composite of `a`), in this process."""
    warnings.simplefilter("ignore")
    model = _zoo.realistic(getattr(_zoo.torchvision_models(), a.model)(weights=None), a.size, batch=a.batch)
    model = model.to(a.device)
    x = torch.randn(a.batch, 3, a.size, a.size, generator=torch.Generator().manual_seed(0)).to(a.device)
    with torch.no_grad():
        target = model(x).argmax(1)
    box = {"low": x.min().item(), "high": x.max().item()}  # z-box bounds: the batch's range
    kwargs = box if a.composite == "epsilon-gamma-box" else {}
    if a.tool == "ours":
        import featvis_fast as fv

        def call(inputs=x, targets=target):
            return fv.lrp(model, inputs, targets, composite=a.composite, **kwargs)

        call(x[:1, :, :32, :32], target[:1])  # libraries and kernels loaded before the measured call
        with PeakMemory(a.device) as memory:
            call()
        return {"seconds": median_seconds(call, a.device, a.repeats, warmup=0), "peak_bytes": memory.peak}
    import zennit.composites
    import zennit.torchvision
    from zennit.attribution import Gradient

    for p in model.parameters():
        p.requires_grad_(False)
    canonizer = getattr(zennit.torchvision, CANONIZERS[a.model])()
    composite = getattr(zennit.composites, ZENNIT[a.composite])(canonizers=[canonizer], **kwargs)
    onehot = torch.zeros(a.batch, 1000, device=a.device)
    onehot[torch.arange(a.batch), target] = 1.0

    with Gradient(model=model, composite=composite) as attributor:
        def call(inputs=x, seed=onehot):
            return attributor(inputs, lambda out: out * seed)[1]

        call(x[:1, :, :32, :32], onehot[:1])  # libraries loaded before the measured call
        with PeakMemory(a.device) as memory:
            call()
        seconds = median_seconds(call, a.device, a.repeats, warmup=0)
    return {"seconds": seconds, "peak_bytes": memory.peak}


def measure(a, tool: str, model: str, composite: str) -> dict:
    """child() in a fresh process."""
    cmd = [sys.executable, __file__, "--child", "--tool", tool, "--model", model, "--composite", composite,
           "--device", a.device, "--batch", str(a.batch), "--size", str(a.size), "--repeats", str(a.repeats)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", nargs="+", default=list(CANONIZERS))
    p.add_argument("--composites", nargs="+", default=list(ZENNIT))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--name", default="lrp", help="results file stem (bench/results/NAME-DEVICE-DATE.*)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tool", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--composite", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a)))
        return
    env = environment(a.device)
    rows = []
    for model in a.models:
        for composite in a.composites:
            ours, ref = measure(a, "ours", model, composite), measure(a, "zennit", model, composite)
            row = {"model": model, "composite": composite, "batch": a.batch, "size": a.size,
                   "ours_s": ours["seconds"], "zennit_s": ref["seconds"], "speedup": ref["seconds"] / ours["seconds"],
                   "ours_peak_mb": ours["peak_bytes"] / 2**20, "zennit_peak_mb": ref["peak_bytes"] / 2**20,
                   "memory_ratio": ours["peak_bytes"] / max(ref["peak_bytes"], 1)}
            rows.append(row)
            print(f"{model:9s} {composite:26s} ours {row['ours_s']:7.3f} s {row['ours_peak_mb']:7.0f} MB  "
                  f"Zennit {row['zennit_s']:7.3f} s {row['zennit_peak_mb']:7.0f} MB  x{row['speedup']:.2f} "
                  f"memory {row['memory_ratio']:.2f}x", flush=True)
    lines = [f"# bench/lrp.py on {env['device']} ({env['date']}, torch {env['torch']})", "",
             f"batch {a.batch}, {a.size} px, median of {a.repeats} calls after the first; peak memory of the "
             "first full call above the process's level before it (a fresh process each, libraries loaded).", "",
             "| model | composite | ours s | Zennit s | speed-up | ours peak MB | Zennit peak MB | "
             "memory ours/Zennit |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['composite']} | {r['ours_s']:.3f} | {r['zennit_s']:.3f} | "
                     f"{r['speedup']:.2f}x | {r['ours_peak_mb']:.0f} | {r['zennit_peak_mb']:.0f} | "
                     f"{r['memory_ratio']:.2f} |")
    print("wrote", *write_results(a.name, a.device, env, rows, "\n".join(lines) + "\n"))


if __name__ == "__main__":
    main()
