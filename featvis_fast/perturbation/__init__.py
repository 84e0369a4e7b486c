"""The input-modification family of the FeatureVis taxonomy: occlusion and RISE, batched on the
device with fused kernels that write the perturbed copies (featvis::occlude, featvis::apply_masks)."""
from .occlusion import occlusion
from .rise import random_masks, rise

__all__ = ["occlusion", "random_masks", "rise"]
