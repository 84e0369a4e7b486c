"""`featvis backends`: which kernel backends load here, and why the others do not."""
from __future__ import annotations

import argparse

from .._backend import backends


def run(args: argparse.Namespace) -> int:
    for status in backends().values():
        print(status)
    return 0


def add_parser(sub) -> None:
    b = sub.add_parser("backends", help="which kernel backends are available here")
    b.set_defaults(func=run)
