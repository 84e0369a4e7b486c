"""The input-reconstruction family (activation maximization, network inversion, class-agnostic
visualization after Stergiou 2021), on the fused step `featvis::ascent_step` (reference:
featvis_fast._ascent_reference)."""
from ._ascent import StepSettings
from .class_agnostic import ClassAgnostic, ClassAgnosticResult, StergiouPreset, class_agnostic
from .invert import Inversion, invert
from .maximize import Maximization, maximize
from .objectives import Channel, ClassLogit, DeepDream, Direction, Diversity, Each, Neuron, Objective, parse
from .param import FFTParam, PixelParam, to_valid_rgb
from .transforms import STANDARD, Compose, Jitter, Pad, ScaleRotate

__all__ = ["Channel", "ClassAgnostic", "ClassAgnosticResult", "ClassLogit", "Compose", "DeepDream", "Direction",
           "Diversity", "Each", "FFTParam", "Inversion", "Jitter", "Maximization", "Neuron", "Objective", "Pad",
           "PixelParam", "STANDARD", "ScaleRotate", "StepSettings", "StergiouPreset", "class_agnostic", "invert",
           "maximize", "parse",
           "to_valid_rgb"]
