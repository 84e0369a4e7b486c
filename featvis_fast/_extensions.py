"""Loading the compiled kernels: JIT-built with ninja on first use, cached by torch.

`featvis_cpu` (csrc/*_cpu.cpp + bindings_cpu.cpp) builds wherever a C++ compiler is; `featvis_cuda`
(csrc/*_cuda.cu + bindings_cuda.cpp) only where torch is a CUDA build and a CUDA toolkit is found.
Set FEATVIS_NO_EXTENSIONS=1 to skip all compiled code. Builds land in
torch's extension cache (TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions) and are rebuilt
only when a source file changes.
"""
from __future__ import annotations

import functools
import importlib.resources
import os
import sys
import time
from types import ModuleType

import torch

STALE_LOCK_SECONDS = 20 * 60  # a build takes 1-3 minutes; an older lock was left by a killed build

CPU_SOURCES = ["similarity_cpu.cpp", "similarity_cpu_float.cpp", "similarity_cpu_int8.cpp", "colorize_cpu.cpp",
               "rectifier_cpu.cpp", "cpu_cache.cpp", "perturbation_cpu.cpp", "ascent_cpu.cpp",
               "dissection_cpu.cpp", "extremal_cpu.cpp", "lrp_cpu.cpp", "patches_cpu.cpp",
               "bindings_cpu.cpp"]
CUDA_SOURCES = ["similarity_cuda.cu", "similarity_int8_cuda.cu", "colorize_cuda.cu", "rectifier_cuda.cu",
                "perturbation_cuda.cu", "ascent_cuda.cu", "dissection_cuda.cu", "extremal_cuda.cu", "lrp_cuda.cu",
                "patches_cuda.cu", "bindings_cuda.cpp"]


class ExtensionUnavailable(RuntimeError):
    """A compiled extension cannot be built or loaded here; the message says why."""


def extensions_disabled() -> bool:
    return os.environ.get("FEATVIS_NO_EXTENSIONS", "").strip().lower() in ("1", "true", "yes", "on")


def _csrc(name: str) -> str:
    return str(importlib.resources.files("featvis_fast.csrc").joinpath(name))


def _build(name: str, sources: list[str], **kwargs) -> ModuleType:
    from torch.utils import cpp_extension

    if extensions_disabled():
        raise ExtensionUnavailable("compiled extensions are disabled (FEATVIS_NO_EXTENSIONS=1)")
    print(f"featvis_fast: loading the {name} kernels (built once, then cached) ...", file=sys.stderr, flush=True)
    _clear_stale_lock(cpp_extension._get_build_directory(name, verbose=False))
    try:
        return cpp_extension.load(name=name, sources=[_csrc(s) for s in sources], verbose=False, **kwargs)
    except Exception as exc:  # compiler missing, build error, ...: report, never crash import
        raise ExtensionUnavailable(f"building {name} failed: {type(exc).__name__}: {exc}") from exc


def _clear_stale_lock(build_dir: str) -> None:
    """torch waits forever on the lock file of a build that was killed; remove one that old."""
    lock = os.path.join(build_dir, "lock")
    try:
        age = time.time() - os.path.getmtime(lock)
    except OSError:
        return
    if age > STALE_LOCK_SECONDS:
        print(f"featvis_fast: removing a stale build lock ({age / 60:.0f} min old): {lock}", file=sys.stderr)
        try:
            os.remove(lock)
        except OSError:
            pass


@functools.cache
def load_cpu() -> ModuleType:
    """The C++ CPU extension `featvis_cpu`: every op's CPU kernels (csrc/*_cpu.cpp) and the CPU memory cache."""
    # no FMA contraction: colorize must round exactly like the float32 reference
    flags = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off"]
    return _build("featvis_cpu", CPU_SOURCES, extra_cflags=flags, extra_ldflags=["-fopenmp"])


@functools.cache
def load_cuda() -> ModuleType:
    """The CUDA extension `featvis_cuda`: every op's CUDA kernels (csrc/*.cu); needs a CUDA torch, a GPU and nvcc."""
    if torch.version.cuda is None:
        raise ExtensionUnavailable("torch is a CPU-only build")
    if not torch.cuda.is_available():
        raise ExtensionUnavailable("no CUDA device is visible")
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is None:
        raise ExtensionUnavailable("no CUDA toolkit (nvcc) found; set CUDA_HOME")
    major, minor = torch.cuda.get_device_capability()
    arch = f"-gencode=arch=compute_{major}{minor},code=sm_{major}{minor}"
    return _build("featvis_cuda", CUDA_SOURCES,
                  extra_cflags=["-O3"], extra_cuda_cflags=["-O3", arch, "-lineinfo"])
