"""Shared benchmark plumbing: timing, device description, result files."""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "cpu"
    return f"{model} ({torch.get_num_threads()} threads)"


def median_seconds(fn: Callable[[], object], device: str, repeats: int, warmup: int = 2,
                   budget_s: float = 20.0) -> float:
    """Median wall time of fn() (synchronized on CUDA); stops early once budget_s is spent."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s and len(times) >= 3:
            break
    return statistics.median(times)


def timed_median(fn: Callable[[], object], device: str, repeats: int) -> float:
    """Median wall time of `repeats` calls of fn() (synchronized on CUDA), no warm-up."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def copy_bandwidth(device: str, nbytes: int = 1 << 30) -> float:
    """Bytes/s of a device-to-device copy (read + write counted), the memory ceiling of this run."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    t = median_seconds(lambda: dst.copy_(src), device, repeats=20 if device == "cuda" else 5)
    return 2 * nbytes / t


def environment(device: str) -> dict:
    info = {"device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
            "date": datetime.date.today().isoformat()}
    try:
        import triton
        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    return info


def write_results(name: str, device: str, env: dict, rows: list[dict], markdown: str) -> tuple[str, str]:
    os.makedirs(RESULTS, exist_ok=True)
    stem = os.path.join(RESULTS, f"{name}-{device}-{env['date']}")
    with open(stem + ".json", "w") as fh:
        json.dump({"environment": env, "rows": rows}, fh, indent=2)
    with open(stem + ".md", "w") as fh:
        fh.write(markdown)
    return stem + ".json", stem + ".md"
