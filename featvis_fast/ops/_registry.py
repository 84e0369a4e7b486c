"""What every registered op (featvis::*) shares: where each backend's kernels come from, which
calls run the PyTorch reference, how outputs are allocated, and where each op's sources are.

An op file (ops/<family>.py) declares its kernels once,

    KERNELS = Kernels("rectifier", rectify="rectify_triton", rectify_backward="rectify_backward_triton")

and in each op asks `KERNELS.for_call(backend, dtype)` for the module to launch (None: run the
reference) and allocates outputs with `empty`. SOURCES lists, per op family, its reference,
Triton, C++ and CUDA files (tests/test_ops_registry.py checks that they exist and name the op).
Adding an op: docs/adding-an-op.md.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from .. import _extensions

BACKENDS = ("cpp", "cuda", "triton")  # kernel backends; "torch" is the reference


def empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Output allocation for every compiled and Triton launch (tests patch this one function to
    poison every op's outputs, so that an element a kernel leaves unwritten shows).

    Args:
        shape, dtype, device: as torch.empty.

    Returns:
        An uninitialized contiguous tensor.
    """
    return torch.empty(shape, dtype=dtype, device=device)


class Kernels:
    """The kernel modules behind one op family, by backend: the C++ CPU extension (featvis_cpu),
    the CUDA extension (featvis_cuda), and the Triton launchers of featvis_fast/kernels/<triton>.py
    under the op's names.

    Args:
        triton: the module name under featvis_fast.kernels.
        **launchers: op name -> launcher function name in that module.
    """

    def __init__(self, triton: str, **launchers: str) -> None:
        self.triton, self.launchers = triton, launchers

    def _triton_module(self) -> SimpleNamespace:
        module = importlib.import_module(f"featvis_fast.kernels.{self.triton}")
        return SimpleNamespace(**{op: getattr(module, fn) for op, fn in self.launchers.items()})

    def module(self, backend: str):
        """The kernel module of one backend ("cpp", "cuda" or "triton"), loaded on first use.

        Raises:
            ValueError: backend is not a kernel backend.
            ExtensionUnavailable: the compiled extension cannot be built or loaded here.
        """
        if backend == "cpp":
            return _extensions.load_cpu()
        if backend == "cuda":
            return _extensions.load_cuda()
        if backend == "triton":
            return self._triton_module()
        raise ValueError(f"backend must be one of {('torch', *BACKENDS)}, got {backend!r}")

    def for_call(self, backend: str, dtype: torch.dtype):
        """The module to launch for a call, or None where the call runs the PyTorch reference:
        backend "torch", or float64 data (no kernel computes in float64).

        Args:
            backend: "torch", "cpp", "cuda" or "triton" (resolved by the caller, featvis_fast._backend).
            dtype: the dtype of the call's data.
        """
        if backend == "torch" or dtype == torch.float64:
            return None
        return self.module(backend)


@dataclass(frozen=True)
class OpSources:
    """Where one op family's implementations live (paths from the repository root)."""

    ops: tuple[str, ...]  # the featvis:: op names
    layer: str            # the torch.library registration (featvis_fast/ops/...)
    reference: str        # the PyTorch reference: semantics and float64 path
    triton: str
    cpp: tuple[str, ...]
    cuda: tuple[str, ...]


SOURCES = {
    "rectifier": OpSources(("rectify", "rectify_", "rectify_backward"), "featvis_fast/ops/rectifier.py",
                           "featvis_fast/_rectifier_reference.py", "kernels/rectifier.py",
                           ("csrc/rectifier_cpu.h", "csrc/rectifier_cpu.cpp"),
                           ("csrc/rectifier_cuda.h", "csrc/rectifier_cuda.cu")),
    "perturbation": OpSources(("occlude", "box_accumulate", "rise_masks", "apply_masks"),
                              "featvis_fast/ops/perturbation.py", "featvis_fast/_perturbation_reference.py",
                              "kernels/perturbation.py", ("csrc/perturbation_cpu.h", "csrc/perturbation_cpu.cpp"),
                              ("csrc/perturbation_cuda.h", "csrc/perturbation_cuda.cu")),
    "ascent": OpSources(("ascent_step",), "featvis_fast/ops/ascent.py", "featvis_fast/_ascent_reference.py",
                        "kernels/ascent.py", ("csrc/ascent_cpu.h", "csrc/ascent_cpu.cpp"),
                        ("csrc/ascent_cuda.h", "csrc/ascent_cuda.cu")),
    "dissection": OpSources(("dissect_tally",), "featvis_fast/ops/dissection.py",
                            "featvis_fast/_dissection_reference.py", "kernels/dissection.py",
                            ("csrc/dissection_cpu.h", "csrc/dissection_cpu.cpp"),
                            ("csrc/dissection_cuda.h", "csrc/dissection_cuda.cu")),
    "extremal": OpSources(("smooth_masks", "smooth_masks_backward", "blend_levels", "blend_levels_backward"),
                          "featvis_fast/ops/extremal.py", "featvis_fast/_extremal_reference.py", "kernels/extremal.py",
                          ("csrc/extremal_cpu.h", "csrc/extremal_cpu.cpp"),
                          ("csrc/extremal_cuda.h", "csrc/extremal_cuda.cu")),
    "lrp": OpSources(("lrp_ratio",), "featvis_fast/ops/lrp.py", "featvis_fast/_lrp_reference.py", "kernels/lrp.py",
                     ("csrc/lrp_cpu.h", "csrc/lrp_cpu.cpp"), ("csrc/lrp_cuda.h", "csrc/lrp_cuda.cu")),
    "similarity": OpSources(("pixel_similarity", "colorize"), "featvis_fast/ops/similarity.py",
                            "featvis_fast/_reference.py", "kernels/similarity.py",
                            ("csrc/similarity_cpu.h", "csrc/similarity_cpu.cpp", "csrc/similarity_cpu_float.cpp",
                             "csrc/similarity_cpu_int8.cpp", "csrc/colorize_cpu.cpp"),
                            ("csrc/similarity_cuda.h", "csrc/similarity_cuda.cu", "csrc/similarity_int8_cuda.cu",
                             "csrc/colorize_cuda.cu")),
    "patches": OpSources(("gather_patches",), "featvis_fast/ops/patches.py", "featvis_fast/_patches_reference.py",
                         "kernels/patches.py", ("csrc/patches_cpu.h", "csrc/patches_cpu.cpp"),
                         ("csrc/patches_cuda.h", "csrc/patches_cuda.cu")),
}
