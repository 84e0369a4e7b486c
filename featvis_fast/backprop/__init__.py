"""The deconvolution / backprop family: saliency, DeconvNet, guided backprop, Grad-CAM, guided
Grad-CAM and LRP-epsilon, with the rectifier rules applied by fused kernels (featvis::rectify)."""
from ..engine import NonPiecewiseLinearWarning, RectifierRuleMode, Unit, set_forward_rewrites
from .captum_style import Deconvolution, GuidedBackprop, GuidedGradCam, LayerGradCam, LRPEpsilon, Saliency
from .methods import deconvnet, gradcam, guided_backprop, guided_gradcam, lrp, saliency

__all__ = [
    "Deconvolution", "GuidedBackprop", "GuidedGradCam", "LRPEpsilon", "LayerGradCam", "NonPiecewiseLinearWarning",
    "RectifierRuleMode", "Saliency", "Unit", "deconvnet", "gradcam", "guided_backprop", "guided_gradcam", "lrp",
    "saliency", "set_forward_rewrites",
]
