"""`featvis evaluate [IMAGES] --methods saliency,gradcam --metrics deletion,insertion --out DIR`: every
method x metric on a folder of images (default: the bundled photos with the default model),
resumable (rerun the same command after an interruption), then the report: index.html (table with
mean and 95% confidence interval per cell, ranking per metric, deletion / insertion curves),
results.csv and results.json (featvis_fast.metrics.evaluate, featvis_fast.metrics.write_report)."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..images import load_image, sample_images
from ..jobs import job_device
from ..metrics import LAYER_METHODS, default_cam_layer, evaluate, load_regions, report
from ..metrics.registry import REGISTRY
from ..models import load_model
from . import options

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_METHODS = "saliency,integrated_gradients,gradcam"
DEFAULT_METRICS = "deletion,insertion,sparseness,complexity"


def _image_files(folder: str | None) -> list[tuple[str, object]]:
    """(name, PIL image) of every image file in the folder (sorted), or of the bundled photos."""
    if folder is None:
        return [(name, load_image(name)) for name in sample_images()]
    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"IMAGES must be a folder of images, {folder!r} is not a directory")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return [(p.name, load_image(p)) for p in files]


def _names(text: str, kind: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--{kind} is empty")
    return names


def run(args: argparse.Namespace) -> int:
    device = job_device() if args.device is None else torch.device(args.device)
    model, preprocess = load_model(args.model, device=device)
    methods, metrics = _names(args.methods, "methods"), _names(args.metrics, "metrics")
    pictures = _image_files(args.images)
    images = [(name, preprocess(picture, size=args.size)) for name, picture in pictures]
    regions = None
    if args.boxes is not None:
        regions = load_regions(args.boxes, [n for n, _ in images], args.size, args.size,
                               [picture.size for _, picture in pictures])
    layer = args.layer or default_cam_layer(model)
    method_kwargs = {m: {"layer": layer} for m in methods if m in LAYER_METHODS}
    cells = evaluate(model, images, methods, metrics, args.out, regions=regions, target=args.target,
                                batch_size=args.batch, seed=args.seed, method_kwargs=method_kwargs,
                                record={"model": args.model, "size": args.size,
                                        "images_from": args.images or "bundled photos",
                                        "boxes": args.boxes}, progress=not args.no_progress)
    page = report.write_report(cells, args.out, title=f"featvis evaluate: {args.model}, {len(images)} images")
    for s in report.summarize(cells):
        print(f"{s.metric:>24}  {s.method:<22} {s.mean:.4g}  [{s.ci_low:.4g}, {s.ci_high:.4g}]  rank {s.rank}")
    print(f"report: {page}")
    return 0


def add_parser(sub) -> None:
    e = sub.add_parser("evaluate", help="score explanation methods with evaluation metrics (HTML/CSV/JSON report)")
    e.add_argument("images", nargs="?", default=None, help="a folder of images (default: the bundled photos)")
    e.add_argument("--methods", default=DEFAULT_METHODS,
                   help=f"comma-separated explanation methods (default {DEFAULT_METHODS})")
    e.add_argument("--metrics", default=DEFAULT_METRICS,
                   help=f"comma-separated metrics, of: {', '.join(REGISTRY)} (default {DEFAULT_METRICS})")
    e.add_argument("--boxes", default=None,
                   help="JSON {image file name: [[x0, y0, x1, y1], ...]} in the image file's pixels "
                        "(the localisation metrics need it)")
    e.add_argument("--out", required=True, help="output directory (rerun the same command to resume)")
    e.add_argument("--layer", default=None, help="the CAMs' layer (default: the model's last convolution)")
    e.add_argument("--target", type=int, default=None, help="explain this class (default: each image's prediction)")
    e.add_argument("--batch", type=int, default=4, help="images per batch")
    e.add_argument("--seed", type=int, default=0, help="seed of the metrics' random draws")
    options.add_model(e)
    options.add_size(e)
    options.add_device(e, job=True)
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=run)
