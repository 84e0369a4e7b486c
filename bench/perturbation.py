"""Occlusion and RISE: featvis_fast against Captum's Occlusion and against the bare forward cost.

Occlusion (bench/_occlusion.py), per (model, window, stride), on torchvision's VGG-16, ResNet-50
and MobileNetV2 (random weights, realistic batch norm) and the bundled EfficientNet-Lite0, one
224 x 224 image, windows 16 and 32 at strides 4, 8 and 16 (--models / --configs pick a subset):
incremental inference (fv.occlusion's default, Krypton), our full recompute (incremental=False),
Captum's Occlusion at its best perturbations_per_eval in --ppe, and the bare batched forwards (the
plain model on prebuilt batches, NCHW and channels-last, the faster counts), each in a fresh
process; beside them Krypton's theoretical speed-up (convolution multiply-adds, full / incremental)
for the whole network and, per convolution depth, for --layers-of (model window stride).
RISE: masks per second, fv.rise against a plain PyTorch loop (F.interpolate masks, x * m,
model, softmax, one matrix product per batch) with the same masks and batch size.
Models: the bundled EfficientNet-Lite0 on the CPU; a ResNet-50-shaped model (random weights) on
the GPU; 224 x 224, one image.
Extremal perturbations (Fong et al. 2019), torchvision's VGG-16 and ResNet-50 (random weights,
realistic batch-norm statistics: tests/_zoo.py), 224 x 224, areas (0.05, 0.1, 0.2), TorchRay's
defaults: fv.extremal_perturbation on a batch of --extremal-batch images against TorchRay's
extremal_perturbation on one image at a time. Each runs in a fresh process with max_iter = 1 and
max_iter = 1 + --extremal-steps; the difference is the steady cost of --extremal-steps steps
(the once-per-call pyramid, first-call plans and allocator warm-up cancel). Reported: seconds per
step per image and, from it, per image for TorchRay's 800 steps; beside them the model pass alone
(plain PyTorch forward + input gradient of the same rows, parameters frozen, channels-last on
the CPU): TorchRay's time over it is the most any implementation of the method can gain.

    python bench/perturbation.py [--device cpu|cuda] [--repeats N] [--ppe 16 64 256] [--rise-masks N]
                                 [--only occlusion rise extremal] [--extremal-batch 8] [--extremal-steps 3]
                                 [--models resnet50 ...] [--configs 16/8 32/16 ...] [--layers-of resnet50 16 8]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import _occlusion  # noqa: E402
import _zoo  # noqa: E402
from _cnn_models import resnet50  # noqa: E402
from _common import environment, timed_median, write_results  # noqa: E402

TARGET = 281


def build(name: str, device: str) -> torch.nn.Module:
    if name == "efficientnet-lite0":
        import featvis_fast as fv

        return fv.load_model(device=device)[0]
    return resnet50().to(device).eval()




def run_rise(kind: str, name: str, device: str, masks: int, batch: int, repeats: int) -> dict:
    import featvis_fast as fv
    from featvis_fast import _perturbation_reference as pref
    from featvis_fast.perturbation import random_masks

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = build(name, device)
    x = torch.randn(1, 3, 224, 224, device=device)
    if kind == "ours":
        fv.rise(model, x, TARGET, n_masks=batch, progress=False)
        seconds = timed_median(lambda: fv.rise(model, x, TARGET, n_masks=masks, batch_size=batch, progress=False),
                         device, repeats)
    else:
        cells, shifts = random_masks(masks, (7, 7), 0.5, 224, 224, torch.Generator().manual_seed(0))
        cells, shifts = cells.to(device), shifts.to(device)
        up = pref.upsampled_size(224, 224, 7, 7)

        def call():
            sal = torch.zeros(224 * 224, device=device)
            with torch.no_grad():
                for s in range(0, masks, batch):
                    big = F.interpolate(cells[s:s + batch, None], size=up, mode="bilinear", align_corners=False)
                    m = torch.stack([big[i, 0, dy:dy + 224, dx:dx + 224]
                                     for i, (dy, dx) in enumerate(shifts[s:s + batch].tolist())])
                    probs = torch.softmax(model(x * m[:, None]), dim=1)[:, TARGET]
                    sal += probs @ m.reshape(len(m), -1)
            return sal / (masks * 0.5)

        call()
        seconds = timed_median(call, device, repeats)
    return {"kind": f"rise-{kind}", "model": name, "masks": masks, "batch": batch, "seconds": seconds,
            "masks_per_s": masks / seconds}


EXTREMAL_AREAS = [0.05, 0.1, 0.2]


def run_extremal(kind: str, name: str, device: str, batch: int, steps: int) -> dict:
    """Seconds of one call with max_iter = 1 and with 1 + steps, this process's first calls."""
    import featvis_fast as fv

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = _zoo.realistic(getattr(_zoo.torchvision_models(), name)(weights=None), 224, batch=2).to(device).eval()
    x = torch.randn(batch if kind == "ours" else 1, 3, 224, 224, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if kind == "ours":
        def call(iterations):
            fv.extremal_perturbation(model, x, TARGET, EXTREMAL_AREAS, max_iter=iterations, progress=False)
    elif kind == "bare":  # the model pass alone: forward + input gradient of every row, parameters frozen
        for p in model.parameters():
            p.requires_grad_(False)
        rows = x.repeat_interleave(len(EXTREMAL_AREAS), dim=0)
        if device == "cpu":
            rows = rows.contiguous(memory_format=torch.channels_last)

        def call(iterations):
            for _ in range(iterations):
                leaf = rows.detach().requires_grad_(True)
                model(leaf)[:, TARGET].sum().backward()
    else:
        from torchray.attribution.extremal_perturbation import extremal_perturbation

        def call(iterations):
            extremal_perturbation(model, x, TARGET, areas=EXTREMAL_AREAS, max_iter=iterations)
    seconds = {}
    for iterations in (1, 1 + steps):
        sync()
        t0 = time.perf_counter()
        call(iterations)
        sync()
        seconds[iterations] = time.perf_counter() - t0
    per_step = (seconds[1 + steps] - seconds[1]) / steps
    return {"kind": f"extremal-{kind}", "model": name, "images": x.shape[0], "areas": EXTREMAL_AREAS,
            "steps": steps, "seconds_one_step": seconds[1], "seconds_per_step": per_step,
            "seconds_per_step_per_image": per_step / x.shape[0]}


def extremal_table(device: str, batch: int, steps: int) -> tuple[list[dict], list[str]]:
    header = (f"| model | ours s / step / image (batch {batch}) | TorchRay s / step / image | "
              "model pass alone s / step / image | ours s / image, 800 steps | TorchRay s / image, 800 steps | "
              "speed-up | TorchRay / model pass alone |")
    rows, md = [], [header, "|---|---|---|---|---|---|---|---|"]
    for name in ("vgg16", "resnet50"):
        ours = _subprocess(["--device", device, "--extremal-one", "ours", name, str(batch), str(steps)])
        theirs = _subprocess(["--device", device, "--extremal-one", "torchray", name, "1", str(steps)])
        bare = _subprocess(["--device", device, "--extremal-one", "bare", name, str(batch), str(steps)])
        rows += [ours, theirs, bare]
        a, b, c = (r["seconds_per_step_per_image"] for r in (ours, theirs, bare))
        line = (f"| {name} | {a:.3f} | {b:.3f} | {c:.3f} | {800 * a:.0f} | {800 * b:.0f} | {b / a:.2f}x | "
                f"{b / c:.2f}x |")
        md.append(line)
        print(line, flush=True)
    return rows, md


def occlusion_table(a, ppes: list[int]) -> tuple[list[dict], list[str]]:
    """Every (model, window, stride): incremental, full recompute, Captum's best, the best bare forwards."""
    configs = [tuple(int(v) for v in c.split("/")) for c in a.configs] if a.configs else _occlusion.CONFIGS
    rows, lines = [], []

    def one(kind, name, window, stride, repeats, extra=0):
        row = _subprocess(["--device", a.device, "--one", kind, name, str(window), str(stride), str(repeats),
                           str(extra)])
        rows.append(row)
        return row

    for name in a.models or _occlusion.MODELS:
        for window, stride in configs:
            n = _occlusion.windows(window, stride)
            repeats = a.repeats if n <= 200 else 1  # thousands of windows: one timed call each
            inc = one("incremental", name, window, stride, repeats)
            full = one("full", name, window, stride, repeats)
            bare = min((one(kind, name, window, stride, repeats, k) for kind in ("bare", "bare-cl")
                        for k in sorted({*(a.bare_batches or ppes), inc["batch"]})), key=lambda r: r["seconds"])
            best = min((one("captum", name, window, stride, 1, k) for k in ppes), key=lambda r: r["seconds"])
            work = _occlusion.theoretical(one("layers", name, window, stride, 1)["layers"])
            line = (f"| {name} | {window} / {stride} | {n} | {inc['seconds']:.2f} | {full['seconds']:.2f} | "
                    f"{best['seconds']:.2f} (ppe {best['ppe']}) | {bare['seconds']:.2f} ({bare['kind']}, batch "
                    f"{bare['batch']}) | {best['seconds'] / inc['seconds']:.2f}x | "
                    f"{inc['seconds'] / bare['seconds']:.2f}x | {full['seconds'] / inc['seconds']:.2f}x | "
                    f"{work:.2f}x |")
            lines.append(line)
            print(line, flush=True)
    md = ["| model | window / stride | windows | incremental s | full recompute s | Captum best s | "
          "bare forwards s | vs Captum | incremental / bare | full / incremental | theoretical (MACs) |",
          "|---|---|---|---|---|---|---|---|---|---|---|", *lines, ""]
    if a.layers_of:
        name, window, stride = a.layers_of[0], int(a.layers_of[1]), int(a.layers_of[2])
        md += _occlusion.krypton_table(name, window, stride, one("layers", name, window, stride, 1)["layers"])
    return rows, md


def _subprocess(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *args], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ppe", type=int, nargs="+")
    p.add_argument("--rise-masks", type=int)
    p.add_argument("--models", nargs="+", choices=_occlusion.MODELS)
    p.add_argument("--configs", nargs="+", help="window/stride pairs, e.g. 16/8 32/16 (default: all six)")
    p.add_argument("--tag", help="a suffix for the result files' name")
    p.add_argument("--bare-batches", type=int, nargs="+", help="batch sizes of the bare forwards (default: --ppe)")
    p.add_argument("--layers-of", nargs=3, metavar=("MODEL", "WINDOW", "STRIDE"),
                   help="print Krypton's per-layer table for this configuration")
    p.add_argument("--one", nargs=6, help=argparse.SUPPRESS)
    p.add_argument("--rise-one", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--extremal-one", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--only", nargs="+", choices=["occlusion", "rise", "extremal"])
    p.add_argument("--extremal-batch", type=int, default=8)
    p.add_argument("--extremal-steps", type=int, default=3)
    a = p.parse_args()
    if a.extremal_one:
        kind, name, batch, steps = a.extremal_one
        print(json.dumps(run_extremal(kind, name, a.device, int(batch), int(steps))))
        return
    if a.one:
        kind, name, window, stride, extra = a.one[0], a.one[1], int(a.one[2]), int(a.one[3]), int(a.one[5])
        print(json.dumps(_occlusion.run_kind(kind, name, window, stride, a.device, int(a.one[4]), extra)))
        return
    if a.rise_one:
        print(json.dumps(run_rise(a.rise_one[0], a.rise_one[1], a.device, int(a.rise_one[2]), int(a.rise_one[3]),
                                  a.repeats)))
        return
    cpu = a.device == "cpu"
    name = "efficientnet-lite0" if cpu else "resnet50"
    ppes = a.ppe or ([8, 16, 32, 64] if cpu else [64, 256, 1024])
    rows = []
    env = environment(a.device)
    md = [f"# bench/perturbation.py on {env['device']} ({env['date']}, torch {env['torch']})", ""]
    only = set(a.only or ("occlusion", "rise", "extremal"))
    if "occlusion" in only:
        occlusion_rows, occlusion_md = occlusion_table(a, ppes)
        rows += occlusion_rows
        md += occlusion_md
    if "rise" in only:
        masks = a.rise_masks or (1000 if cpu else 8000)
        rise_batch = 32 if cpu else 256
        rise_rows = [_subprocess(["--device", a.device, "--repeats", str(a.repeats), "--rise-one", k, name,
                                  str(masks), str(rise_batch)]) for k in ("ours", "plain")]
        rows += rise_rows
        md += ["| model | RISE masks | batch | ours masks/s | plain loop masks/s | speed-up |",
               "|---|---|---|---|---|---|",
               f"| {name} | {masks} | {rise_batch} | {rise_rows[0]['masks_per_s']:.1f} | "
               f"{rise_rows[1]['masks_per_s']:.1f} | "
               f"{rise_rows[0]['masks_per_s'] / rise_rows[1]['masks_per_s']:.2f}x |", ""]
    if "extremal" in only:
        extremal_rows, extremal_md = extremal_table(a.device, a.extremal_batch, a.extremal_steps)
        rows += extremal_rows
        md += extremal_md
    markdown = "\n".join(md) + "\n"
    print(markdown)
    name = "-".join(["perturbation", *([] if a.only is None else sorted(only)), *([a.tag] if a.tag else [])])
    print("wrote", *write_results(name, a.device, env, rows, markdown))


if __name__ == "__main__":
    main()
