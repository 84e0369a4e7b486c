"""`featvis demo`: every family on the bundled model and sample photos (featvis_fast.demo)."""
from __future__ import annotations

import argparse

from . import options


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    for path in run_demo(args.out, device=args.device, backend=args.backend,
                         attribution_display=args.attribution_display):
        print(f"wrote {path}")
    return 0


def add_parser(sub) -> None:
    d = sub.add_parser("demo", help="every visualization on the bundled model and sample photos")
    d.add_argument("--out", default="featvis-demo", help="output directory")
    d.add_argument("--attribution-display", default="clipped", choices=["clipped", "featvis"],
                   help="saliency / guided backprop display: Captum's 2%% outlier clipping or FeatureVis' /max")
    options.add_backend(d)
    options.add_device(d)
    d.set_defaults(func=run)
