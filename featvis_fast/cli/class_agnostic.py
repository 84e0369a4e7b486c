"""`featvis class-agnostic IMAGES --layer L --out DIR`: a resumable class-agnostic visualization job
(Stergiou 2021 preset), one work unit per group of clusters."""
from __future__ import annotations

import argparse
import functools
from pathlib import Path

import torch

from .. import jobs
from ..images import load_image
from ..reconstruction.class_agnostic import ClassAgnostic
from . import options
from .job import chunks, common_settings, run_units


def image_paths(items: list[str]) -> list[str]:
    """Paths or sample names; a directory stands for its .jpg / .jpeg / .png files (sorted)."""
    out = []
    for item in items:
        if Path(item).is_dir():
            found = sorted(str(p) for p in Path(item).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            if not found:
                raise ValueError(f"directory {item!r} holds no .jpg or .png images")
            out += found
        else:
            out.append(item)
    return out


def build_units(args: argparse.Namespace, model, preprocess, device) -> tuple[list, dict]:
    paths = image_paths(args.images)
    if len(paths) < 2:
        raise ValueError(f"class-agnostic visualization clusters images: give 2 or more, got {len(paths)}")
    x = torch.cat([preprocess(load_image(p), size=args.size) for p in paths]).to(device)
    clusters = min(args.clusters, len(paths))  # what the clustering makes (see _clusters.find_facets)
    settings = dict(steps=args.steps, size=args.size, clusters=args.clusters, per_cluster=args.per_cluster,
                    top_channels=args.top_channels, pca=args.pca, penalty=args.penalty, seed=args.seed,
                    backend=args.backend)
    units = []
    for k, chunk in enumerate(chunks(list(range(clusters)), args.batch)):
        # every unit clusters with the job's seed (the same facets); the optimization draws nothing
        units.append(jobs.WorkUnit(k, [f"cluster-{c:02d}" for c in chunk],
                               lambda seed, chunk=chunk: ClassAgnostic(model, x, args.layer, only=chunk, **settings)))
    described = {**common_settings(args), "method": "class-agnostic", "images": paths, "layer": args.layer,
                 "clusters": args.clusters, "per_cluster": args.per_cluster, "top_channels": args.top_channels,
                 "pca": args.pca, "penalty": args.penalty, "preset": "stergiou"}
    return units, described


def add_parser(sub) -> None:
    c = sub.add_parser("class-agnostic", help="class-agnostic visualization job (Stergiou 2021 preset; resumable)")
    c.add_argument("images", nargs="+", help="image paths, directories of .jpg/.png, or sample names")
    options.add_layer(c, "the layer visualized, e.g. _blocks.15")
    c.add_argument("--steps", type=int, default=2001)
    options.add_size(c, 512)
    c.add_argument("--clusters", type=int, default=10)
    c.add_argument("--per-cluster", type=int, default=10, help="images blended into each cluster's target")
    c.add_argument("--top-channels", type=int, default=50)
    c.add_argument("--pca", type=int, default=50, help="PCA components before t-SNE")
    c.add_argument("--penalty", default=None, help="module whose input gets the L1 penalty (default: the "
                                                   "last convolution inside --layer)")
    # no --cuda-graph: the class-agnostic schedules change the objective every step
    options.add_job_options(c, batch=10, cuda_graph=False)
    c.set_defaults(func=functools.partial(run_units, build_units=build_units))
