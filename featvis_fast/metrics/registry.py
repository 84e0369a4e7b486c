"""Which metrics `evaluate` (and `featvis evaluate`) can run, how each is called, and which way is better.

A MetricSpec names the metric's calling convention:
  "model"         fn(model, x, attributions, target, **settings)
  "explain"       fn(model, x, attributions, target, explain=method, explain_kwargs=..., **settings):
                  the metric explains changed inputs or models again with the method under test
  "attributions"  fn(attributions, **settings)
  "regions"       fn(attributions, regions, **settings): needs object boxes or masks
and the settings the evaluation uses by default (bounded so a report over a few dozen images
runs in minutes on a CPU; every one can be overridden).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .complexity_measures import complexity, sparseness
from .correlation import faithfulness_correlation
from .faithfulness import deletion, insertion, pixel_flipping, region_perturbation
from .infidelity import infidelity
from .localisation import attribution_localisation, energy_pointing_game, pointing_game, top_k_intersection
from .randomisation import mprt, random_logit
from .road import road
from .robustness import avg_sensitivity, local_lipschitz, max_sensitivity

CALLS = ("model", "explain", "attributions", "regions")


@dataclass(frozen=True)
class MetricSpec:
    """One metric as the evaluation runs it.

    Attributes:
        name: the metric's name (its function in featvis_fast.metrics).
        fn: the metric function.
        call: how it is called (CALLS).
        higher_is_better: which direction ranks methods first.
        settings: keyword arguments the evaluation passes by default; a callable value is
            called with the batch x (B, C, H, W) (settings that scale with the image).
        curve_label: the x axis of its curves (None: no curve).
    """
    name: str
    fn: Callable
    call: str
    higher_is_better: bool
    settings: dict = field(default_factory=dict)
    curve_label: str | None = None


def per_image(result: object) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A metric's return value -> ((B,) scores, (B, K) curves or None)."""
    if isinstance(result, torch.Tensor):
        return result, None
    scores = getattr(result, "scores", None)
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"a metric returned {type(result).__name__} without per-image scores")
    curves = getattr(result, "curves", None)
    return scores, curves if isinstance(curves, torch.Tensor) else None


REGISTRY: dict[str, MetricSpec] = {spec.name: spec for spec in (
    MetricSpec("deletion", deletion, "model", False, curve_label="fraction of pixels deleted"),
    MetricSpec("insertion", insertion, "model", True, curve_label="fraction of pixels inserted"),
    MetricSpec("pixel_flipping", pixel_flipping, "model", False,
               {"features_in_step": lambda x: x.shape[1] * x.shape[3]},
               curve_label="step"),
    MetricSpec("region_perturbation", region_perturbation, "model", True,
               {"patch_size": 16, "regions": 50}, curve_label="regions perturbed"),
    MetricSpec("road", road, "model", False, curve_label="percent of pixels imputed (MoRF)"),
    MetricSpec("faithfulness_correlation", faithfulness_correlation, "model", True, {"n_samples": 50}),
    MetricSpec("infidelity", infidelity, "model", False, {"n_samples": 10}),
    MetricSpec("max_sensitivity", max_sensitivity, "explain", False, {"n_samples": 10}),
    MetricSpec("avg_sensitivity", avg_sensitivity, "explain", False, {"n_samples": 10}),
    MetricSpec("local_lipschitz", local_lipschitz, "explain", False, {"n_samples": 10}),
    MetricSpec("pointing_game", pointing_game, "regions", True),
    MetricSpec("energy_pointing_game", energy_pointing_game, "regions", True),
    MetricSpec("attribution_localisation", attribution_localisation, "regions", True),
    MetricSpec("top_k_intersection", top_k_intersection, "regions", True),
    MetricSpec("mprt", mprt, "explain", False, {"skip_layers": True}),  # the fully randomised model only
    MetricSpec("random_logit", random_logit, "explain", False),
    MetricSpec("sparseness", sparseness, "attributions", True),
    MetricSpec("complexity", complexity, "attributions", False),
)}
