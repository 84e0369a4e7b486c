"""Localisation and complexity metrics for bench/metrics.py: ours beside Quantus 0.6 and TorchRay.

None of these runs the model (Quantus is called with model=None, which it accepts for them). The
object of every image is one box around its centre, half the image's side: (W/4, H/4, 3W/4, 3H/4)
in pixels, x1 and y1 exclusive; ours take the box, the references the mask our _regions draws from
it, (B, 1, H, W) for Quantus and (H, W) per image for TorchRay.
"""
from __future__ import annotations

import numpy as np
import torch
from _metrics_common import Inputs, MetricCase, quantus

from featvis_fast import metrics
from featvis_fast.metrics.regions import boxes_to_masks

K = 1000  # top_k_intersection's k (Quantus' default; 2% of a 224 px image)
TOLERANCE = 15  # the pointing game's radius in pixels (TorchRay's default)


def centre_boxes(inputs: Inputs) -> torch.Tensor:
    """(B, 4) boxes (x0, y0, x1, y1): the central half of each image along both sides."""
    b, _, h, w = inputs.x.shape
    return torch.tensor([[w // 4, h // 4, w - w // 4, h - h // 4]] * b, dtype=torch.float64)


def centre_masks(inputs: Inputs) -> np.ndarray:
    """The same regions as (B, 1, H, W) float 0/1 masks (Quantus' s_batch)."""
    h, w = inputs.x.shape[2:]
    return boxes_to_masks(list(centre_boxes(inputs)[:, None]), h, w).numpy()[:, None].astype(np.float64)



def _quantus_metric(name: str, with_masks: bool = True, **kwargs):
    def run(inputs: Inputs) -> np.ndarray:
        metric = getattr(quantus(), name)(disable_warnings=True, **kwargs)
        scores = metric(model=None, x_batch=inputs.x_np, y_batch=inputs.y_np, a_batch=inputs.a_np,
                        s_batch=centre_masks(inputs) if with_masks else None)
        return np.asarray(scores, dtype=np.float64)
    return run


def _torchray_pointing_game(inputs: Inputs) -> np.ndarray:
    """TorchRay's PointingGame.evaluate on each map's first maximum (its benchmark's argmax point)."""
    quantus()  # torchvision's schemas, which TorchRay's benchmark imports
    from torchray.benchmark.pointing_game import PointingGame

    game = PointingGame(1, tolerance=TOLERANCE)
    masks = torch.from_numpy(centre_masks(inputs)[:, 0] > 0)
    maps = torch.from_numpy(inputs.a_np).sum(1)
    hits = []
    for mask, a in zip(masks, maps):
        peak = int(a.reshape(-1).argmax())
        hits.append(float(game.evaluate(mask, (peak % a.shape[1], peak // a.shape[1])) == 1))
    return np.asarray(hits)


def cases() -> list[MetricCase]:
    """One case per metric (two for the pointing game: TorchRay's tolerance, Quantus' none)."""
    return [
        MetricCase(
            "pointing_game",
            lambda i: metrics.pointing_game(i.attributions, centre_boxes(i), tolerance=TOLERANCE),
            {"torchray": _torchray_pointing_game},
            note=f"tolerance {TOLERANCE} px, first maximum (TorchRay's PointingGame.evaluate on its argmax); "
                 "central box of half the side"),
        MetricCase(
            "pointing_game (tolerance 0)",
            lambda i: metrics.pointing_game(i.attributions, centre_boxes(i), tolerance=0, ties="any"),
            {"quantus": _quantus_metric("PointingGame")},
            note="tolerance 0, any tied maximum (Quantus' PointingGame, normalise=True, abs=False)"),
        MetricCase(
            "energy_pointing_game",
            lambda i: metrics.energy_pointing_game(i.attributions, centre_boxes(i)),
            {"quantus": _quantus_metric("AttributionLocalisation", abs=False, positive_attributions=True)},
            note="positive energy inside / total; Quantus has no such metric: its AttributionLocalisation with "
                 "abs=False, positive_attributions=True is the same ratio with a 1e-9 guard"),
        MetricCase(
            "attribution_localisation",
            lambda i: metrics.attribution_localisation(i.attributions, centre_boxes(i)),
            {"quantus": _quantus_metric("AttributionLocalisation")},
            note="defaults: abs=True, weighted=False, positive_attributions=False, max_size=1"),
        MetricCase(
            "top_k_intersection",
            lambda i: metrics.top_k_intersection(i.attributions, centre_boxes(i), k=K),
            {"quantus": _quantus_metric("TopKIntersection", k=K)},
            note=f"k={K}, concept_influence=False, abs=False (ties: ours stable, Quantus' quicksort arbitrary)"),
        MetricCase(
            "sparseness",
            lambda i: metrics.sparseness(i.attributions),
            {"quantus": _quantus_metric("Sparseness", with_masks=False)},
            note="Gini index of |a| + 1e-7; Quantus scales by the batch's max |a|, ours per image (differences "
                 "of about 1e-7 relative where the maps' maxima differ)"),
        MetricCase(
            "complexity",
            lambda i: metrics.complexity(i.attributions),
            {"quantus": _quantus_metric("Complexity", with_masks=False)},
            note="entropy of |a| / sum |a| (nats)"),
    ]
