"""The `featvis` command: similarity heat maps, IFeaLiD export, the demo job, reconstruction jobs
(maximize, invert, class-agnostic; see job_commands), Network Dissection (dissection.command), and
backend status."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import ImageDraw

from . import backends, extract, job_commands, load_image, load_model, overlay
from .dissection import command as dissect_command
from .render import COLORMAPS
from .similarity import METRICS, FeatureSimilarity

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int8": torch.int8}


def _pixel(text: str) -> tuple[int, int]:
    try:
        y, x = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--pixel takes Y,X (two integers), got {text!r}") from None
    return y, x


def similarity_overlay(model, preprocess, image, layer: str, pixel: tuple[int, int], metric: str = "cosine",
                       colormap: str = "fire", size: int | None = 224, dtype=torch.float16,
                       backend: str | None = None, alpha: float = 0.6, device: str = "cpu"):
    """Heat map of feature similarity to image pixel (y, x), overlaid on the image (PIL RGB)."""
    y, x = pixel
    if not (0 <= y < image.height and 0 <= x < image.width):
        raise ValueError(f"pixel (y={y}, x={x}) lies outside the {image.width}x{image.height} image")
    feats = extract(model, preprocess(image, size=size).to(device), layer)[0]
    sim = FeatureSimilarity(feats, metric=metric, dtype=dtype, backend=backend)
    cell = sim.image_to_cell(x, y, image.size)
    rgba = sim.render(cell, colormap=colormap, size=(image.height, image.width))
    out = overlay(image, rgba, alpha)
    r = max(3, min(image.size) // 80)
    ImageDraw.Draw(out).ellipse((x - r, y - r, x + r, y + r), outline="cyan", width=max(1, r // 2))
    return out


def _cmd_similarity(args: argparse.Namespace) -> int:
    model, preprocess = load_model(device=args.device)
    image = load_image(args.image)
    out = similarity_overlay(model, preprocess, image, args.layer, args.pixel, args.metric, args.colormap,
                             args.size or None, _DTYPES[args.dtype], args.backend, args.alpha, args.device)
    out.save(args.out)
    print(f"wrote {args.out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    for path in run_demo(args.out, device=args.device, backend=args.backend,
                         attribution_display=args.attribution_display):
        print(f"wrote {path}")
    return 0


def _cmd_export_ifealid(args: argparse.Namespace) -> int:
    from .viewer.feature_files import export_ifealid

    model, preprocess = load_model(device=args.device)
    name = args.name or f"{Path(args.image).stem} {args.layer}"
    meta = export_ifealid(model, preprocess, load_image(args.image), args.layer, args.out, name, args.precision,
                          args.size or None, args.device)
    print(f"wrote {args.out} ({meta['features']} channels, {meta['width']}x{meta['height']}, {args.precision}-bit)")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .viewer.launch import build_session, serve

    session = build_session(args.images, args.features, args.model, args.layers, args.device, _DTYPES[args.dtype],
                            args.backend, args.input_size)
    serve(session, args.host, args.port, open_browser=not args.no_browser)
    return 0


def _cmd_backends(args: argparse.Namespace) -> int:
    for status in backends().values():
        print(status)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="featvis", description="Fast CNN feature visualization.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("similarity", help="per-pixel feature-similarity heat map over an image")
    s.add_argument("image", help="image path or sample name (astronaut, chelsea, coffee, rocket)")
    s.add_argument("--layer", required=True, help="layer name, e.g. _blocks.10 (see featvis_fast.layer_names)")
    s.add_argument("--pixel", required=True, type=_pixel, help="reference pixel Y,X in image coordinates")
    s.add_argument("--metric", default="cosine", choices=METRICS)
    s.add_argument("--colormap", default="fire", choices=COLORMAPS)
    s.add_argument("--size", type=int, default=224, help="model input size (0 = the image's own resolution)")
    s.add_argument("--dtype", default="float16", choices=list(_DTYPES), help="feature cache precision")
    s.add_argument("--alpha", type=float, default=0.6, help="heat-map opacity")
    s.add_argument("--out", required=True, help="output PNG")
    s.set_defaults(func=_cmd_similarity)

    d = sub.add_parser("demo", help="every visualization on the bundled model and sample photos")
    d.add_argument("--out", default="featvis-demo", help="output directory")
    d.add_argument("--attribution-display", default="clipped", choices=["clipped", "featvis"],
                   help="saliency / guided backprop display: Captum's 2%% outlier clipping or FeatureVis' /max")
    d.set_defaults(func=_cmd_demo)

    e = sub.add_parser("export-ifealid", help="an image's features at one layer as an IFeaLiD ZIP")
    e.add_argument("image", help="image path or sample name (astronaut, chelsea, coffee, rocket)")
    e.add_argument("--layer", required=True, help="layer name, e.g. _blocks.10 (see featvis_fast.layer_names)")
    e.add_argument("--out", required=True, help="output ZIP (metadata.json, channel PNGs, overlay.jpg)")
    e.add_argument("--precision", type=int, default=8, choices=[8, 16, 32], help="bits per stored value")
    e.add_argument("--size", type=int, default=224, help="model input size (0 = the image's own resolution)")
    e.add_argument("--name", default=None, help="dataset name in metadata.json (default: 'IMAGE LAYER')")
    e.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    e.set_defaults(func=_cmd_export_ifealid)

    v = sub.add_parser("serve", help="the interactive similarity viewer in the browser")
    v.add_argument("images", nargs="*", help="image paths or sample names (astronaut, chelsea, coffee, rocket)")
    v.add_argument("--features", nargs="+", default=[], metavar="FILE",
                   help="precomputed (H,W,C) .npy / .npz feature maps or IFeaLiD .zip files")
    v.add_argument("--model", default="efficientnet-lite0", help="the model run on IMAGEs")
    v.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                   help="layers offered in the page (default: the model's blocks)")
    v.add_argument("--host", default="127.0.0.1", help="interface to bind (the token is required on every host)")
    v.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    v.add_argument("--input-size", type=int, default=1024,
                   help="images are resized so their longest side is this before the model (0 = as they are)")
    v.add_argument("--dtype", default="float16", choices=list(_DTYPES), help="feature cache precision")
    v.add_argument("--no-browser", action="store_true", help="print the URL without opening a browser")
    v.set_defaults(func=_cmd_serve)

    job_commands.add_parsers(sub)
    dissect_command.add_parser(sub)

    b = sub.add_parser("backends", help="which kernel backends are available here")
    b.set_defaults(func=_cmd_backends)

    for sp in (s, d, v):
        sp.add_argument("--backend", default=None, choices=["cuda", "triton", "cpp", "torch"])
        sp.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, RuntimeError, OSError) as exc:
        print(f"featvis: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
