"""What the resumable job commands (maximize, invert, class-agnostic) share: command-line arguments
-> work units (featvis_fast.jobs) -> outputs. Every argument that changes the images is recorded in
job.json, so a rerun with the same command resumes and a different one is refused."""
from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

import torch

from .. import jobs
from ..models import load_model

# (args, model, preprocess, device) -> (work units, the settings job.json records)
UnitBuilder = Callable[[argparse.Namespace, torch.nn.Module, object, torch.device], tuple[list, dict]]


def safe_name(text: str) -> str:
    """A file stem for a target: characters other than letters, digits, '.', '_', '-' become '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).lstrip(".") or "target"


def chunks(items: list, size: int) -> list[list]:
    """items in consecutive groups of `size` (the last may be shorter); one group per work unit."""
    if size < 1:
        raise ValueError(f"--batch must be >= 1, got {size}")
    return [items[k:k + size] for k in range(0, len(items), size)]


def common_settings(args: argparse.Namespace) -> dict:
    """The settings every job records (--cuda-graph changes only rounding, so a job may resume without it)."""
    return {"model": args.model, "size": args.size, "batch": args.batch, "backend": args.backend,
            "autocast": args.autocast}


def job_device_from(args: argparse.Namespace) -> torch.device:
    try:
        device = jobs.job_device() if args.device is None else torch.device(args.device)
    except RuntimeError as exc:
        raise ValueError(f"bad --device {args.device!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device} asks for CUDA, which this torch build or machine does not have")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda[:N], got {args.device!r}")
    return device


def thread_count(args: argparse.Namespace) -> int:
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


def run_units(args: argparse.Namespace, build_units: UnitBuilder) -> int:
    """Load the model, build the command's work units and run (or resume) the job in args.out."""
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    device = job_device_from(args)
    threads = None
    if device.type == "cpu":
        threads = thread_count(args)
        torch.set_num_threads(threads)
    model, preprocess = load_model(args.model, device=device)
    units, described = build_units(args, model, preprocess, device)
    described.update(device=device.type, threads=threads)
    manifest = jobs.run_job(units, args.out, steps=args.steps, seed=args.seed, settings=described,
                            checkpoint_every=args.checkpoint_every, progress=not args.no_progress)
    if manifest is not None:
        print(f"{len(manifest['targets'])} images, grid.png and manifest.json in {args.out}")
    return 0
