"""Splitting N perturbed passes into batches: the batch size, and the loop with a progress bar.

batch_size=None picks the largest batch that fits: on CUDA from the free memory and the peak
one probe pass allocated per item, halving on an out-of-memory error; on the CPU from the
available memory (/proc/meminfo MemAvailable) and an estimate of one item's footprint (three
times the largest activation of a one-image pass), capped at 32: larger CPU batches only cost
memory and locality (EfficientNet-Lite0 occlusion on 2 cores: fastest at 32).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from .layout import best_layout

CPU_CAP, CUDA_CAP = 32, 1024


def _available_cpu_bytes() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30


def largest_activation_bytes(model: torch.nn.Module, run_one: Callable[[], object],
                             after: torch.nn.Module | None = None) -> int:
    """Bytes of the largest tensor any leaf module outputs while run_one() runs (one image); with
    `after`, only that module's output and those after it count (what one item costs when a batch
    enters at that layer, as in Ablation-CAM)."""
    largest, counting = 0, [after is None]

    def hook(module, inputs, output):
        nonlocal largest
        counting[0] = counting[0] or module is after
        if counting[0] and isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * output.element_size())

    watched = [m for m in model.modules() if not list(m.children()) and m is not after]
    handles = [m.register_forward_hook(hook) for m in watched + ([after] if after is not None else [])]
    try:
        with torch.no_grad():
            run_one()
    finally:
        for h in handles:
            h.remove()
    return largest


def laid_out_batch(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """x (detached) in the layout engine.best_layout picks for the model, and the estimated bytes of
    one item of a perturbation batch: three times the largest activation of a one-image pass."""
    largest = []
    x = best_layout(x.detach(), lambda t: largest.append(largest_activation_bytes(model, lambda: model(t[:1]))))
    return x, 3 * (largest[0] if largest else x[:1].numel() * x.element_size())


def pick_batch_size(batch_size: int | None, total: int, device: torch.device, item_bytes: int,
                    cpu_cap: int = CPU_CAP) -> int:
    """An explicit batch size (checked), else the largest that fits, at least 1 and at most `total`
    (and at most cpu_cap on the CPU)."""
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1 or None, got {batch_size!r}")
        return min(batch_size, max(total, 1))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        fit, cap = int(0.5 * free) // max(item_bytes, 1), CUDA_CAP
    else:
        fit, cap = int(0.25 * _available_cpu_bytes()) // max(item_bytes, 1), cpu_cap
    return max(1, min(fit, cap, max(total, 1)))


def balanced_batch_size(batch_size: int, total: int) -> int:
    """The smallest batch size that still needs only ceil(total / batch_size) batches: the batches
    then differ in length by at most one (no short last batch that a matrix product would run on
    another code path, rounding differently)."""
    batches = max(1, -(-total // max(batch_size, 1)))
    return max(1, -(-total // batches))


def run_batches(total: int, batch_size: int, work: Callable[[int, int], None], *, progress: bool,
                desc: str, device: torch.device, step: int = 1) -> None:
    """work(start, stop) for consecutive slices of range(total), each a multiple of `step` long
    (total is one too); on CUDA an out-of-memory error halves the batch and retries the slice.
    A tqdm bar when progress and there is more than one batch."""
    batch_size = max(step, batch_size // step * step)
    bar = tqdm(total=total, desc=desc, unit="pass", disable=not progress or total <= batch_size, leave=False)
    start = 0
    try:
        while start < total:
            stop = min(start + batch_size, total)
            try:
                work(start, stop)
            except torch.OutOfMemoryError:
                if device.type != "cuda" or batch_size <= step:
                    raise
                torch.cuda.empty_cache()
                batch_size = max(step, batch_size // 2 // step * step)
                continue
            bar.update(stop - start)
            start = stop
    finally:
        bar.close()
