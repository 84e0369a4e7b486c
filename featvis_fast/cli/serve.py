"""`featvis serve [IMAGE ...] [--features FILE ...]`: the interactive similarity viewer."""
from __future__ import annotations

import argparse

from . import options


def run(args: argparse.Namespace) -> int:
    from ..viewer.launch import build_session, serve

    session = build_session(args.images, args.features, args.model, args.layers, args.device,
                            options.DTYPES[args.dtype], args.backend, args.input_size)
    serve(session, args.host, args.port, open_browser=not args.no_browser)
    return 0


def add_parser(sub) -> None:
    v = sub.add_parser("serve", help="the interactive similarity viewer in the browser")
    v.add_argument("images", nargs="*", help="image paths or sample names (astronaut, chelsea, coffee, rocket)")
    v.add_argument("--features", nargs="+", default=[], metavar="FILE",
                   help="precomputed (H,W,C) .npy / .npz feature maps or IFeaLiD .zip files")
    v.add_argument("--model", default=options.DEFAULT_MODEL, help="the model run on IMAGEs")
    v.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                   help="layers offered in the page (default: the model's blocks)")
    v.add_argument("--host", default="127.0.0.1", help="interface to bind (the token is required on every host)")
    v.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    v.add_argument("--input-size", type=int, default=1024,
                   help="images are resized so their longest side is this before the model (0 = as they are)")
    options.add_dtype(v)
    v.add_argument("--no-browser", action="store_true", help="print the URL without opening a browser")
    options.add_backend(v)
    options.add_device(v)
    v.set_defaults(func=run)
