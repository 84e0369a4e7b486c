"""Network Dissection (Bau et al., CVPR 2017; surveyed by Qin et al. 2018) on the device: each unit
of a layer gets the concept whose segmentation masks its strongest activations overlap best.

Per unit u: T_u = the top-q quantile of its activations over the whole dataset (exact, streaming:
dissection.quantile); M_u = bilinear upsampling of its map to the label resolution > T_u;
IoU_{u,c} = |M_u & L_c| / |M_u | L_c| summed over the images where c's category is annotated
(the fused tally `featvis::dissect_tally`: no per-unit or per-image Python loop); the label is
argmax_c IoU, interpretable when IoU >= iou_threshold; top-n images per unit by peak activation.
Two passes over the data (thresholds, then tallies), as NetDissect makes them. Under
torch.distributed (torchrun) each rank reads every world_size-th batch; the kept top values,
tallies and top images are gathered and reduced, so the result equals one process's.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, RandomSampler
from tqdm.auto import tqdm

from .. import _backend
from .._deprecation import warn_renamed
from ..engine import cached_cpu_memory, extract, find_module, rewritten_forward
from ..models import IMAGENET_MEAN, IMAGENET_STD
from ..ops.dissection import dissect_tally
from .data import Concept
from .quantile import StreamingTopQuantile, TopImages
from .result import DissectionResult

THUMB = 96  # report thumbnails (pixels)


def _world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


def _check_batch(batch, k: int, label_size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 3:
        raise ValueError("a dissection dataset yields (images, masks, annotated) batches")
    images, masks, annotated = batch
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(getattr(images, 'shape', ()))}")
    b = images.shape[0]
    if not isinstance(masks, torch.Tensor) or masks.dim() != 4 or masks.shape[:2] != (b, k):
        raise ValueError(f"masks must be (B={b}, K={k}, h, w) for {k} concepts, "
                         f"got {tuple(getattr(masks, 'shape', ()))}")
    if label_size is not None and tuple(masks.shape[2:]) != label_size:
        raise ValueError(f"masks are {tuple(masks.shape[2:])} in this batch and {label_size} before: one label size")
    if not isinstance(annotated, torch.Tensor) or annotated.shape != (b, k):
        raise ValueError(f"annotated must be (B={b}, K={k}), got {tuple(getattr(annotated, 'shape', ()))}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values")
    return images, masks.bool(), annotated.bool()


class _Pass:
    """One pass over the dataset: yields (first image index, images, masks, annotated, activations
    (B, U, h, w)) for this rank's batches (every world-th). Afterwards `images` holds how many
    images the whole pass saw. A dataset with `iter_shard(rank, world)` (FolderDataset) skips
    loading the other ranks' batches."""

    def __init__(self, model, layer, dataset, k, batch_size, device, progress, desc, total) -> None:
        self.model, self.layer, self.dataset, self.k = model, layer, dataset, k
        self.batch_size, self.device, self.progress, self.desc, self.total = batch_size, device, progress, desc, total
        self.label_size = self.map_size = None
        self.images = 0

    def _batches(self, rank: int, world: int):
        """(number of images, batch or None when another rank's)."""
        if hasattr(self.dataset, "iter_shard"):
            yield from self.dataset.iter_shard(rank, world)
            return
        for i, batch in enumerate(self.dataset):
            n = len(batch[0]) if isinstance(batch, (tuple, list)) and batch else 0
            yield n, (batch if i % world == rank else None)

    def __iter__(self):
        rank, world = _world()
        with tqdm(total=self.total, desc=self.desc, disable=not self.progress or rank != 0, leave=False) as bar:
            for n, batch in self._batches(rank, world):
                if self.images + n > self.total:
                    self._count_error(self.images + n)
                if batch is not None:
                    images, masks, annotated = _check_batch(batch, self.k, self.label_size)
                    self.label_size = tuple(masks.shape[2:])
                    acts = self._activations(images.to(self.device))
                    if self.map_size is not None and tuple(acts.shape[1:]) != self.map_size:
                        raise ValueError(f"layer {self.layer!r} gave {tuple(acts.shape[1:])} maps in one batch and "
                                         f"{self.map_size} before: the images must have one size")
                    self.map_size = tuple(acts.shape[1:])
                    yield self.images, images, masks.to(self.device), annotated.to(self.device), acts
                self.images += n
                bar.update(n)
        if self.images != self.total:
            self._count_error(self.images)

    def _count_error(self, seen: int):
        counted = f"at least {seen}" if seen > self.total else str(seen)
        raise ValueError(f"the dataset yielded {counted} images in this pass, {self.total} were expected "
                         "(len(dataset) must count images, not batches; dissect reads the data two or three "
                         "times, in the same order, so a one-shot iterator or a shuffling loader cannot work)")

    def _activations(self, images: torch.Tensor) -> torch.Tensor:
        step = self.batch_size or images.shape[0]
        chunks = [rewritten_forward(self.model, lambda c=c: extract(self.model, c, self.layer), learn=False)
                  for c in images.split(step)]
        acts = torch.cat(chunks)
        if acts.dim() != 4:
            raise ValueError(f"layer {self.layer!r} gives {tuple(acts.shape)}; dissection needs (B, U, h, w) maps")
        return acts.float()


def _concepts(dataset) -> list[Concept]:
    """dataset.concepts (for a DataLoader: its dataset's), each as a Concept. Any record with
    `name` and `category` fields (a namedtuple, a dataclass) or a (name, category) pair is one."""
    listed = getattr(dataset, "concepts", None)
    if listed is None and isinstance(dataset, DataLoader):
        listed = getattr(dataset.dataset, "concepts", None)
    concepts = []
    for c in list(listed or []):
        if isinstance(c, Concept):
            concepts.append(c)
        elif hasattr(c, "name") and hasattr(c, "category"):
            concepts.append(Concept(str(c.name), str(c.category)))
        elif isinstance(c, (tuple, list)) and len(c) == 2 and all(isinstance(v, str) for v in c):
            concepts.append(Concept(*c))
        else:
            raise ValueError(f"concept {c!r} has no name and category (a Concept(name, category), a record with "
                             "those fields, or a (name, category) pair)")
    if not concepts:
        raise ValueError("the dataset must list its concepts (dataset.concepts, or a DataLoader's "
                         "dataset.concepts: Concept(name, category) each)")
    return concepts


def _loader_images(loader: DataLoader) -> int | None:
    """How many images a DataLoader yields per pass (its len() counts batches), or None when
    only reading it tells."""
    if isinstance(loader.sampler, RandomSampler) or isinstance(getattr(loader.batch_sampler, "sampler", None),
                                                               RandomSampler):
        raise ValueError("the DataLoader shuffles: dissect reads the data two or three times and needs the same "
                         "images in the same order each time (shuffle=False)")
    batcher = loader.batch_sampler
    if isinstance(batcher, BatchSampler):
        try:
            n = len(batcher.sampler)
        except TypeError:
            return None
        return n - n % batcher.batch_size if batcher.drop_last else n
    return None


def _count(dataset) -> int:
    """Images per pass over the dataset."""
    if isinstance(dataset, DataLoader):
        n = _loader_images(dataset)
        return n if n is not None else sum(len(b[0]) for b in dataset)
    if iter(dataset) is dataset:
        raise ValueError("the dataset is a one-shot iterator; dissect reads it two or three times: pass an object "
                         "whose __iter__ starts again (see featvis_fast.dissection.data)")
    try:
        return len(dataset)
    except TypeError:
        return sum(len(b[0]) for b in dataset)


def _collective_device(t: torch.Tensor) -> torch.device:
    """Where a collective can take t: nccl only handles CUDA tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _gather_cat(t: torch.Tensor, dim: int) -> torch.Tensor:
    if _world()[1] == 1:
        return t
    parts = [None] * _world()[1]
    dist.all_gather_object(parts, t.cpu())
    return torch.cat(parts, dim).to(t.device)


def _sum(t: torch.Tensor) -> torch.Tensor:
    if _world()[1] > 1:
        on = t.to(_collective_device(t))
        dist.all_reduce(on)
        t = on.to(t.device)
    return t


def _agree(value):
    """The first non-None value over the ranks (a rank may have had no batch)."""
    if _world()[1] == 1:
        return value
    parts = [None] * _world()[1]
    dist.all_gather_object(parts, value)
    return next((p for p in parts if p is not None), None)


def dissect(model: torch.nn.Module, dataset: Iterable, layer: str, quantile: float = 0.005,
            iou_threshold: float = 0.04, batch_size: int | None = None, *, top_n: int = 8,
            mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
            backend: str | None = None,
            progress: bool = True) -> DissectionResult:
    """Network Dissection (Bau et al. 2017): dissect `layer` of `model` on `dataset` -> DissectionResult.

    The arguments come in the order every method takes them: model, inputs (here the dataset),
    layer. The 0.1 order dissect(model, layer, dataset) still works for one release, with a
    DeprecationWarning.

    Args:
        model: the network (eval mode is set for the run and restored).
        dataset: batches of (images (B, 3, H, W), masks (B, K, h, w) bool, annotated (B, K) bool)
            with `concepts` (see featvis_fast.dissection.data), or a torch DataLoader
            (shuffle=False) over single images whose dataset has `concepts`.
        layer: the module name whose (B, U, h, w) output is dissected (its channels are
            NetDissect's "units").
        quantile: each unit's top activation quantile (NetDissect: 0.005).
        iou_threshold: the IoU from which a unit counts as interpretable.
        batch_size: images per forward (default: the dataset's batches).
        top_n: top images kept per unit for the report.
        mean: the images' per-channel normalization mean, undone for the report's thumbnails.
        std: the normalization's per-channel standard deviation.
        backend: the tally kernel's backend (None: the fastest for the device).
        progress: tqdm bars.
    Returns:
        DissectionResult (thresholds, tallies, IoU, labels, top images).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(dataset, str) and not isinstance(layer, str):  # the 0.1 order (model, layer, dataset)
        warn_renamed("dissect(model, layer, dataset)", "dissect(model, dataset, layer)")
        dataset, layer = layer, dataset
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module name (str), got {type(layer).__name__}")
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    find_module(model, layer)
    concepts = _concepts(dataset)
    device = next(model.parameters()).device
    n_images = _count(dataset)
    if n_images == 0:
        raise ValueError("the dataset is empty")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), cached_cpu_memory(device):
            return _dissect(model, layer, dataset, concepts, n_images, quantile, iou_threshold, batch_size, top_n,
                            mean, std, _backend.resolve_backend(backend, device), device, progress)
    finally:
        model.train(was_training)


def _dissect(model, layer, dataset, concepts, n_images, q, iou_threshold, batch_size, top_n, mean, std, backend,
             device, progress) -> DissectionResult:
    k = len(concepts)
    first_pass = _Pass(model, layer, dataset, k, batch_size, device, progress, "dissect: thresholds", n_images)
    quant = top = None

    def start(u: int, h: int, w: int) -> None:
        nonlocal quant, top
        quant = StreamingTopQuantile(u, n_images * h * w, q, device)
        top = TopImages(u, top_n, device)

    for first, _, _, _, acts in first_pass:
        if quant is None:
            start(*acts.shape[1:])
        quant.update(acts)
        top.update(acts, first)
    shape = _agree(first_pass.map_size)
    if shape is None:
        raise ValueError("the dataset yielded no batch")
    if quant is None:  # a rank that got no batch still takes part in the reductions
        start(*shape)
    if _world()[1] > 1:
        quant.merge(_gather_cat(quant.kept(), 1), int(_sum(torch.tensor(quant.seen))))
        top.merge(_gather_cat(top.values, 1), _gather_cat(top.indices, 1))
    thresholds = quant.result()
    owners: dict[int, list[int]] = {}  # image -> the units it is a top image of
    for unit, row in enumerate(top.indices.tolist()):
        for i in row:
            owners.setdefault(i, []).append(unit)

    u = thresholds.numel()
    inter = torch.zeros(u, k, dtype=torch.long)
    unit_area = torch.zeros(u, k, dtype=torch.long)
    label_area = torch.zeros(k, dtype=torch.long)
    thumbs: dict[int, torch.Tensor] = {}  # image -> (3, THUMB, THUMB) uint8
    unit_masks: dict[tuple[int, int], torch.Tensor] = {}  # (unit, image) -> (THUMB, THUMB) bool
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    second = _Pass(model, layer, dataset, k, batch_size, device, progress, "dissect: IoU", n_images)
    for first, images, masks, annotated, acts in second:
        i_, u_, l_ = dissect_tally(acts, thresholds.to(device), masks, annotated, backend)
        inter += i_.cpu()
        unit_area += u_.cpu()
        label_area += l_.cpu()
        for b in range(images.shape[0]):
            units = owners.get(first + b)
            if units is None:
                continue
            peaks = acts[b, units].flatten(1).amax(1).cpu()
            stored = torch.stack([top.values[unit][top.indices[unit] == first + b][0] for unit in units]).cpu()
            if not torch.allclose(peaks, stored, rtol=1e-4, atol=1e-6):
                raise ValueError(f"image {first + b} changed between the passes: the dataset must yield the same "
                                 "images in the same order every time it is iterated")
            small = F.interpolate(images[b:b + 1].float().cpu() * s + m, size=(THUMB, THUMB), mode="bilinear",
                                  align_corners=False, antialias=True).clamp(0, 1)
            thumbs[first + b] = (small[0] * 255).round().to(torch.uint8)
            up = F.interpolate(acts[b:b + 1, units].double().cpu(), size=(THUMB, THUMB), mode="bilinear",
                               align_corners=False)[0]
            for j, unit in enumerate(units):
                unit_masks[unit, first + b] = up[j] > thresholds[unit]
    if _world()[1] > 1:
        gathered = [None] * _world()[1]
        dist.all_gather_object(gathered, (thumbs, unit_masks))
        thumbs = {i: t for part, _ in gathered for i, t in part.items()}
        unit_masks = {key: t for _, part in gathered for key, t in part.items()}
    return DissectionResult(layer=layer, concepts=concepts, thresholds=thresholds, intersection=_sum(inter),
                            unit_area=_sum(unit_area), label_area=_sum(label_area), quantile=q,
                            iou_threshold=iou_threshold, top_images=top.indices.cpu(), top_values=top.values.cpu(),
                            thumbnails=thumbs, unit_masks=unit_masks, n_images=n_images)
