"""Evaluation metrics: featvis_fast.metrics against Quantus 0.6 (and Captum, RISE's loop, TorchRay,
pytorch-grad-cam where they have the metric), side by side in one run, same inputs and settings.

Models: torchvision's ResNet-50 (random weights, realistic batch-norm statistics: tests/_zoo.py)
and the bundled EfficientNet-Lite0; images: the four bundled photos and their mirror images (8),
224 x 224; target: each image's predicted class; attributions: saliency (channel sum of |gradient|,
(B, 1, H, W)), which the robustness and randomisation metrics also recompute. Each metric's cases
live in bench/_metrics_<family>.py (MetricCase: ours and each reference on the same Inputs). Per
case and model: the seconds of one call of ours (after one warm-up call on the same inputs) and of
each reference (one call: Quantus' runs take minutes), the ratio reference / ours, and the largest
difference between their per-image scores relative to the largest |score| (the "same numbers"
check; NaN where both are NaN counts as equal).

    python bench/metrics.py [--device cpu|cuda] [--models efficientnet-lite0 resnet50]
                            [--only deletion insertion ...] [--skip-references captum ...]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import _metrics_curves  # noqa: E402
import _metrics_faithfulness  # noqa: E402
import _metrics_localisation  # noqa: E402
import _metrics_randomisation  # noqa: E402
import _metrics_robustness  # noqa: E402
import _zoo  # noqa: E402
from _common import environment, write_results  # noqa: E402
from _metrics_common import Inputs  # noqa: E402

import featvis_fast as fv  # noqa: E402

FAMILIES = (_metrics_curves, _metrics_faithfulness, _metrics_robustness, _metrics_localisation,
            _metrics_randomisation)
SIZE = 224


def build_model(name: str, device: str) -> torch.nn.Module:
    if name == "efficientnet-lite0":
        return fv.load_model(device=device)[0]
    return _zoo.realistic(_zoo.torchvision_models().resnet50(), SIZE).to(device).eval()


def photos(device: str) -> torch.Tensor:
    """The four bundled photos and their mirror images, (8, 3, 224, 224), ImageNet-normalized."""
    _, preprocess = fv.load_model()
    x = torch.cat([preprocess(fv.load_image(name), size=SIZE) for name in fv.sample_images()])
    return torch.cat([x, x.flip(3)]).to(device)


def saliency_numpy(model, inputs, targets, **kwargs) -> np.ndarray:
    """Quantus-style explain_func: the channel sum of |gradient| (B, 1, H, W) as a NumPy array."""
    device = next(model.parameters()).device
    x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=device)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=device)
    return fv.saliency(model, x, y, abs=True).sum(1, keepdim=True).detach().cpu().numpy()


def make_inputs(model: torch.nn.Module, device: str) -> Inputs:
    x = photos(device)
    with torch.no_grad():
        target = model(x).argmax(1)
    a = fv.saliency(model, x, target, abs=True).sum(1, keepdim=True).detach()
    return Inputs(model, x, a, target, x.cpu().numpy(), a.cpu().numpy(), target.cpu().numpy(), saliency_numpy,
                  device)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, inputs: Inputs) -> tuple[float, np.ndarray]:
    _sync(inputs.device)
    start = time.perf_counter()
    out = fn(inputs)
    _sync(inputs.device)
    seconds = time.perf_counter() - start
    if isinstance(out, torch.Tensor):
        out = out.detach().double().cpu().numpy()
    return seconds, np.asarray(out, dtype=np.float64).reshape(-1)


def relative_difference(ours: np.ndarray, theirs: np.ndarray) -> float:
    if ours.shape != theirs.shape:
        return float("inf")
    both_nan = np.isnan(ours) & np.isnan(theirs)
    if (np.isnan(ours) ^ np.isnan(theirs)).any():
        return float("inf")
    ours, theirs = ours[~both_nan], theirs[~both_nan]
    if not ours.size:
        return 0.0
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-300))


def _cell(text: str) -> str:
    """Text for a Markdown table cell (a | would end the cell)."""
    return text.replace("|", "\\|")


def write(rows: list[dict], env: dict, device: str) -> None:
    """The JSON and Markdown results (rewritten after each case, so a long run keeps what it measured)."""
    lines = [f"# Metrics: featvis_fast.metrics vs the references ({env['device']}, {env['date']})", "",
             "8 images (the bundled photos and their mirror images), 224 px, saliency attributions; ratio = "
             "reference seconds / ours; diff = largest |ours - reference| / largest |reference| over the images.",
             "", "| model | metric | reference | ours (s) | reference (s) | ratio | diff | settings |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        if r["reference"] is None:
            lines.append(f"| {r['model']} | {r['metric']} | - | {r['ours_s']:.2f} | - | - | - | {_cell(r['note'])} |")
        else:
            lines.append(f"| {r['model']} | {r['metric']} | {r['reference']} | {r['ours_s']:.2f} | "
                         f"{r['reference_s']:.2f} | {r['speedup']:.1f}x | {r['max_rel_diff']:.1e} | "
                         f"{_cell(r['note'])} |")
    paths = write_results("metrics", device, env, rows, "\n".join(lines) + "\n")
    print("wrote", *paths, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", default=["efficientnet-lite0", "resnet50"])
    parser.add_argument("--only", nargs="+", default=None, help="metric names (MetricCase.name) to run")
    parser.add_argument("--skip-references", nargs="+", default=[], help="references not to run (e.g. quantus)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    cases = [c for family in FAMILIES for c in family.cases() if args.only is None or c.name in args.only]
    env = environment(args.device)
    rows = []
    for model_name in args.models:
        model = build_model(model_name, args.device)
        inputs = make_inputs(model, args.device)
        for case in cases:
            timed(case.ours, inputs)  # warm-up: kernels built, first-call plans made
            ours_s, ours = timed(case.ours, inputs)
            for ref_name, ref in case.references.items():
                if ref_name in args.skip_references:
                    continue
                try:
                    ref_s, theirs = timed(ref, inputs)
                except ImportError as exc:  # a reference the machine lacks (the GPU image: see gpu_session.sh)
                    print(f"{model_name:>18} {case.name:>30} vs {ref_name:<8} skipped: {exc}", flush=True)
                    continue
                row = {"model": model_name, "metric": case.name, "reference": ref_name, "ours_s": ours_s,
                       "reference_s": ref_s, "speedup": ref_s / ours_s,
                       "max_rel_diff": relative_difference(ours, theirs), "note": case.note}
                rows.append(row)
                print(f"{model_name:>18} {case.name:>30} vs {ref_name:<8} ours {ours_s:8.2f} s  "
                      f"{ref_name} {ref_s:8.2f} s  {row['speedup']:6.1f}x  max rel diff {row['max_rel_diff']:.1e}",
                      flush=True)
            if not case.references:
                rows.append({"model": model_name, "metric": case.name, "reference": None, "ours_s": ours_s,
                             "note": case.note})
            write(rows, env, args.device)


if __name__ == "__main__":
    main()
