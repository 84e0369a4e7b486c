"""Test lanes: plain CPU (torch, cpp), Triton under the interpreter on CPU, needs_cuda on a GPU.

Without a GPU the Triton kernels run under TRITON_INTERPRET=1, which must be set before
triton is imported anywhere, hence here.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from featvis_fast import _backend  # noqa: E402


def _available(name: str, device: str) -> bool:
    try:
        return _backend._probe(name, device) is None
    except Exception:
        return False


def kernel_backends(device: str) -> list[str]:
    """Backends that run on `device` here (the oracle `torch` always)."""
    order = ["torch", "cpp", "triton"] if device == "cpu" else ["torch", "cuda", "triton"]
    return [b for b in order if _available(b, device)]


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def backend_params():
    """(device, backend) pairs; GPU pairs carry the needs_cuda mark."""
    params = []
    for dev in ("cpu", "cuda"):
        mark = [pytest.mark.needs_cuda] if dev == "cuda" else []
        names = kernel_backends(dev) if dev in DEVICES else ["cuda", "triton"]
        for b in names:
            params.append(pytest.param(dev, b, id=f"{dev}-{b}", marks=mark))
    return params


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def poison_outputs(monkeypatch):
    """Kernel outputs start as NaN / 0xAB bytes / 0x55555555 words so any element a kernel leaves unwritten shows."""
    from featvis_fast.ops import _registry

    def poisoned(shape, dtype, device):
        t = torch.empty(shape, dtype=dtype, device=device)
        if dtype.is_floating_point:
            return t.fill_(float("nan"))
        return t.fill_(0x55555555 if dtype == torch.int32 else 0xAB)

    monkeypatch.setattr(_registry, "empty", poisoned)
