"""Registered custom ops (torch.library): one name per op, per-backend implementations behind it."""
from .rectifier import rectify, rectify_, rectify_backward, rectify_inplace
from .similarity import colorize, pixel_similarity

__all__ = ["colorize", "pixel_similarity", "rectify", "rectify_", "rectify_backward", "rectify_inplace"]
