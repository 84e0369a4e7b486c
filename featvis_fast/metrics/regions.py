"""Object regions for the localisation metrics: masks or boxes -> one (B, H, W) bool mask per image.

A region is given per image as a mask or as boxes in pixels, and several boxes of one image mean
the union of their areas (several objects of the class).

Box convention: `(x0, y0, x1, y1)` in pixels of the (H, W) image the metrics see, x along the
width (columns), y along the height (rows), (x0, y0) inclusive and (x1, y1) exclusive, as Python
slices and torchvision's detection boxes read them: the box (x0, y0, x1, y1) covers
`mask[y0:y1, x0:x1]`. Fractional boxes (from a detector, or scaled) cover the pixels whose centre
(col + 0.5, row + 0.5) lies in [x0, x1) x [y0, y1), which is the same rule for integers. Boxes must lie
inside the image, 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H: anything else is a ValueError naming the
box. (PASCAL VOC's XML boxes are 1-based and inclusive: subtract 1 from xmin and ymin; COCO's
[x, y, w, h] are (x, y, x + w, y + h).)

The `--boxes` file of the CLI (`load_regions`) is JSON: an object mapping each image name to its
list of boxes, e.g. `{"cat.jpg": [[10, 20, 110, 140]], "dogs.jpg": [[0, 0, 50, 50], [60, 60, 100, 120]]}`,
in pixels of the image file; `file_sizes` maps them onto the evaluated (resized) image.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from numbers import Real

import numpy as np
import torch

BOX_FIELDS = "(x0, y0, x1, y1)"


def region_masks(boxes_or_masks: object, batch: int, height: int, width: int, *,
                 device: torch.device | str | None = None, name: str = "boxes_or_masks") -> torch.Tensor:
    """The object region of each image as a (B, H, W) bool mask.

    Args:
        boxes_or_masks: one of
            - masks: a (B, H, W) or (B, 1, H, W) bool or 0/1 tensor or array;
            - boxes: a (B, 4) tensor or array, one (x0, y0, x1, y1) box per image;
            - a list of B items, one per image, each a mask (H, W) or (1, H, W), one box
              [x0, y0, x1, y1], a list of boxes (their union; an empty list is an empty region) or an
              (N, 4) tensor or array of boxes.
        batch: the number of images B.
        height: the images' height H.
        width: the images' width W.
        device: where the masks go (None: where a given mask tensor is, else the CPU).
        name: the argument's name in error messages.

    Returns:
        a (B, H, W) bool tensor, True inside the object.
    """
    if isinstance(boxes_or_masks, np.ndarray):
        boxes_or_masks = torch.from_numpy(np.ascontiguousarray(boxes_or_masks))
    if isinstance(boxes_or_masks, torch.Tensor):
        t = boxes_or_masks.detach()
        if t.dim() == 2:
            if t.shape != (batch, 4):
                raise ValueError(f"{name} as a 2-D tensor are boxes (B, 4) = ({batch}, 4), one {BOX_FIELDS} per "
                                 f"image; got shape {tuple(t.shape)}")
            return boxes_to_masks([box[None] for box in t], height, width, device=device, name=name)
        masks = _mask(t, (batch, height, width), name)
        return masks.to(device) if device is not None else masks
    if not isinstance(boxes_or_masks, (list, tuple)):
        raise TypeError(f"{name} must be masks (B, H, W), boxes (B, 4) or a list of per-image masks or boxes, "
                        f"got {type(boxes_or_masks).__name__}")
    if len(boxes_or_masks) != batch:
        raise ValueError(f"{name} hold {len(boxes_or_masks)} items for a batch of {batch} images")
    boxes, masks = [], {}
    for b, item in enumerate(boxes_or_masks):
        item_name = f"{name}[{b}]"
        if isinstance(item, np.ndarray):
            item = torch.from_numpy(np.ascontiguousarray(item))
        if isinstance(item, torch.Tensor) and item.dim() >= 2 and tuple(item.shape[-2:]) == (height, width):
            masks[b] = _mask(item.detach(), (height, width), item_name)
            boxes.append(torch.zeros(0, 4, dtype=torch.float64))
        else:
            boxes.append(_boxes(item, item_name))
    out = boxes_to_masks(boxes, height, width, device=device, name=name)
    for b, mask in masks.items():
        out[b] = mask.to(out.device)
    return out


def boxes_to_masks(boxes: Sequence[torch.Tensor], height: int, width: int, *, device: torch.device | str | None = None,
                   name: str = "boxes") -> torch.Tensor:
    """Rasterise each image's boxes into the union of their pixels (module docstring: the convention).

    Args:
        boxes: B tensors (N_b, 4) of (x0, y0, x1, y1) boxes in pixels; N_b may be 0.
        height: the images' height H.
        width: the images' width W.
        device: where the masks go (None: the CPU).
        name: the argument's name in error messages.

    Returns:
        a (B, H, W) bool tensor, True on the pixels one of the image's boxes covers.
    """
    counts = [len(b) for b in boxes]
    flat = torch.cat([torch.as_tensor(b).detach().to("cpu", torch.float64).reshape(-1, 4) for b in boxes]) \
        if boxes else torch.zeros(0, 4, dtype=torch.float64)
    image_of = torch.repeat_interleave(torch.arange(len(boxes)), torch.tensor(counts, dtype=torch.long))
    _check_boxes(flat, image_of, counts, height, width, name)
    flat, image_of = flat.to(device), image_of.to(device)
    cols = torch.arange(width, dtype=torch.float64, device=flat.device) + 0.5
    rows = torch.arange(height, dtype=torch.float64, device=flat.device) + 0.5
    x0, y0, x1, y1 = flat.unbind(1)
    in_cols = (cols >= x0[:, None]) & (cols < x1[:, None])  # (N, W)
    in_rows = (rows >= y0[:, None]) & (rows < y1[:, None])  # (N, H)
    covered = (in_rows[:, :, None] & in_cols[:, None, :]).to(torch.int32)  # (N, H, W)
    union = torch.zeros(len(boxes), height, width, dtype=torch.int32, device=flat.device)
    return union.index_add_(0, image_of, covered) > 0


def load_regions(path: str | os.PathLike, names: Sequence[str], height: int, width: int,
                 file_sizes: Sequence[tuple[int, int]] | None = None) -> torch.Tensor:
    """Read a JSON boxes file (module docstring: the format) into one mask per named image.

    Args:
        path: the JSON file: `{image name: [[x0, y0, x1, y1], ...], ...}`; an image's boxes may also
            be one box `[x0, y0, x1, y1]`, and an empty list is an empty region (its scores are NaN).
        names: the images in batch order; a name is looked up as given, then by its file name
            (so "photos/cat.jpg" finds "cat.jpg").
        height: the evaluated images' height H (the boxes' pixels).
        width: the evaluated images' width W.
        file_sizes: per image, the (width, height) of the image file the boxes are measured in:
            x becomes x * W / width and y becomes y * H / height (a resize to W x H; exact at the
            edges); None: the boxes are already in the evaluated image's pixels.

    Returns:
        a (B, H, W) bool tensor on the CPU, B = len(names).
    """
    with open(path, encoding="utf-8") as f:
        table = json.load(f)
    if not isinstance(table, dict):
        raise ValueError(f"{os.fspath(path)}: expected a JSON object {{image name: [[x0, y0, x1, y1], ...]}}, "
                         f"got {type(table).__name__}")
    boxes = []
    for image in names:
        key = image if image in table else os.path.basename(image)
        if key not in table:
            known = ", ".join(sorted(map(repr, table))[:10])
            raise ValueError(f"{os.fspath(path)} has no boxes for image {image!r} (it has {known})")
        found = _boxes(table[key], f"{os.fspath(path)}[{key!r}]")
        if file_sizes is not None:
            file_width, file_height = file_sizes[len(boxes)]
            size = torch.tensor([width, height, width, height], dtype=found.dtype)
            found = found * size / torch.tensor([file_width, file_height, file_width, file_height], dtype=found.dtype)
        boxes.append(found)
    return boxes_to_masks(boxes, height, width, name=os.fspath(path))


def _mask(t: torch.Tensor, shape: tuple[int, ...], name: str) -> torch.Tensor:
    """A bool mask of exactly `shape`, or (1, *shape[-2:]) / (B, 1, H, W) squeezed to it."""
    if t.dim() == len(shape) + 1 and t.shape[-3] == 1:
        t = t.squeeze(-3)
    if tuple(t.shape) != shape:
        layout = "(B, H, W) or (B, 1, H, W)" if len(shape) == 3 else "(H, W) or (1, H, W)"
        raise ValueError(f"{name}: masks must be {layout} = {shape} like the attributions, got shape {tuple(t.shape)}")
    if t.dtype == torch.bool:
        return t
    if t.is_complex() or not bool(((t == 0) | (t == 1)).all()):
        raise ValueError(f"{name}: masks must hold bool or 0/1 values")
    return t != 0


def _boxes(item: object, name: str) -> torch.Tensor:
    """One image's boxes (a box, a list of boxes, an (N, 4) tensor) as an (N, 4) float64 tensor."""
    if isinstance(item, (np.ndarray, torch.Tensor)):
        t = torch.as_tensor(item).detach().cpu()
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"{name}: boxes must be numbers {BOX_FIELDS}, got {t.dtype}")
        if t.shape == (4,):
            return t.to(torch.float64)[None]
        if t.dim() == 2 and t.shape[1] == 4:
            return t.to(torch.float64)
        raise ValueError(f"{name}: expected a box {BOX_FIELDS}, boxes (N, 4) or a mask of the image's (H, W), "
                         f"got shape {tuple(t.shape)}")
    if isinstance(item, (list, tuple)):
        if len(item) == 4 and all(_is_number(v) for v in item):
            return torch.tensor([item], dtype=torch.float64)
        rows = []
        for i, box in enumerate(item):
            if not (isinstance(box, (list, tuple, np.ndarray, torch.Tensor)) and len(box) == 4
                    and all(_is_number(v) for v in box)):
                raise ValueError(f"{name}[{i}]: a box must be 4 numbers {BOX_FIELDS}, got {box!r}")
            rows.append([float(v) for v in box])
        return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)
    raise TypeError(f"{name}: expected a mask, a box {BOX_FIELDS} or a list of boxes, got {type(item).__name__}")


def _is_number(v: object) -> bool:
    if isinstance(v, torch.Tensor):
        return v.dim() == 0 and v.dtype != torch.bool and not v.is_complex()
    return isinstance(v, Real) and not isinstance(v, (bool, np.bool_))  # NumPy registers its ints and floats


def _check_boxes(flat: torch.Tensor, image_of: torch.Tensor, counts: list[int], height: int, width: int,
                 name: str) -> None:
    if flat.numel() == 0:
        return
    x0, y0, x1, y1 = flat.unbind(1)
    outside = ~torch.isfinite(flat).all(1) | (x0 < 0) | (y0 < 0) | (x1 > width) | (y1 > height)
    inverted = (x1 <= x0) | (y1 <= y0)
    bad = outside | inverted
    if not bool(bad.any()):
        return
    i = int(bad.nonzero()[0])
    b = int(image_of[i])
    j = i - sum(counts[:b])
    box = tuple(_short(v) for v in flat[i].tolist())
    where = f"{name}: box {j} of image {b}, {BOX_FIELDS} = {box},"
    if bool(outside[i]):
        raise ValueError(f"{where} lies outside the {height}x{width} image (need 0 <= x0 < x1 <= {width} "
                         f"and 0 <= y0 < y1 <= {height})")
    raise ValueError(f"{where} is empty or inverted (need x0 < x1 and y0 < y1)")


def _short(v: float) -> float | int:
    return int(v) if math.isfinite(v) and v == int(v) else v
