"""featvis-fast: fast CNN feature visualization (Triton, C++ and CUDA kernels, thin PyTorch API).

Importing never fails because a compiled extension is missing: backends load on first use and
fall back (with one warning) when an automatically chosen one is unavailable.
"""
from . import metrics
from ._backend import BackendUnavailableError, backends
from .backprop import (
    Unit,
    deconvnet,
    eigencam,
    eigengradcam,
    excitation_backprop,
    fullgrad,
    gradcam,
    gradcam_pp,
    gradient_shap,
    guided_backprop,
    guided_gradcam,
    hirescam,
    input_x_gradient,
    integrated_gradients,
    layercam,
    lrp,
    saliency,
    smoothgrad,
    xgradcam,
)
from .dissection import dissect
from .engine import GRAD_SEEDS, Target, empty_cpu_cache
from .images import load_image, sample_image, sample_images
from .models import Preprocess, extract, layer_names, load_model
from .perturbation import ablationcam, extremal_perturbation, occlusion, rise, scorecam
from .reconstruction import class_agnostic, invert, maximize
from .render import attribution_heatmap, clipped_heatmap, colorize, colormap, grid, overlay, signed_map
from .similarity import METRICS, FeatureSimilarity

__version__ = "0.2.0.dev0"

__all__ = [
    "BackendUnavailableError", "FeatureSimilarity", "GRAD_SEEDS", "METRICS", "Preprocess", "Target", "Unit",
    "attribution_heatmap",
    "clipped_heatmap",
    "backends", "colorize", "empty_cpu_cache",
    "colormap", "deconvnet", "extract", "gradcam", "grid", "guided_backprop", "guided_gradcam", "layer_names", "lrp",
    "class_agnostic", "dissect", "invert", "load_image", "load_model", "maximize", "occlusion", "overlay", "rise",
    "saliency", "sample_image", "sample_images", "signed_map",
    "gradient_shap", "input_x_gradient", "integrated_gradients", "smoothgrad",
    "eigencam", "eigengradcam", "gradcam_pp", "hirescam", "layercam", "xgradcam", "scorecam", "ablationcam", "fullgrad",
    "excitation_backprop", "extremal_perturbation", "metrics",
]
