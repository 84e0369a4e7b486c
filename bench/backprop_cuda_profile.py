"""Where a guided-backprop / Grad-CAM call spends its time on the GPU, ours beside Captum.

bench/backprop.py measured ours at 0.4-0.5x Captum's throughput at batch 64 on an H200 (about
1x at batch 256) with 6-8x less memory. This profiles one call of each (after two warm-ups) under
torch.profiler: wall time, summed kernel time, kernel launches, and the ops with the most self
device time, so the gap can be placed (launch-bound host work vs slow kernels).

    python bench/backprop_cuda_profile.py [--batch 64] [--top 12]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backprop  # noqa: E402


def profile_one(method: str, impl: str, batch: int, top: int) -> None:
    model, x = backprop._setup("resnet50", batch, "cuda")
    fn = backprop.attribution("resnet50", model, method, impl)
    for _ in range(2):
        fn(x)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn(x)
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn(x)
        torch.cuda.synchronize()
    events = prof.key_averages()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    device_us = sum(e.self_device_time_total for e in events)
    print(f"\n## resnet50 {method} {impl} B={batch}: wall {wall * 1e3:.2f} ms, kernels {device_us / 1e3:.2f} ms "
          f"({len(kernels)} launches)")
    print(events.table(sort_by="self_device_time_total", row_limit=top, max_name_column_width=60))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--top", type=int, default=12)
    a = p.parse_args()
    warnings.simplefilter("ignore")
    print(f"# bench/backprop_cuda_profile.py on {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for method in ("guided_backprop", "gradcam"):
        for impl in backprop.IMPLS:
            profile_one(method, impl, a.batch, a.top)


if __name__ == "__main__":
    main()
