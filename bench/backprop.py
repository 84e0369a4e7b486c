"""Guided backprop and Grad-CAM: featvis_fast against Captum, side by side in one run.

Per (model, method, batch, implementation), each in a fresh process: throughput (images/s, median
of timed calls after two warm-up calls) and peak memory of one call: on CUDA torch.cuda.max_memory_allocated above the
resident model and
input; on the CPU the process' peak RSS growth over the RSS after a batch-1 warm-up call, each
configuration in a fresh subprocess.
On CUDA also the largest batch that fits (doubling until out of memory). Models: the bundled
EfficientNet-Lite0 (ReLU6) and a ReLU ResNet-18 on the CPU; a ResNet-50-shaped model (random
weights) on the GPU; with --zoo, torchvision's own ResNet-50, VGG-16, DenseNet-121 and
MobileNetV2 (random weights, batch-norm statistics measured on a random batch: tests/_zoo.py).
Grad-CAM layers: EfficientNet `_blocks.15`, ResNets `layer4`, VGG-16 `features.29`, DenseNet
`features`, MobileNetV2 `features.18`.

    python bench/backprop.py [--device cpu|cuda] [--batches 8 32] [--repeats N] [--malloc-tuned]
    python bench/backprop.py --zoo --batches 8 [--threads 2]    # torchvision's architectures

On the CPU, half of a call's time can go to page faults: glibc returns every large freed
tensor to the kernel and the next call faults it in again. Ours avoids that with its caching CPU
allocator (featvis_fast.engine.cpu_cache); --malloc-tuned raises glibc's thresholds for both tools (a
setting users can make too), which gives Captum the same benefit; one run with and one without
it shows both sides. (Timing both tools in one process is not fair: whichever runs second inherits
the first one's grown heap.)
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
MALLOC_TUNED = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**34)}
LAYERS = {"efficientnet-lite0": "_blocks.15", "resnet18": "layer4", "resnet50": "layer4",
          "tv-resnet50": "layer4", "tv-vgg16": "features.29", "tv-densenet121": "features",
          "tv-mobilenet_v2": "features.18"}
ZOO = ["tv-resnet50", "tv-vgg16", "tv-densenet121", "tv-mobilenet_v2"]


def build(name: str, device: str) -> torch.nn.Module:
    if name == "efficientnet-lite0":
        import featvis_fast as fv

        return fv.load_model(device=device)[0]
    if name.startswith("tv-"):  # torchvision's own definition, importable beside the CPU torch (tests/_zoo)
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
        import _zoo

        torch.manual_seed(0)
        model = getattr(_zoo.torchvision_models(), name[3:])(weights=None)
        return _zoo.realistic(model, 64).to(device)
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


def run_one(name: str, method: str, impl: str, batch: int, device: str, repeats: int) -> dict:
    """One implementation in a process of its own: peak memory of the first full call (RSS peaks
    are per process), then the median time of `repeats` calls after one more warm-up call."""
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
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    fn(x)
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn(x)
        sync()
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    return {"model": name, "method": method, "impl": impl, "batch": batch, "seconds": seconds,
            "images_per_s": batch / seconds, "peak_mib": peak / 2**20}


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


def _subprocess(args: list[str], env_vars: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *args], capture_output=True, text=True,
                         check=True, env={**os.environ, **env_vars})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batches", type=int, nargs="+")
    p.add_argument("--models", nargs="+")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--zoo", action="store_true", help="torchvision's ResNet-50, VGG-16, DenseNet-121, MobileNetV2")
    p.add_argument("--threads", type=int, help="torch.set_num_threads in every measured process")
    p.add_argument("--malloc-tuned", action="store_true",
                   help="run every configuration with glibc malloc's mmap and trim thresholds raised "
                        "(MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_), so large tensors are not "
                        "page-faulted in afresh on every call; applies to Captum and ours alike")
    p.add_argument("--one", nargs=4, metavar=("MODEL", "METHOD", "IMPL", "BATCH"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.one:
        print(json.dumps(run_one(a.one[0], a.one[1], a.one[2], int(a.one[3]), a.device, a.repeats)))
        return
    env_vars = dict(MALLOC_TUNED) if a.malloc_tuned else {}
    cpu = a.device == "cpu"
    models = a.models or (ZOO if a.zoo else ["efficientnet-lite0", "resnet18"] if cpu else ["resnet50"])
    batches = a.batches or ([8, 32] if cpu else [64, 256])
    env = environment(a.device)
    env["malloc"] = env_vars or "glibc defaults"
    rows = []
    for name in models:
        for method in ("guided_backprop", "gradcam"):
            for batch in batches:
                pair = {}
                for impl in IMPLS:
                    threads = ["--threads", str(a.threads)] if a.threads else []
                    row = _subprocess(["--device", a.device, "--repeats", str(a.repeats), *threads, "--one", name,
                                       method, impl, str(batch)], env_vars)
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
    lines = [f"# bench/backprop.py on {env['device']} ({env['date']}, torch {env['torch']}, "
             f"malloc: {env['malloc']})", "",
             "| model | method | batch | Captum img/s | ours img/s | speed-up | Captum peak MiB | ours peak MiB "
             "| memory ratio |",
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
    kind = "backprop-zoo" if a.zoo else "backprop"
    print("wrote", *write_results(kind + ("-malloc-tuned" if a.malloc_tuned else ""), a.device, env, rows, markdown))


if __name__ == "__main__":
    main()
