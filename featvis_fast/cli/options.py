"""Options shared by the `featvis` subcommands, defined once: backend, device, storage dtype,
image and layer arguments, and the options every resumable job takes."""
from __future__ import annotations

import argparse

import torch

from .._backend import BACKENDS

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int8": torch.int8}
IMAGE_HELP = "image path or sample name (astronaut, chelsea, coffee, rocket)"
DEFAULT_MODEL = "efficientnet-lite0"


def add_backend(parser: argparse.ArgumentParser) -> None:
    """--backend: one of featvis_fast's kernel backends (default: chosen per device)."""
    parser.add_argument("--backend", default=None, choices=BACKENDS,
                        help="kernel backend (default: the fastest available on the device)")


def add_device(parser: argparse.ArgumentParser, *, job: bool = False) -> None:
    """--device. Interactive commands default to CUDA when present; jobs to cuda:LOCAL_RANK (torchrun)."""
    if job:
        parser.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK if CUDA is there, else cpu")
    else:
        parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def add_dtype(parser: argparse.ArgumentParser) -> None:
    """--dtype: the precision features are cached in for similarity queries."""
    parser.add_argument("--dtype", default="float16", choices=list(DTYPES), help="feature cache precision")


def add_layer(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--layer", required=True, help=help)


def add_size(parser: argparse.ArgumentParser, default: int = 224, *, native: bool = False) -> None:
    extra = " (0 = the image's own resolution)" if native else ""
    parser.add_argument("--size", type=int, default=default, help=f"model input size{extra}")


def add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the model (featvis_fast.load_model name)")


def add_job_options(parser: argparse.ArgumentParser, batch: int, *, cuda_graph: bool = True) -> None:
    """What every resumable job (maximize, invert, class-agnostic) takes besides its own options."""
    parser.add_argument("--out", required=True, help="output directory (rerun the same command to resume)")
    parser.add_argument("--batch", type=int, default=batch, help="images optimized together (one work unit)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints")
    add_model(parser)
    add_device(parser, job=True)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (the images depend on it; default: the job's recorded count, else torch's)")
    add_backend(parser)
    parser.add_argument("--autocast", default=None, choices=["bf16", "fp16"], help="run the model under autocast")
    parser.add_argument("--no-progress", action="store_true")
    if cuda_graph:
        parser.add_argument("--cuda-graph", action="store_true", help="replay each step's model part from a CUDA graph")


def pixel(text: str) -> tuple[int, int]:
    """argparse type for Y,X."""
    try:
        y, x = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--pixel takes Y,X (two integers), got {text!r}") from None
    return y, x
