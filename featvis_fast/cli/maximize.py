"""`featvis maximize --objective ... --out DIR`: a resumable activation-maximization job."""
from __future__ import annotations

import argparse
import functools

import torch

from .. import jobs
from ..reconstruction import StepSettings
from ..reconstruction import objectives as obj
from ..reconstruction.maximize import Maximization, resolve_many
from . import options
from .job import chunks, common_settings, run_units, safe_name


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


def build_units(args: argparse.Namespace, model, preprocess, device) -> tuple[list, dict]:
    targets = expand_targets(model, args.objective, args.size, device)
    settings = StepSettings(optimizer=args.optimizer, lr=args.lr, jitter=args.jitter)
    units = []
    for k, chunk in enumerate(chunks(targets, args.batch)):
        def build(seed, chunk=chunk):
            goal = obj.Each([obj.parse(t) for t in chunk])
            return Maximization(model, goal, size=args.size, param=args.param, transforms=args.transforms, seed=seed,
                                settings=settings, backend=args.backend, autocast=args.autocast,
                                cuda_graph=args.cuda_graph)
        units.append(jobs.WorkUnit(k, [safe_name(t) for t in chunk], build))
    described = {**common_settings(args), "method": "maximize", "targets": targets, "param": args.param,
                 "transforms": args.transforms, "optimizer": args.optimizer, "lr": args.lr, "jitter": args.jitter}
    return units, described


def add_parser(sub) -> None:
    m = sub.add_parser("maximize", help="activation maximization job (resumable; torchrun for many GPUs)")
    m.add_argument("--objective", nargs="+", required=True,
                   help='objectives, one image each: "_blocks.10:37", "_blocks.10:*" (every channel), "class:285", '
                        '"_blocks.10:37 - 0.5*_blocks.10:3"')
    m.add_argument("--steps", type=int, default=512)
    options.add_size(m)
    m.add_argument("--param", default="fft", choices=["fft", "pixel"])
    m.add_argument("--transforms", default="standard", choices=["standard", "none"])
    m.add_argument("--optimizer", default="adam", choices=["adam", "sgd", "nesterov"])
    m.add_argument("--lr", type=float, default=0.05)
    m.add_argument("--jitter", type=int, default=0, help="random crop inside the fused step (pixel param only)")
    options.add_job_options(m, batch=16)
    m.set_defaults(func=functools.partial(run_units, build_units=build_units))
