"""Images: the bundled sample photos and loading a path or a sample name."""
from __future__ import annotations

import importlib.resources
import os

from PIL import Image

_SAMPLES = ("astronaut", "chelsea", "coffee", "rocket")


def sample_images() -> list[str]:
    """Names of the bundled sample photos (from scikit-image's data, public domain / CC0)."""
    return list(_SAMPLES)


def sample_image(name: str) -> Image.Image:
    """A bundled sample photo as an RGB PIL image (offline)."""
    if name not in _SAMPLES:
        raise ValueError(f"unknown sample image {name!r}; choose one of {', '.join(_SAMPLES)}")
    with importlib.resources.files("featvis_fast").joinpath(f"data/{name}.jpg").open("rb") as fh:
        return Image.open(fh).convert("RGB")


def load_image(path_or_name: str | os.PathLike) -> Image.Image:
    """An RGB image from a file path, or a sample photo by name."""
    if os.path.exists(path_or_name):
        try:
            return Image.open(path_or_name).convert("RGB")
        except OSError as exc:
            raise ValueError(f"cannot read image {str(path_or_name)!r}: {exc}") from exc
    if str(path_or_name) in _SAMPLES:
        return sample_image(str(path_or_name))
    raise ValueError(f"{str(path_or_name)!r} is neither an image file nor a sample name ({', '.join(_SAMPLES)})")
