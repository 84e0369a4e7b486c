"""`featvis dissect --layer L --data DIR --out DIR`: dissect a layer of a model on a folder dataset
(featvis_fast.dissection.data), write the HTML report and results.json. Under torchrun the
dataset's batches are shared among the processes and rank 0 writes the outputs."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..dissection.data import FolderDataset
from ..dissection.dissect import dissect
from ..jobs import job_device, rank_and_world
from ..models import IMAGENET_MEAN, IMAGENET_STD, load_model
from . import options


def run(args: argparse.Namespace) -> int:
    rank, _ = rank_and_world()
    device = job_device() if args.device is None else torch.device(args.device)
    model, preprocess = load_model(args.model, device=device)
    data = FolderDataset(args.data, transform=lambda im: preprocess(im, size=args.size)[0], batch_size=args.batch)
    result = dissect(model, data, args.layer, quantile=args.quantile, iou_threshold=args.iou_threshold,
                     top_n=args.top, mean=IMAGENET_MEAN, std=IMAGENET_STD, backend=args.backend,
                     progress=not args.no_progress)
    if rank != 0:
        return 0
    out = Path(args.out)
    page = result.save_report(out)
    index, best = result.best
    units = [{"unit": u, "label": label, "concept": result.concepts[int(index[u])].name,
              "category": result.concepts[int(index[u])].category, "iou": float(best[u]),
              "threshold": float(result.thresholds[u])} for u, label in enumerate(result.labels)]
    summary = {"layer": args.layer, "model": args.model, "images": result.n_images, "quantile": args.quantile,
               "iou_threshold": args.iou_threshold, "interpretable_per_category": result.counts_per_category(),
               "units": units}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    print(f"{int(result.interpretable.sum())} of {len(units)} units interpretable; report: {page}")
    return 0


def add_parser(sub) -> None:
    d = sub.add_parser("dissect", help="Network Dissection of a layer on a labelled folder dataset")
    options.add_layer(d, "the layer whose units are labelled, e.g. _blocks.10")
    d.add_argument("--data", required=True, help="dataset folder (concepts.csv, index.csv, images/, labels/)")
    d.add_argument("--out", required=True, help="output directory (index.html, summary.png, results.json)")
    options.add_model(d)
    options.add_size(d)
    d.add_argument("--batch", type=int, default=32, help="images per batch")
    d.add_argument("--quantile", type=float, default=0.005, help="top quantile of activations per unit")
    d.add_argument("--iou-threshold", type=float, default=0.04)
    d.add_argument("--top", type=int, default=8, help="top images per unit in the report")
    options.add_device(d, job=True)
    options.add_backend(d)
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=run)
