"""Data for Network Dissection (Bau et al. 2017): images with per-pixel concept masks.

A dataset is any object that
- has `concepts`: a list of Concept(name, category) (K of them);
- iterates over batches `(images (B, 3, H, W) float model inputs, masks (B, K, h, w) bool,
  annotated (B, K) bool)`, where annotated[b, k] says that concept k's category is labelled in
  image b (NetDissect counts a concept only over such images);
- optionally has `len()`: the number of images (otherwise dissect() reads it once to count).
A torch DataLoader (shuffle=False) over a dataset of single (image, masks, annotated) items is
one too: its dataset's `concepts` are used, and the images are counted from its sampler (its
len() counts batches). A concept may be any record with `name` and `category` fields (a
namedtuple, a dataclass) or a (name, category) pair.

FolderDataset reads a folder laid out close to Broden's:
    concepts.csv   header `name,category`; one row per concept, its number = its row (1-based);
                   0 means "no concept" in label maps
    index.csv      header `image,<category 1>,<category 2>,...`; one row per image: its file
                   (under images/) and, per category, a label-map PNG (under labels/) or empty
                   when that category is not annotated in the image
    images/        the photos (any Pillow format)
    labels/        label maps: 8- or 16-bit PNGs (or RGB PNGs read as R + 256 G, Broden's
                   encoding) of the concept number at each pixel
Masks are at the label maps' resolution, which must be the same for every image. Masks are
dense (B, K, h, w) bools per batch (Broden's ~1200 concepts at 112 x 112: ~15 MB per image), so
batch sizes suit the concept count. transform must not crop or flip (the label maps are not
transformed); resizing is fine. dissect() reads a dataset two or three times and needs the
same images in the same order each time.
"""
from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class Concept:
    name: str
    category: str


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _read_label_map(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        if im.mode in ("RGB", "RGBA"):
            a = np.asarray(im.convert("RGB"), dtype=np.int64)
            return a[..., 0] + 256 * a[..., 1]
        return np.asarray(im, dtype=np.int64)


class FolderDataset:
    """The folder format of the module docstring. transform(PIL image) -> (3, H, W) model input."""

    def __init__(self, root: str | Path, transform: Callable[[Image.Image], torch.Tensor],
                 batch_size: int = 16) -> None:
        self.root = Path(root)
        for name in ("concepts.csv", "index.csv"):
            if not (self.root / name).exists():
                raise ValueError(f"{self.root} is not a dissection dataset: {name} is missing "
                                 "(see featvis_fast.dissection.data)")
        with open(self.root / "concepts.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or set(rows[0]) != {"name", "category"}:
            raise ValueError(f"{self.root / 'concepts.csv'} must have the header name,category and one row per concept")
        self.concepts = [Concept(r["name"], r["category"]) for r in rows]
        self.categories = list(dict.fromkeys(c.category for c in self.concepts))
        with open(self.root / "index.csv", newline="") as fh:
            reader = csv.DictReader(fh)
            unknown = set(reader.fieldnames or []) - {"image", *self.categories}
            if "image" not in (reader.fieldnames or []) or unknown:
                raise ValueError(f"{self.root / 'index.csv'} must have the header image,<categories>; unknown "
                                 f"columns {sorted(unknown)} (categories in concepts.csv: {self.categories})")
            self.index = list(reader)
        if not self.index:
            raise ValueError(f"{self.root / 'index.csv'} lists no images")
        self.transform, self.batch_size = transform, batch_size
        self._of_category = {cat: torch.tensor([k for k, c in enumerate(self.concepts) if c.category == cat])
                             for cat in self.categories}

    def __len__(self) -> int:
        return len(self.index)

    def _item(self, row: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with Image.open(self.root / "images" / row["image"]) as im:
            image = self.transform(im.convert("RGB"))
        masks, annotated, size = None, torch.zeros(len(self.concepts), dtype=torch.bool), None
        for cat in self.categories:
            name = (row.get(cat) or "").strip()
            if not name:
                continue
            labels = _read_label_map(self.root / "labels" / name)
            if size is None:
                size = labels.shape
                masks = torch.zeros(len(self.concepts), *size, dtype=torch.bool)
            elif labels.shape != size:
                raise ValueError(f"label map {name} is {labels.shape}, others of image {row['image']} are {size}")
            if labels.max(initial=0) > len(self.concepts):
                raise ValueError(f"label map {name} holds concept {labels.max()}, "
                                 f"concepts.csv has {len(self.concepts)}")
            lab = torch.from_numpy(labels)
            for k in self._of_category[cat].tolist():
                masks[k] = lab == k + 1
            annotated[self._of_category[cat]] = True
        return image, masks, annotated

    def label_size(self) -> tuple[int, int]:
        """The label maps' (h, w), from the first one listed."""
        for row in self.index:
            for cat in self.categories:
                name = (row.get(cat) or "").strip()
                if name:
                    return tuple(_read_label_map(self.root / "labels" / name).shape)
        raise ValueError(f"{self.root / 'index.csv'} lists no label map: there is nothing to dissect against")

    def _batch(self, rows: list[dict], size: tuple[int, int]) -> Batch:
        items = [self._item(r) for r in rows]
        for _, m, _ in items:
            if m is not None and tuple(m.shape[1:]) != size:
                raise ValueError(f"label maps are {tuple(m.shape[1:])} and {size}: all must have one size")
        masks = [m if m is not None else torch.zeros(len(self.concepts), *size, dtype=torch.bool) for _, m, _ in items]
        return torch.stack([i for i, _, _ in items]), torch.stack(masks), torch.stack([a for _, _, a in items])

    def __iter__(self) -> Iterator[Batch]:
        size = self.label_size()
        for start in range(0, len(self.index), self.batch_size):
            yield self._batch(self.index[start:start + self.batch_size], size)

    def iter_shard(self, rank: int, world: int) -> Iterator[tuple[int, Batch | None]]:
        """(images in the batch, the batch or None): batch i is read only by rank i % world."""
        size = self.label_size()
        for i, start in enumerate(range(0, len(self.index), self.batch_size)):
            rows = self.index[start:start + self.batch_size]
            yield len(rows), (self._batch(rows, size) if i % world == rank else None)


def write_folder(dataset, root: str | Path, *, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)) -> Path:
    """Write a dataset (the protocol above) in the folder format: images as PNGs (images * std +
    mean, in [0, 1]), one 16-bit label map per image and annotated category. A concept's pixels
    get its number; where concepts of one category overlap, the later concept wins (as in a
    label map, a pixel has one label per category). The converter for other datasets: yield
    their batches in the protocol and call this."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    concepts = list(dataset.concepts)
    categories = list(dict.fromkeys(c.category for c in concepts))
    with open(root / "concepts.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "category"])
        w.writerows([c.name, c.category] for c in concepts)
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    rows, count = [], 0
    for images, masks, annotated in dataset:
        for image, mask, ann in zip(images, masks.bool().cpu(), annotated.bool().cpu()):
            name = f"{count:06d}"
            pixels = ((image.float() * s + m).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(pixels).save(root / "images" / f"{name}.png")
            row = {"image": f"{name}.png"}
            for cat in categories:
                ks = [k for k, c in enumerate(concepts) if c.category == cat]
                if not bool(ann[ks].any()):
                    row[cat] = ""
                    continue
                label = np.zeros(mask.shape[1:], dtype=np.uint16)
                for k in ks:
                    label[mask[k].numpy()] = k + 1
                Image.fromarray(label).save(root / "labels" / f"{name}_{cat}.png")
                row[cat] = f"{name}_{cat}.png"
            rows.append(row)
            count += 1
    with open(root / "index.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", *categories])
        w.writeheader()
        w.writerows(rows)
    return root
