"""Guided backprop and Grad-CAM: featvis_fast against Captum, side by side in one run.

Per (model, method, batch, implementation): throughput (images/s; Captum's and our calls timed
alternately in one process, medians) and peak memory of one call: on CUDA torch.cuda.max_memory_allocated above the resident model and
input; on the CPU the process' peak RSS growth over the RSS after a batch-1 warm-up call, each
configuration in a fresh subprocess.
On CUDA also the largest batch that fits (doubling until out of memory). Models: the bundled
EfficientNet-Lite0 (ReLU6) and a ReLU ResNet-18 on the CPU; a ResNet-50-shaped model (random
weights) on the GPU. Grad-CAM layers: EfficientNet `_blocks.15`, ResNets `layer4`.

    python bench/backprop.py [--device cpu|cuda] [--batches 8 32] [--repeats N]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cnn_models import resnet18, resnet50  # noqa: E402
from _common import environment, write_results  # noqa: E402

IMPLS = ("captum", "featvis")
LAYERS = {"efficientnet-lite0": "_blocks.15", "resnet18": "layer4", "resnet50": "layer4"}


def build(name: str, device: str) -> torch.nn.Module:
    if name == "efficientnet-lite0":
        import featvis_fast as fv

        return fv.load_model(device=device)[0]
    return {"resnet18": resnet18, "resnet50": resnet50}[name]().to(device)


def attribution(name: str, model, method: str, impl: str):
    """A function x -> attribution for one configuration."""
    import featvis_fast as fv

    layer = LAYERS[name]
    target = 281
    if impl == "featvis":
        if method == "guided_backprop":
            return lambda x: fv.guided_backprop(model, x, target)
        return lambda x: fv.gradcam(model, x, target, layer)
    from captum.attr import GuidedBackprop, LayerGradCam

    if method == "guided_backprop":
        gbp = GuidedBackprop(model)
        return lambda x: gbp.attribute(x, target=target)
    gc = LayerGradCam(model, dict(model.named_modules())[layer])
    return lambda x: gc.attribute(x, target=target, relu_attributions=True)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _setup(name: str, batch: int, device: str):
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    return build(name, device), torch.randn(batch, 3, 224, 224, device=device)


def peak_one(name: str, method: str, impl: str, batch: int, device: str) -> dict:
    """Peak memory of one call, in a process of its own (RSS peaks are per process)."""
    model, x = _setup(name, batch, device)
    fn = attribution(name, model, method, impl)
    fn(x[:1])  # load kernels / extensions and import lazily loaded modules before measuring
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn(x)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = _rss_bytes()
        fn(x)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"peak_mib": peak / 2**20}


def speed_pair(name: str, method: str, batch: int, device: str, repeats: int) -> dict:
    """Seconds per call of Captum and ours, timed alternately in one process (same model, same
    input), so that drifting machine load hits both alike; medians."""
    model, x = _setup(name, batch, device)
    fns = {impl: attribution(name, model, method, impl) for impl in IMPLS}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    for fn in fns.values():
        fn(x)
    for _ in range(repeats):
        for impl, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn(x)
            sync()
            times[impl].append(time.perf_counter() - t0)
    return {impl: statistics.median(ts) for impl, ts in times.items()}


def largest_batch(name: str, method: str, impl: str, start: int, cap: int = 8192) -> int:
    """Largest power-of-two batch (from start) whose attribution fits in GPU memory."""
    model = build(name, "cuda")
    fn = attribution(name, model, method, impl)
    fits, batch = 0, start
    while batch <= cap:
        try:
            fn(torch.randn(batch, 3, 224, 224, device="cuda"))
            torch.cuda.synchronize()
            fits, batch = batch, batch * 2
        except torch.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
    return fits


def _subprocess(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *args], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batches", type=int, nargs="+")
    p.add_argument("--models", nargs="+")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peak", nargs=4, metavar=("MODEL", "METHOD", "IMPL", "BATCH"), help=argparse.SUPPRESS)
    p.add_argument("--speed", nargs=3, metavar=("MODEL", "METHOD", "BATCH"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.peak:
        print(json.dumps(peak_one(a.peak[0], a.peak[1], a.peak[2], int(a.peak[3]), a.device)))
        return
    if a.speed:
        print(json.dumps(speed_pair(a.speed[0], a.speed[1], int(a.speed[2]), a.device, a.repeats)))
        return
    cpu = a.device == "cpu"
    models = a.models or (["efficientnet-lite0", "resnet18"] if cpu else ["resnet50"])
    batches = a.batches or ([8, 32] if cpu else [64, 256])
    env = environment(a.device)
    rows = []
    for name in models:
        for method in ("guided_backprop", "gradcam"):
            for batch in batches:
                seconds = _subprocess(["--device", a.device, "--repeats", str(a.repeats), "--speed", name, method,
                                       str(batch)])
                pair = {}
                for impl in IMPLS:
                    peak = _subprocess(["--device", a.device, "--peak", name, method, impl, str(batch)])
                    row = {"model": name, "method": method, "impl": impl, "batch": batch, "seconds": seconds[impl],
                           "images_per_s": batch / seconds[impl], "peak_mib": peak["peak_mib"]}
                    pair[impl] = row
                    rows.append(row)
                    print(f"{name:18s} {method:16s} B={batch:<4d} {impl:8s} {row['images_per_s']:8.2f} img/s  "
                          f"peak {row['peak_mib']:9.1f} MiB", flush=True)
                pair["featvis"]["speedup"] = pair["featvis"]["images_per_s"] / pair["captum"]["images_per_s"]
                pair["featvis"]["memory_ratio"] = pair["featvis"]["peak_mib"] / max(pair["captum"]["peak_mib"], 1e-9)
    if not cpu:
        for name in models:
            for method in ("guided_backprop", "gradcam"):
                for impl in ("captum", "featvis"):
                    rows.append({"model": name, "method": method, "impl": impl,
                                 "largest_batch": largest_batch(name, method, impl, batches[-1])})
    lines = [f"# bench/backprop.py on {env['device']} ({env['date']}, torch {env['torch']})", "",
             "| model | method | batch | Captum img/s | ours img/s | speed-up | Captum peak MiB | ours peak MiB | memory ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    by_key = {(r["model"], r["method"], r["batch"], r["impl"]): r for r in rows if "batch" in r}
    for (name, method, batch, impl), r in by_key.items():
        if impl != "featvis":
            continue
        c = by_key[(name, method, batch, "captum")]
        lines.append(f"| {name} | {method} | {batch} | {c['images_per_s']:.2f} | {r['images_per_s']:.2f} | "
                     f"{r['speedup']:.2f}x | {c['peak_mib']:.0f} | {r['peak_mib']:.0f} | {r['memory_ratio']:.2f} |")
    fits = [r for r in rows if "largest_batch" in r]
    if fits:
        lines += ["", "| model | method | impl | largest batch that fits |", "|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['method']} | {r['impl']} | {r['largest_batch']} |" for r in fits]
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    print("wrote", *write_results("backprop", a.device, env, rows, markdown))


if __name__ == "__main__":
    main()
