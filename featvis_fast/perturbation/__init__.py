"""The input-modification family of the FeatureVis taxonomy: occlusion, RISE and the score CAMs
(Score-CAM, Ablation-CAM), batched on the device with fused kernels that write the perturbed
copies (featvis::occlude, featvis::apply_masks)."""
from .occlusion import occlusion
from .rise import random_masks, rise
from .score_cams import ablationcam, scorecam

__all__ = ["ablationcam", "occlusion", "random_masks", "rise", "scorecam"]
