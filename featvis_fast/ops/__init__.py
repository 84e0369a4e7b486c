"""Registered custom ops (torch.library): one name per op, per-backend implementations behind it."""
from .ascent import ascent_step
from .dissection import dissect_tally
from .extremal import blend_levels, blend_levels_backward, smooth_masks, smooth_masks_backward
from .lrp import lrp_ratio
from .patches import gather_patches, scatter_patches
from .perturbation import apply_masks, box_accumulate, occlude, rise_masks
from .rectifier import rectify, rectify_, rectify_backward, rectify_inplace
from .similarity import colorize, pixel_similarity

__all__ = ["apply_masks", "ascent_step", "blend_levels", "blend_levels_backward", "box_accumulate", "colorize",
           "dissect_tally", "gather_patches", "lrp_ratio", "occlude", "pixel_similarity", "rise_masks", "rectify",
           "rectify_", "rectify_backward", "rectify_inplace", "scatter_patches", "smooth_masks",
           "smooth_masks_backward"]
