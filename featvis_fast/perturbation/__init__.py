"""The input-modification family of the FeatureVis taxonomy: occlusion, RISE, extremal perturbations
and the score CAMs (Score-CAM, Ablation-CAM), batched on the device with fused kernels that write
the perturbed copies (featvis::occlude, featvis::apply_masks, featvis::blend_levels) and build the
masks (featvis::rise_masks, featvis::smooth_masks)."""
from .extremal import extremal_perturbation
from .occlusion import occlusion
from .rise import random_masks, rise
from .score_cams import ablationcam, scorecam

__all__ = ["ablationcam", "extremal_perturbation", "occlusion", "random_masks", "rise", "scorecam"]
