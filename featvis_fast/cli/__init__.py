"""The `featvis` command: one module per subcommand, shared options in `options`.

Subcommands: similarity, demo, export-ifealid, serve (interactive similarity), maximize, invert,
class-agnostic (resumable reconstruction jobs, `job`), dissect (Network Dissection), evaluate (metrics
report), backends.
Adding a command = a module with `add_parser(sub)` that sets `func`, listed in COMMANDS.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._deprecation import warn_renamed
from . import backends, class_agnostic, demo, dissect, evaluate, export_ifealid, invert, maximize, serve, similarity

COMMANDS = (similarity, demo, export_ifealid, serve, maximize, invert, class_agnostic, dissect, evaluate, backends)


def build_parser() -> argparse.ArgumentParser:
    """The `featvis` argument parser with every subcommand of COMMANDS."""
    parser = argparse.ArgumentParser(prog="featvis", description="Fast CNN feature visualization.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `featvis ARGV`.

    Args:
        argv: the arguments after `featvis` (default: sys.argv[1:]).

    Returns:
        the exit status: 0, or 2 after printing `featvis: error: ...` for bad input.
    """
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, RuntimeError, OSError) as exc:
        print(f"featvis: error: {exc}", file=sys.stderr)
        return 2


def __getattr__(name: str):
    if name == "similarity_overlay":  # lived here in 0.1
        warn_renamed("featvis_fast.cli.similarity_overlay", "featvis_fast.similarity.similarity_overlay",
                     stacklevel=2)
        from ..similarity import similarity_overlay
        return similarity_overlay
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
