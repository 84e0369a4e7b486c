"""Where a featvis_fast backprop call spends its time: the share of oneDNN convolutions and
matmuls, which Captum runs too, so they bound the speed-up over it.

For each of bench/backprop.py's zoo models (torchvision ResNet-50, VGG-16, DenseNet-121,
MobileNetV2) and each method (guided backprop, Grad-CAM): one call under torch.profiler after two
warm-up calls, the call's wall time, and the self CPU time of the convolution and matmul ops.
With --captum-from, Captum's time for the same call is read from a bench/backprop.py --zoo
results file, and Captum / (our convolution time) is reported: the speed-up we would have if
everything else cost nothing. Results go to bench/results/backprop-profile-cpu-DATE.{json,md}.

    python bench/backprop_profile.py [--threads 2] [--batch 8] [--captum-from bench/results/backprop-zoo-cpu-DATE.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backprop  # noqa: E402
from _common import environment, write_results  # noqa: E402

CONV_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_forward",
            "aten::mkldnn_convolution_backward", "aten::addmm", "aten::mm")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--captum-from", help="a bench/backprop.py --zoo results JSON with Captum's rows")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore")
    captum = {}
    if a.captum_from:
        with open(a.captum_from) as fh:
            captum = {(r["model"], r["method"]): r["seconds"] for r in json.load(fh)["rows"]
                      if r.get("impl") == "captum" and r.get("batch") == a.batch}
    rows = []
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
            row = {"model": name, "method": method, "batch": a.batch, "our_ms": total * 1e3, "conv_ms": conv * 1e3,
                   "conv_share": conv / total}
            if (name, method) in captum:
                row["captum_ms"] = captum[(name, method)] * 1e3
                row["ceiling"] = captum[(name, method)] / conv
            rows.append(row)
            print(row, flush=True)
    env = environment("cpu")
    source = f" (Captum: `{os.path.relpath(a.captum_from)}`)" if a.captum_from else ""
    lines = [f"# bench/backprop_profile.py on {env['device']} ({env['date']}, torch {env['torch']}, "
             f"batch {a.batch}){source}", "",
             "| model | method | our call ms | convolutions + matmuls ms | share | Captum's call ms | "
             "speed-up if all else cost nothing |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        extra = f"{r['captum_ms']:.0f} | {r['ceiling']:.2f}x" if "ceiling" in r else "- | -"
        lines.append(f"| {r['model']} | {r['method']} | {r['our_ms']:.0f} | {r['conv_ms']:.0f} | "
                     f"{r['conv_share']:.0%} | {extra} |")
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    print("wrote", *write_results("backprop-profile", "cpu", env, rows, markdown))


if __name__ == "__main__":
    main()
