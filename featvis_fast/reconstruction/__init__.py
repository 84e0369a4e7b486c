"""The input-reconstruction family (activation maximization, network inversion, class-agnostic
visualization), on the fused step `featvis::ascent_step` (reference: featvis_fast._step_reference)."""
from .invert import Inversion, invert
from .maximize import Maximization, maximize
from .objectives import ClassLogit, Channel, DeepDream, Direction, Diversity, Neuron, Objective, parse
from .param import FFTParam, PixelParam, to_valid_rgb
from .transforms import STANDARD, Compose, Jitter, Pad, ScaleRotate

__all__ = ["Channel", "ClassLogit", "Compose", "DeepDream", "Direction", "Diversity", "FFTParam", "Inversion", "Jitter",
           "Maximization", "Neuron", "Objective", "Pad", "PixelParam", "STANDARD", "ScaleRotate", "invert", "maximize",
           "parse", "to_valid_rgb"]
