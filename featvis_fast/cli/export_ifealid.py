"""`featvis export-ifealid IMAGE --layer L --out ZIP`: an image's features as an IFeaLiD dataset."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..images import load_image
from ..models import load_model
from . import options


def run(args: argparse.Namespace) -> int:
    from ..viewer.feature_files import export_ifealid

    model, preprocess = load_model(device=args.device)
    name = args.name or f"{Path(args.image).stem} {args.layer}"
    meta = export_ifealid(model, preprocess, load_image(args.image), args.layer, args.out, name, args.precision,
                          args.size or None, args.device)
    print(f"wrote {args.out} ({meta['features']} channels, {meta['width']}x{meta['height']}, {args.precision}-bit)")
    return 0


def add_parser(sub) -> None:
    e = sub.add_parser("export-ifealid", help="an image's features at one layer as an IFeaLiD ZIP")
    e.add_argument("image", help=options.IMAGE_HELP)
    options.add_layer(e, "layer name, e.g. _blocks.10 (see featvis_fast.layer_names)")
    e.add_argument("--out", required=True, help="output ZIP (metadata.json, channel PNGs, overlay.jpg)")
    e.add_argument("--precision", type=int, default=8, choices=[8, 16, 32], help="bits per stored value")
    options.add_size(e, native=True)
    e.add_argument("--name", default=None, help="dataset name in metadata.json (default: 'IMAGE LAYER')")
    options.add_device(e)
    e.set_defaults(func=run)
