"""The input-reconstruction family (activation maximization, network inversion, class-agnostic
visualization): in progress (issue 6). So far: image parameterizations."""
from .param import FFTParam, PixelParam, to_valid_rgb

__all__ = ["FFTParam", "PixelParam", "to_valid_rgb"]
