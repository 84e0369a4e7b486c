"""torchvision's and timm's own CNNs with random weights and realistic batch-norm statistics.

torchvision's wheel is a CUDA build whose C++ ops do not load beside the CPU torch of these
machines; defining the two schemas it registers fake kernels for, before the import, is enough
for everything the model definitions use (design.md, 3b). `LIB` keeps that library alive.

Random weights alone leave batch norm near identity or let activations saturate, so
`realistic` randomizes BN's affine parameters and then measures the running statistics on a
random batch (train mode, momentum=None: one cumulative average), then returns to eval.
"""
from __future__ import annotations

import importlib.util

import torch

LIB = None


def _define_torchvision_schemas() -> None:
    global LIB
    if LIB is not None:
        return
    try:
        _ = torch.ops.torchvision.nms  # a working torchvision (CUDA machine) needs nothing
        return
    except (AttributeError, RuntimeError):
        pass
    LIB = torch.library.Library("torchvision", "DEF")
    LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    LIB.define("qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor")


def has_torchvision() -> bool:
    return importlib.util.find_spec("torchvision") is not None


def has_timm() -> bool:
    return importlib.util.find_spec("timm") is not None and has_torchvision()


def torchvision_models():
    """torchvision.models, importable beside the CPU torch."""
    _define_torchvision_schemas()
    import torchvision.models

    return torchvision.models


def timm_module():
    _define_torchvision_schemas()
    import timm

    return timm


# name -> (constructor kwargs, smallest input side that works, a Grad-CAM layer)
TORCHVISION = {
    "resnet18": ({}, 32, "layer4"),
    "resnext50_32x4d": ({}, 32, "layer4"),
    "wide_resnet50_2": ({}, 32, "layer4"),
    "vgg11": ({}, 32, "features.18"),
    "vgg11_bn": ({}, 32, "features.26"),
    "alexnet": ({}, 64, "features.10"),
    "densenet121": ({}, 32, "features"),
    "googlenet": ({"aux_logits": False, "init_weights": True}, 32, "inception5b"),
    "inception_v3": ({"aux_logits": False, "init_weights": True}, 75, "Mixed_7c"),
    "mobilenet_v2": ({}, 32, "features.18"),
    "mobilenet_v3_small": ({}, 32, "features.12"),
    "mnasnet0_5": ({}, 32, "layers.16"),
    "shufflenet_v2_x0_5": ({}, 32, "conv5"),
    "squeezenet1_1": ({}, 48, "features.12"),
    "regnet_y_400mf": ({}, 32, "trunk_output"),
    "efficientnet_b0": ({}, 32, "features.8"),
    "convnext_tiny": ({}, 32, "features.7"),
}

# timm name -> (smallest input side that works, a Grad-CAM layer)
TIMM = {
    "resnet18d": (32, "layer4"),
    "dla34": (64, "level5"),
    "hrnet_w18_small": (64, "final_layer"),
    "xception41": (64, "blocks.11"),
    "res2net50_26w_4s": (32, "layer4"),
    "dpn68": (64, "features.conv5_3"),
    "inception_v4": (75, "features.21"),
    "repvgg_a2": (32, "stages.3"),
    "tf_efficientnet_lite0": (32, "conv_head"),
    "rexnet_100": (32, "features.16"),
    "ghostnet_100": (32, "blocks.9"),
    "cspdarknet53": (64, "stages.4"),
}


def realistic(model: torch.nn.Module, side: int, *, seed: int = 0, batch: int = 8) -> torch.nn.Module:
    """Randomize every batch norm's affine parameters, measure running statistics on one random
    batch (B, 3, side, side), and return the model in eval mode (float32, CPU)."""
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in norms:
            if m.affine:
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
            m.reset_running_stats()
            m.momentum = None
        model.train()
        model(torch.randn(batch, 3, side, side, generator=gen))
        for m in norms:
            m.momentum = 0.1
    return model.eval()


def build(family: str, name: str, *, seed: int = 0):
    """(model in eval mode with realistic BN statistics, input side, Grad-CAM layer)."""
    torch.manual_seed(seed)
    if family == "torchvision":
        kwargs, side, layer = TORCHVISION[name]
        model = getattr(torchvision_models(), name)(weights=None, **kwargs)
    else:
        side, layer = TIMM[name]
        model = timm_module().create_model(name, pretrained=False)
    return realistic(model, side, seed=seed), side, layer


ZOO = [("torchvision", n) for n in TORCHVISION] + [("timm", n) for n in TIMM]
