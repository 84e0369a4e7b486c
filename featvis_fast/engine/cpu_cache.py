"""A caching CPU allocator for the length of an attribution (csrc/cpu_cache.cpp).

glibc gives every large tensor back to the kernel when it is freed, so the next one is
page-faulted and zeroed afresh: on 2 cores a ResNet-18 Grad-CAM call at batch 32 spends a
fifth of its time there. Inside `cached_cpu_memory()` torch's CPU allocator keeps freed blocks of
256 KiB and more and reuses them for requests of the same size or up to half smaller, within
the call and in the next one; on a miss, while more is cached than in use, cached blocks too small
for the request are freed, and more until what is cached and in use fits in the most ever in use
at once (the cache never raises the peak footprint). Leaving it restores the previous allocator and frees the blocks the
call did not reuse, so what stays cached is one call's working set. `empty_cpu_cache()` releases that too, as
torch.cuda.empty_cache() does for CUDA. Without the compiled extension (or with
FEATVIS_CPU_CACHE=0) the context does nothing.
"""
from __future__ import annotations

import contextlib
import os

import torch

from .._extensions import ExtensionUnavailable, load_cpu


def _extension():
    if os.environ.get("FEATVIS_CPU_CACHE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        return load_cpu()
    except ExtensionUnavailable:
        return None


@contextlib.contextmanager
def cached_cpu_memory(device: torch.device | str = "cpu"):
    """Inside: CPU tensors of 256 KiB and more come from the cache (nothing changes for other devices)."""
    ext = _extension() if torch.device(device).type == "cpu" else None
    if ext is None or not ext.cache_begin():
        yield
        return
    try:
        yield
    finally:
        ext.cache_end()


def empty_cpu_cache() -> None:
    """Release every CPU block the attribution methods' caching allocator holds.

    The cache lives only while a method runs and keeps at most its largest working set; call this
    to hand that memory back to the system between calls.
    """
    ext = _extension()
    if ext is not None:
        ext.cache_empty()


def cpu_cache_stats() -> dict[str, int]:
    """{"cached_bytes", "hits", "misses"} of the CPU cache since the process started (zeros without it)."""
    ext = _extension()
    cached, hits, misses = ext.cache_stats() if ext is not None else (0, 0, 0)
    return {"cached_bytes": cached, "hits": hits, "misses": misses}
