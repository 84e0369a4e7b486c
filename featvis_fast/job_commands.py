"""The reconstruction jobs of the `featvis` command (maximize, invert, class-agnostic): command-line
arguments -> work units (featvis_fast.jobs) -> outputs. Every argument that changes the images is
recorded in job.json, so a rerun with the same command resumes and a different one is refused."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from . import jobs
from .images import load_image
from .models import load_model
from .reconstruction import objectives as obj
from .reconstruction._ascent import StepSettings
from .reconstruction.class_agnostic import ClassAgnostic
from .reconstruction.invert import Inversion, featurevis_settings
from .reconstruction.maximize import Maximization, resolve_many


def safe_name(text: str) -> str:
    """A file stem for a target: characters other than letters, digits, '.', '_', '-' become '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).lstrip(".") or "target"


def _chunks(items: list, size: int) -> list[list]:
    if size < 1:
        raise ValueError(f"--batch must be >= 1, got {size}")
    return [items[k:k + size] for k in range(0, len(items), size)]


def expand_targets(model: torch.nn.Module, specs: list[str], size: int, device) -> list[str]:
    """Objective strings, one per image: "layer:*" becomes "layer:0", "layer:1", ...; each is
    checked against the model (unknown layer, channel out of range, bad syntax)."""
    targets = []
    for spec, parsed in zip(specs, resolve_many(model, specs, (size, size), device)):
        if isinstance(parsed, obj.Sum) and len(parsed.terms) == 1 and parsed.terms[0][0] == 1.0:
            parsed = parsed.terms[0][1]
        if type(parsed) is obj.Channel and parsed.images:
            targets += [f"{parsed.layer}:{int(c)}" for c in parsed.channel]
        elif parsed.images not in (None, 1):
            raise ValueError(f"objective {spec!r} asks for {parsed.images} images; a job makes one per target")
        else:
            targets.append(spec)
    return targets


def _common(args: argparse.Namespace) -> dict:
    return {"model": args.model, "size": args.size, "batch": args.batch, "backend": args.backend,
            "autocast": args.autocast}  # --cuda-graph changes only rounding, so a job may resume without it


def maximize_units(args: argparse.Namespace, model, device) -> tuple[list[jobs.Unit], dict]:
    targets = expand_targets(model, args.objective, args.size, device)
    settings = StepSettings(optimizer=args.optimizer, lr=args.lr, jitter=args.jitter)
    units = []
    for k, chunk in enumerate(_chunks(targets, args.batch)):
        def build(seed, chunk=chunk):
            goal = obj.Each([obj.parse(t) for t in chunk])
            return Maximization(model, goal, size=args.size, param=args.param, transforms=args.transforms, seed=seed,
                                settings=settings, backend=args.backend, autocast=args.autocast,
                                cuda_graph=args.cuda_graph)
        units.append(jobs.Unit(k, [safe_name(t) for t in chunk], build))
    described = {**_common(args), "method": "maximize", "targets": targets, "param": args.param,
                 "transforms": args.transforms, "optimizer": args.optimizer, "lr": args.lr, "jitter": args.jitter}
    return units, described


def invert_units(args: argparse.Namespace, model, preprocess, device) -> tuple[list[jobs.Unit], dict]:
    images = [(safe_name(Path(str(i)).stem), preprocess(load_image(i), size=args.size)) for i in args.images]
    settings = featurevis_settings(args.size, args.size, p=args.p, lr=args.lr)
    units = []
    for k, chunk in enumerate(_chunks(images, args.batch)):
        x = torch.cat([t for _, t in chunk]).to(device)
        units.append(jobs.Unit(k, [n for n, _ in chunk],
                               lambda seed, x=x: Inversion(model, x, args.layer, seed=seed, settings=settings,
                                                           backend=args.backend, autocast=args.autocast,
                                                           cuda_graph=args.cuda_graph)))
    described = {**_common(args), "method": "invert", "images": [str(i) for i in args.images], "layer": args.layer,
                 "p": args.p, "lr": args.lr}
    return units, described


def _image_paths(items: list[str]) -> list[str]:
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


def class_agnostic_units(args: argparse.Namespace, model, preprocess, device) -> tuple[list[jobs.Unit], dict]:
    paths = _image_paths(args.images)
    if len(paths) < 2:
        raise ValueError(f"class-agnostic visualization clusters images: give 2 or more, got {len(paths)}")
    x = torch.cat([preprocess(load_image(p), size=args.size) for p in paths]).to(device)
    clusters = min(args.clusters, len(paths))  # what the clustering makes (see _clusters.find_facets)
    options = dict(steps=args.steps, size=args.size, clusters=args.clusters, per_cluster=args.per_cluster,
                   top_channels=args.top_channels, pca=args.pca, penalty=args.penalty, seed=args.seed,
                   backend=args.backend)
    units = []
    for k, chunk in enumerate(_chunks(list(range(clusters)), args.batch)):
        # every unit clusters with the job's seed (the same facets); the optimization draws nothing
        units.append(jobs.Unit(k, [f"cluster-{c:02d}" for c in chunk],
                               lambda seed, chunk=chunk: ClassAgnostic(model, x, args.layer, only=chunk, **options)))
    described = {**_common(args), "method": "class-agnostic", "images": paths, "layer": args.layer,
                 "clusters": args.clusters, "per_cluster": args.per_cluster, "top_channels": args.top_channels,
                 "pca": args.pca, "penalty": args.penalty, "preset": "stergiou"}
    return units, described


def _device(args: argparse.Namespace) -> torch.device:
    try:
        device = jobs.job_device() if args.device is None else torch.device(args.device)
    except RuntimeError as exc:
        raise ValueError(f"bad --device {args.device!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device} asks for CUDA, which this torch build or machine does not have")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda[:N], got {args.device!r}")
    return device


def _threads(args: argparse.Namespace) -> int:
    """CPU results depend on the thread count: --threads, else the count the job recorded, else
    torch's (torchrun sets 1 per process)."""
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        return args.threads
    spec = Path(args.out) / "job.json"
    if spec.exists():
        recorded = json.loads(spec.read_text()).get("threads")
        if recorded:
            return int(recorded)
    return torch.get_num_threads()


def run(args: argparse.Namespace) -> int:
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    device = _device(args)
    threads = None
    if device.type == "cpu":
        threads = _threads(args)
        torch.set_num_threads(threads)
    model, preprocess = load_model(args.model, device=device)
    if args.command == "maximize":
        units, described = maximize_units(args, model, device)
    elif args.command == "invert":
        units, described = invert_units(args, model, preprocess, device)
    else:
        units, described = class_agnostic_units(args, model, preprocess, device)
    described.update(device=device.type, threads=threads)
    manifest = jobs.run_job(units, args.out, steps=args.steps, seed=args.seed, settings=described,
                            checkpoint_every=args.checkpoint_every, progress=not args.no_progress)
    if manifest is not None:
        print(f"{len(manifest['targets'])} images, grid.png and manifest.json in {args.out}")
    return 0


def add_parsers(sub) -> None:
    """The job subcommands, on the `featvis` parser's subparsers."""
    m = sub.add_parser("maximize", help="activation maximization job (resumable; torchrun for many GPUs)")
    m.add_argument("--objective", nargs="+", required=True,
                   help='objectives, one image each: "_blocks.10:37", "_blocks.10:*" (every channel), "class:285", '
                        '"_blocks.10:37 - 0.5*_blocks.10:3"')
    m.add_argument("--steps", type=int, default=512)
    m.add_argument("--size", type=int, default=224)
    m.add_argument("--param", default="fft", choices=["fft", "pixel"])
    m.add_argument("--transforms", default="standard", choices=["standard", "none"])
    m.add_argument("--optimizer", default="adam", choices=["adam", "sgd", "nesterov"])
    m.add_argument("--lr", type=float, default=0.05)
    m.add_argument("--jitter", type=int, default=0, help="random crop inside the fused step (pixel param only)")
    i = sub.add_parser("invert", help="network inversion job (FeatureVis preset; resumable)")
    i.add_argument("images", nargs="+", help="image paths or sample names (astronaut, chelsea, coffee, rocket)")
    i.add_argument("--layer", required=True, help="the layer whose features are matched, e.g. _blocks.6")
    i.add_argument("--steps", type=int, default=100)
    i.add_argument("--size", type=int, default=224)
    i.add_argument("--p", type=float, default=6.0, help="the p of the p-norm regularizer")
    i.add_argument("--lr", type=float, default=0.25)
    c = sub.add_parser("class-agnostic", help="class-agnostic visualization job (Stergiou 2021 preset; resumable)")
    c.add_argument("images", nargs="+", help="image paths, directories of .jpg/.png, or sample names")
    c.add_argument("--layer", required=True, help="the layer visualized, e.g. _blocks.15")
    c.add_argument("--steps", type=int, default=2001)
    c.add_argument("--size", type=int, default=512)
    c.add_argument("--clusters", type=int, default=10)
    c.add_argument("--per-cluster", type=int, default=10, help="images blended into each cluster's target")
    c.add_argument("--top-channels", type=int, default=50)
    c.add_argument("--pca", type=int, default=50, help="PCA components before t-SNE")
    c.add_argument("--penalty", default=None, help="module whose input gets the L1 penalty (default: the "
                                                   "last convolution inside --layer)")
    for p, batch in ((m, 16), (i, 8), (c, 10)):
        p.add_argument("--out", required=True, help="output directory (rerun the same command to resume)")
        p.add_argument("--batch", type=int, default=batch, help="images optimized together (one work unit)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints")
        p.add_argument("--model", default="efficientnet-lite0")
        p.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK if CUDA is there, else cpu")
        p.add_argument("--threads", type=int, default=None,
                       help="CPU threads (the images depend on it; default: the job's recorded count, else torch's)")
        p.add_argument("--backend", default=None, choices=["cuda", "triton", "cpp", "torch"])
        p.add_argument("--autocast", default=None, choices=["bf16", "fp16"], help="run the model under autocast")
        p.add_argument("--no-progress", action="store_true")
        if p is not c:  # the class-agnostic schedules change the objective every step
            p.add_argument("--cuda-graph", action="store_true", help="replay each step's model part from a CUDA graph")
        p.set_defaults(func=run)
