"""Evaluation metrics for explanations, batched on the input's device (Quantus' definitions).

Call convention: `NAME(model, x, attributions, target, ...)` for the metrics that run the model,
`NAME(attributions, ...)` for those that do not. Each returns a per-image tensor (B,) (and the
curves where the metric has one). Attributions come from any method of this package or any tensor:
(B, H, W), (B, 1, H, W) or (B, C, H, W).

Families: faithfulness (deletion, insertion, pixel_flipping, region_perturbation, road,
faithfulness_correlation, infidelity), robustness (max_sensitivity, avg_sensitivity,
local_lipschitz), localisation (pointing_game, energy_pointing_game, attribution_localisation,
top_k_intersection), randomisation (mprt, random_logit), complexity (sparseness, complexity).
"""
from ._explain import CAM_METHODS, LAYER_METHODS, METHODS, default_cam_layer, explainer
from .complexity_measures import complexity, sparseness
from .correlation import faithfulness_correlation
from .faithfulness import CurveResult, deletion, insertion, pixel_flipping, region_perturbation
from .infidelity import cumulative_patch_perturbation, gaussian_perturbation, infidelity
from .localisation import attribution_localisation, energy_pointing_game, pointing_game, top_k_intersection
from .randomisation import MPRTResult, mprt, random_logit
from .regions import load_regions, region_masks
from .report import write_report
from .road import road
from .robustness import avg_sensitivity, local_lipschitz, max_sensitivity
from .runner import evaluate

__all__ = [
    # faithfulness
    "CurveResult", "deletion", "insertion", "pixel_flipping", "region_perturbation", "road", "faithfulness_correlation",
    "infidelity", "gaussian_perturbation", "cumulative_patch_perturbation",
    # robustness
    "max_sensitivity", "avg_sensitivity", "local_lipschitz",
    # localisation
    "pointing_game", "energy_pointing_game", "attribution_localisation", "top_k_intersection", "load_regions",
    "region_masks",
    # randomisation
    "MPRTResult", "mprt", "random_logit",
    # complexity
    "sparseness", "complexity",
    # explanations and the evaluation
    "METHODS", "CAM_METHODS", "LAYER_METHODS", "default_cam_layer", "explainer", "evaluate", "write_report",
]
