"""Every method x metric on a set of images, resumable: the engine of `featvis evaluate`.

The images are split into batches; for each method the batch's attributions are computed once
(and kept on disk), then every metric scores them. Each finished (method, metric, batch) cell is
written atomically, so a rerun with the same settings skips what is done and an interrupted run
loses at most the cell that was running. Layout of the output directory:

    evaluate.json                             the settings; a rerun with other settings is refused
    attributions/<method>/batch-<k>.pt        the method's attributions of batch k (B, Ca, H, W)
    cells/<method>/<metric>/batch-<k>.json    per-image scores (and curves) of that cell

Every metric sees the same seed for every method, so methods are compared on the same random draws.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..jobs import atomic_write, known_settings, write_json
from ._explain import METHODS, explainer
from .registry import REGISTRY, per_image

SETTINGS_FILE = "evaluate.json"
BATCH_SEED_STRIDE = 1_000_003  # batch k of an evaluation with seed s draws from seed s * stride + k


@dataclass
class Cell:
    """One finished (method, metric) pair over all images: names (N,), scores (N,), curves (N, K) or None."""
    method: str
    metric: str
    names: list[str]
    scores: torch.Tensor
    curves: torch.Tensor | None


def _check_names(kind: str, names: Sequence[str], known: Sequence[str]) -> list[str]:
    names = list(names)
    if not names:
        raise ValueError(f"no {kind} given")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown {kind} {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{kind} listed twice: {names}")
    return names


def _settings_of(spec, x: torch.Tensor, overrides: dict) -> dict:
    settings = {**spec.settings, **overrides.get(spec.name, {})}
    return {k: (v(x) if callable(v) else v) for k, v in settings.items()}


def _digest(t: torch.Tensor) -> str:
    """A short content hash of a tensor (what the settings record for images, regions and tensor settings)."""
    data = t.detach().cpu().contiguous()
    return f"sha256:{hashlib.sha256(data.numpy().tobytes()).hexdigest()[:20]} {list(data.shape)} {data.dtype}"


def _jsonable(value: object) -> object:
    """Settings as JSON values that compare equal across runs: tensors by content hash, callables by
    their qualified name (never an address), non-finite floats as strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _digest(value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__qualname__)}"
    return repr(value)


def json_safe(value: object) -> object:
    """Nested dicts / lists with NaN and infinite floats as None: strict JSON (jq, browsers) has no NaN."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cell_path(out: Path, method: str, metric: str, batch: int) -> Path:
    return out / "cells" / method / metric / f"batch-{batch}.json"


def _attributions(out: Path, method: str, batch: int, explain: Callable, model, x, target) -> torch.Tensor:
    path = out / "attributions" / method / f"batch-{batch}.pt"
    if path.exists():
        return torch.load(path, map_location=x.device, weights_only=True)
    a = explain(model, x, target).detach()
    atomic_write(path, lambda fh: torch.save(a.cpu(), fh))
    return a


def evaluate(model: torch.nn.Module, images: Sequence[tuple[str, torch.Tensor]], methods: Sequence[str],
             metrics: Sequence[str], out: str | Path, *, regions: torch.Tensor | None = None,
             target: int | None = None, batch_size: int = 4, seed: int = 0,
             method_kwargs: dict[str, dict] | None = None, metric_settings: dict[str, dict] | None = None,
             record: dict | None = None, progress: bool = True) -> list[Cell]:
    """Run (or resume) every method x metric on the images, writing the cells under `out`.

    Args:
        model: the CNN (eval mode).
        images: (name, x) pairs, x a preprocessed image (1, C, H, W) or (C, H, W), all the same size.
        methods: explanation methods (featvis_fast.metrics.METHODS), e.g. ["saliency", "gradcam"].
        metrics: metric names (featvis_fast.metrics.registry.REGISTRY).
        out: the output directory.
        regions: (N, H, W) bool object masks, one per image, for the localisation metrics.
        target: the class every image is explained for (None: each image's predicted class).
        batch_size: images per batch.
        seed: the seed every metric's random draws start from.
        method_kwargs: {method: keyword arguments} (e.g. {"gradcam": {"layer": "_conv_head"}}).
        metric_settings: {metric: keyword arguments} overriding the registry's settings.
        record: more settings to record in evaluate.json (the model's name, the image folder).
        progress: a tqdm bar over the cells.

    Returns:
        one Cell per (method, metric), in the order given.
    """
    methods = _check_names("methods", methods, METHODS)
    metrics = _check_names("metrics", metrics, list(REGISTRY))
    method_kwargs, metric_settings = dict(method_kwargs or {}), dict(metric_settings or {})
    if not images:
        raise ValueError("no images to evaluate")
    names = [name for name, _ in images]
    if len(set(names)) != len(names):
        raise ValueError("two images share a name: names must be unique (they key the resumed cells)")
    xs = torch.cat([x if x.dim() == 4 else x[None] for _, x in images])
    needs_regions = [m for m in metrics if REGISTRY[m].call == "regions"]
    if needs_regions and regions is None:
        raise ValueError(f"{', '.join(needs_regions)} need object boxes or masks (--boxes)")
    if regions is not None and regions.shape != (xs.shape[0],) + tuple(xs.shape[2:]):
        raise ValueError(f"regions must be ({xs.shape[0]}, {xs.shape[2]}, {xs.shape[3]}) masks, "
                         f"got {tuple(regions.shape)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    for metric, overrides in metric_settings.items():
        if "order" in overrides:  # the ranking direction and the curve's meaning assume the default order
            raise ValueError(f"{metric}: evaluate ranks with the metric's default order; call "
                             f"featvis_fast.metrics.{metric}(..., order=...) directly for another")
    explain = {m: explainer(m, **method_kwargs.get(m, {})) for m in methods}  # bad method arguments fail here
    from .. import __version__  # defined once the package has imported (it imports this module first)
    out = Path(out)
    settings = _jsonable({
        "images": dict(zip(names, (_digest(x) for _, x in images))), "methods": methods, "metrics": metrics,
        "target": target, "batch_size": batch_size, "seed": seed, "dtype": str(xs.dtype),
        "method_kwargs": method_kwargs,
        "metric_settings": {m: _settings_of(REGISTRY[m], xs, metric_settings) for m in metrics},
        "regions": None if regions is None else _digest(regions), "featvis_fast": __version__, **(record or {})})
    try:
        known = known_settings(out, settings, SETTINGS_FILE)
    except ValueError:
        if any((out / "cells").rglob("*.json")):
            raise
        known = False  # nothing finished under the old settings: they may be replaced
    if not known:
        write_json(out / SETTINGS_FILE, settings)
    device = next(model.parameters()).device
    batches = [range(k, min(k + batch_size, len(names))) for k in range(0, len(names), batch_size)]
    bar = tqdm(total=len(batches) * len(methods) * len(metrics), desc="evaluate", unit="cell", disable=not progress)
    try:
        for k, rows in enumerate(batches):
            x = xs[rows.start:rows.stop].to(device)
            with torch.no_grad():
                y = model(x).argmax(1) if target is None else torch.full((x.shape[0],), target, device=device)
            for method in methods:
                todo = [m for m in metrics if not _cell_path(out, method, m, k).exists()]
                bar.update(len(metrics) - len(todo))
                if not todo:
                    continue
                a = _attributions(out, method, k, explain[method], model, x, y)
                for metric in todo:
                    _run_cell(out, method, metric, k, model, x, a, y, regions, rows, method_kwargs, metric_settings,
                              seed * BATCH_SEED_STRIDE + k, names)
                    bar.update(1)
    finally:
        bar.close()
    return collect(out, methods, metrics, len(batches))


def _run_cell(out, method, metric, k, model, x, a, y, regions, rows, method_kwargs, metric_settings, seed, names):
    spec = REGISTRY[metric]
    settings = _settings_of(spec, x, metric_settings)
    if "seed" in inspect.signature(spec.fn).parameters:
        settings.setdefault("seed", seed)
    if spec.call == "model":
        result = spec.fn(model, x, a, y, **settings)
    elif spec.call == "explain":
        result = spec.fn(model, x, a, y, explain=method, explain_kwargs=method_kwargs.get(method) or None,
                         **settings)
    elif spec.call == "attributions":
        result = spec.fn(a, **settings)
    else:
        result = spec.fn(a, regions[rows.start:rows.stop].to(a.device), **settings)
    scores, curves = per_image(result)
    write_json(_cell_path(out, method, metric, k), {
        "images": names[rows.start:rows.stop], "scores": json_safe(scores.double().cpu().tolist()),
        "curves": None if curves is None else json_safe(curves.double().cpu().tolist())})


def _tensor(values: list) -> torch.Tensor:
    """float64 tensor of nested lists whose None stands for NaN."""
    nested = lambda v: [nested(e) for e in v] if isinstance(v, list) else (math.nan if v is None else v)
    return torch.tensor(nested(values), dtype=torch.float64)


def collect(out: str | Path, methods: Sequence[str], metrics: Sequence[str], n_batches: int) -> list[Cell]:
    """The finished cells under `out` joined over the batches (a missing batch file is an error)."""
    out, cells = Path(out), []
    for method in methods:
        for metric in metrics:
            parts = []
            for k in range(n_batches):
                path = _cell_path(out, method, metric, k)
                if not path.exists():
                    raise FileNotFoundError(f"{path} is missing: run the evaluation (again) to finish it")
                parts.append(json.loads(path.read_text()))
            curves = [p["curves"] for p in parts]
            cells.append(Cell(method, metric, [n for p in parts for n in p["images"]],
                              _tensor([s for p in parts for s in p["scores"]]),
                              None if any(c is None for c in curves) else _tensor([row for c in curves for row in c])))
    return cells
