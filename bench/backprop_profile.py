"""Where a featvis_fast backprop call spends its time: the share of oneDNN convolutions and
matmuls, which Captum runs too, so they bound the speed-up over it.

For each of bench/backprop.py's zoo models (torchvision ResNet-50, VGG-16, DenseNet-121,
MobileNetV2) and each method (guided backprop, Grad-CAM): one call under torch.profiler after two
warm-up calls, the call's wall time, and the self CPU time of the convolution and matmul ops.
Given Captum's time for the same call (bench/backprop.py), Captum / (our convolution time) is the
speed-up we would have if everything else cost nothing.

    python bench/backprop_profile.py [--threads 2] [--batch 8]
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

CONV_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_forward",
            "aten::mkldnn_convolution_backward", "aten::addmm", "aten::mm")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore")
    print("| model | method | our call ms | convolutions + matmuls ms | share |")
    print("|---|---|---|---|---|")
    for name in backprop.ZOO:
        model, x = backprop._setup(name, a.batch, "cpu")
        for method in ("guided_backprop", "gradcam"):
            fn = backprop.attribution(name, model, method, "featvis")
            fn(x)
            fn(x)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                t0 = time.perf_counter()
                fn(x)
                total = time.perf_counter() - t0
            conv = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in CONV_OPS) / 1e6
            print(f"| {name} | {method} | {total * 1e3:.0f} | {conv * 1e3:.0f} | {conv / total:.0%} |", flush=True)


if __name__ == "__main__":
    main()
