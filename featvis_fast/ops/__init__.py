"""Registered custom ops (torch.library): one name per op, per-backend implementations behind it."""
from .similarity import colorize, pixel_similarity

__all__ = ["colorize", "pixel_similarity"]
