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

import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..jobs import atomic_write, known_settings, write_json
from ._explain import METHODS, explainer
from .registry import REGISTRY, per_image

SETTINGS_FILE = "evaluate.json"


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
    out = Path(out)
    settings = {"images": names, "methods": methods, "metrics": metrics, "target": target,
                "batch_size": batch_size, "seed": seed, "shape": list(xs.shape[1:]), "dtype": str(xs.dtype),
                "method_kwargs": method_kwargs, "metric_settings": metric_settings,
                "regions": regions is not None, **(record or {})}
    settings = json.loads(json.dumps(settings, default=repr))
    if not known_settings(out, settings, SETTINGS_FILE):
        write_json(out / SETTINGS_FILE, settings)
    device = next(model.parameters()).device
    batches = [range(k, min(k + batch_size, len(names))) for k in range(0, len(names), batch_size)]
    explain = {m: explainer(m, **method_kwargs.get(m, {})) for m in methods}
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
                              seed, names)
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
        "images": names[rows.start:rows.stop], "scores": scores.double().cpu().tolist(),
        "curves": None if curves is None else curves.double().cpu().tolist()})


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
                              torch.tensor([s for p in parts for s in p["scores"]], dtype=torch.float64),
                              None if any(c is None for c in curves)
                              else torch.tensor([row for c in curves for row in c], dtype=torch.float64)))
    return cells
