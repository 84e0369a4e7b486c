"""Backend registry: which implementations exist here, and choosing one per call.

Order of choice: explicit `backend=` argument, else env FEATVIS_BACKEND, else the fastest one
available for the tensor's device (CUDA: cuda > triton > torch; CPU: cpp > torch). An
auto-chosen backend that fails to load falls back to the next with one warning; an explicitly
requested one that is unavailable raises BackendUnavailableError.
"""
from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass

import torch

from . import _extensions

BACKENDS = ("cuda", "triton", "cpp", "torch")
_AUTO_ORDER = {"cuda": ("cuda", "triton", "torch"), "cpu": ("cpp", "torch")}


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run here (the message says why)."""


@dataclass(frozen=True)
class BackendStatus:
    name: str
    available: bool
    devices: tuple[str, ...]
    reason: str

    def __str__(self) -> str:
        where = ", ".join(self.devices) if self.devices else "-"
        return f"{self.name:7s} {'yes' if self.available else 'no ':3s}  devices: {where:10s} {self.reason}"


def triton_interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") == "1"


@functools.cache
def _triton_import_error() -> str | None:
    try:
        import triton  # noqa: F401
    except Exception as exc:
        return f"triton does not import: {exc}"
    return None


def _probe(name: str, device_type: str) -> str | None:
    """None if `name` can run on `device_type` here, else the reason it cannot."""
    if name == "torch":
        return None
    if name == "cpp":
        if device_type != "cpu":
            return "C++ kernels run on CPU tensors only"
        try:
            _extensions.load_cpu()
        except _extensions.ExtensionUnavailable as exc:
            return str(exc)
        return None
    if name == "cuda":
        if device_type != "cuda":
            return "CUDA kernels run on CUDA tensors only"
        try:
            _extensions.load_cuda()
        except _extensions.ExtensionUnavailable as exc:
            return str(exc)
        return None
    if name == "triton":
        err = _triton_import_error()
        if err:
            return err
        if device_type == "cpu" and not triton_interpreter_on():
            return "Triton runs on CPU tensors only under the interpreter (TRITON_INTERPRET=1 before import)"
        if device_type not in ("cpu", "cuda"):
            return f"Triton does not run on {device_type} tensors"
        return None
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def backends() -> dict[str, BackendStatus]:
    """Which backends are available here, on which devices, and why not where not.

    Returns:
        {name: BackendStatus} for "cuda", "triton", "cpp" and "torch" (printing a status says
        whether it loads and, if not, the reason).
    """
    device_types = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    report = {}
    for name in BACKENDS:
        reasons = {d: _probe(name, d) for d in device_types}
        ok = tuple(d for d, r in reasons.items() if r is None)
        why = "; ".join(f"{d}: {r}" for d, r in reasons.items() if r is not None) or "ok"
        report[name] = BackendStatus(name, bool(ok), ok, why)
    return report


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """The backend to run an op on for tensors on `device`."""
    requested = backend if backend is not None else (os.environ.get("FEATVIS_BACKEND") or None)
    if requested is not None:
        if not isinstance(requested, str) or requested not in BACKENDS:
            raise ValueError(f"unknown backend {requested!r}; choose one of {', '.join(BACKENDS)}")
        reason = _probe(requested, device.type)
        if reason is not None:
            source = "backend=" if backend is not None else "FEATVIS_BACKEND="
            raise BackendUnavailableError(f"{source}{requested!r} cannot run on {device.type}: {reason}")
        return requested
    order = _AUTO_ORDER.get(device.type, ("torch",))
    for name in order:
        reason = _probe(name, device.type)
        if reason is None:
            return name
        if name != "torch":
            _warn_once(f"{name}/{device.type}",
                       f"featvis_fast: backend {name!r} unavailable on {device.type} ({reason}); falling back")
    return "torch"
