"""`featvis invert IMAGE ... --layer L --out DIR`: a resumable network-inversion job (FeatureVis preset)."""
from __future__ import annotations

import argparse
import functools
from pathlib import Path

import torch

from .. import jobs
from ..images import load_image
from ..reconstruction.invert import Inversion, featurevis_settings
from . import options
from .job import chunks, common_settings, run_units, safe_name


def build_units(args: argparse.Namespace, model, preprocess, device) -> tuple[list, dict]:
    images = [(safe_name(Path(str(i)).stem), preprocess(load_image(i), size=args.size)) for i in args.images]
    settings = featurevis_settings(args.size, args.size, p=args.p, lr=args.lr)
    units = []
    for k, chunk in enumerate(chunks(images, args.batch)):
        x = torch.cat([t for _, t in chunk]).to(device)
        units.append(jobs.WorkUnit(k, [n for n, _ in chunk],
                               lambda seed, x=x: Inversion(model, x, args.layer, seed=seed, settings=settings,
                                                           backend=args.backend, autocast=args.autocast,
                                                           cuda_graph=args.cuda_graph)))
    described = {**common_settings(args), "method": "invert", "images": [str(i) for i in args.images],
                 "layer": args.layer, "p": args.p, "lr": args.lr}
    return units, described


def add_parser(sub) -> None:
    i = sub.add_parser("invert", help="network inversion job (FeatureVis preset; resumable)")
    i.add_argument("images", nargs="+", help="image paths or sample names (astronaut, chelsea, coffee, rocket)")
    options.add_layer(i, "the layer whose features are matched, e.g. _blocks.6")
    i.add_argument("--steps", type=int, default=100)
    options.add_size(i)
    i.add_argument("--p", type=float, default=6.0, help="the p of the p-norm regularizer")
    i.add_argument("--lr", type=float, default=0.25)
    options.add_job_options(i, batch=8)
    i.set_defaults(func=functools.partial(run_units, build_units=build_units))
