"""The input-reconstruction family (activation maximization, network inversion, class-agnostic
visualization): in progress (issue 6). So far: image parameterizations, robustness transforms,
objectives, a first maximize (the eager loop); the fused step's reference is featvis_fast._step_reference."""
from .maximize import maximize
from .objectives import ClassLogit, Channel, DeepDream, Direction, Diversity, Neuron, Objective, parse
from .param import FFTParam, PixelParam, to_valid_rgb
from .transforms import STANDARD, Compose, Jitter, Pad, ScaleRotate

__all__ = ["Channel", "ClassLogit", "Compose", "DeepDream", "Direction", "Diversity", "FFTParam", "Jitter", "Neuron",
           "Objective", "Pad", "PixelParam", "STANDARD", "ScaleRotate", "maximize", "parse", "to_valid_rgb"]
