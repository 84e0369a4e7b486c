"""`featvis similarity IMAGE --layer L --pixel Y,X --out PNG`: one similarity heat map over a photo."""
from __future__ import annotations

import argparse

from ..images import load_image
from ..models import load_model
from ..render import COLORMAPS
from ..similarity import METRICS, similarity_overlay
from . import options


def run(args: argparse.Namespace) -> int:
    model, preprocess = load_model(device=args.device)
    out = similarity_overlay(model, preprocess, load_image(args.image), args.layer, args.pixel, args.metric,
                             args.colormap, args.size or None, options.DTYPES[args.dtype], args.backend, args.alpha,
                             args.device)
    out.save(args.out)
    print(f"wrote {args.out}")
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("similarity", help="per-pixel feature-similarity heat map over an image")
    s.add_argument("image", help=options.IMAGE_HELP)
    options.add_layer(s, "layer name, e.g. _blocks.10 (see featvis_fast.layer_names)")
    s.add_argument("--pixel", required=True, type=options.pixel, help="reference pixel Y,X in image coordinates")
    s.add_argument("--metric", default="cosine", choices=METRICS)
    s.add_argument("--colormap", default="fire", choices=COLORMAPS)
    options.add_size(s, native=True)
    options.add_dtype(s)
    s.add_argument("--alpha", type=float, default=0.6, help="heat-map opacity")
    s.add_argument("--out", required=True, help="output PNG")
    options.add_backend(s)
    options.add_device(s)
    s.set_defaults(func=run)
