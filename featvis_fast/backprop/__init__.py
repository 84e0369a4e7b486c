"""The deconvolution / backprop family: saliency, input x gradient, DeconvNet, guided backprop,
Grad-CAM, guided Grad-CAM, with the rectifier rules applied by fused kernels (featvis::rectify);
LRP with FeatureVis' epsilon rule and Zennit's rules and composites (lrp); integrated gradients
and GradientSHAP (path); SmoothGrad around any of them."""
from ..engine import NonPiecewiseLinearWarning, RectifierRuleMode, Unit, set_forward_rewrites
from .cams import eigencam, eigengradcam, gradcam_pp, hirescam, layercam, xgradcam
from .captum_style import Deconvolution, GuidedBackprop, GuidedGradCam, LayerGradCam, LRPEpsilon, Saliency
from .excitation import excitation_backprop
from .fullgrad import fullgrad
from .lrp import lrp
from .methods import deconvnet, gradcam, guided_backprop, guided_gradcam, input_x_gradient, saliency
from .path import gradient_shap, integrated_gradients
from .smoothgrad import smoothgrad

__all__ = [
    "Deconvolution", "GuidedBackprop", "GuidedGradCam", "LRPEpsilon", "LayerGradCam", "NonPiecewiseLinearWarning",
    "RectifierRuleMode", "Saliency", "Unit", "deconvnet", "gradcam", "gradient_shap", "guided_backprop",
    "guided_gradcam", "input_x_gradient", "integrated_gradients", "lrp", "saliency", "set_forward_rewrites",
    "smoothgrad", "fullgrad", "eigencam", "eigengradcam", "gradcam_pp", "hirescam", "layercam", "xgradcam",
    "excitation_backprop",
]
