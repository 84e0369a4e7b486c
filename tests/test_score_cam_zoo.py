"""Score-CAM and Ablation-CAM on the whole zoo of test_zoo, against plain-PyTorch loops written
from their definitions (pytorch-grad-cam itself is the reference on three models in
test_cam_family; here each model's own structure is what is tested: stems, concatenations,
in-place rectifiers after the layer, models that read the batch size after it).

Ablation-CAM runs at each model's CAM layer (only the part after it runs per channel); Score-CAM
at the first convolution (one full forward per channel and image, so a layer with few channels).
The maps are compared unclamped (relu=False): at these small inputs some models' clamped maps are
0 everywhere, which would prove nothing. float64 equal to the loop to 1e-9 relative on the first
and a later call; float32 within 2x the loop's own float32 error against float64, in either
layout (contiguous or channels-last), as test_zoo.
"""
from __future__ import annotations

import copy
import warnings

import _zoo
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from test_cam_family import _zoo_model, rel_err

import featvis_fast as fv


def _first_conv(model: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if isinstance(m, nn.Conv2d))


def _layer_output(model: nn.Module, layer: str, x: torch.Tensor):
    """(model output, a copy of the layer's output) of one plain forward."""
    kept = []
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: kept.append(o.clone()))
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        handle.remove()
    return out, kept[0]


def scorecam_loop(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: str) -> torch.Tensor:
    """Score-CAM spelled out: per image, its K masked copies in one plain forward."""
    _, acts = _layer_output(model, layer, x)
    maps = []
    with torch.no_grad():
        for b in range(x.shape[0]):
            up = F.interpolate(acts[b][:, None], size=x.shape[-2:], mode="bilinear", align_corners=True)
            lo, hi = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
            scores = model(x[b:b + 1] * (up - lo) / (hi - lo + 1e-8))[:, target[b]]
            maps.append((torch.softmax(scores, 0)[:, None, None] * acts[b]).sum(0))
    return torch.stack(maps)


def ablationcam_loop(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: str) -> torch.Tensor:
    """Ablation-CAM spelled out: per image, a forward hook replaces the layer's output by its K
    ablated copies; S from the plain forward."""
    out, acts = _layer_output(model, layer, x)
    module = dict(model.named_modules())[layer]
    maps = []
    with torch.no_grad():
        for b in range(x.shape[0]):
            channels = acts.shape[1]
            ablated = acts[b:b + 1].repeat(channels, 1, 1, 1)
            ablated[torch.arange(channels), torch.arange(channels)] = 0
            handle = module.register_forward_hook(lambda m, i, o: ablated)
            try:
                try:  # the part before the layer on the one image, the rest on the K copies
                    scores = model(x[b:b + 1])[:, target[b]]
                except RuntimeError:  # a model that reads the input's batch size after the layer
                    scores = model(x[b:b + 1].expand(channels, *x.shape[1:]))[:, target[b]]
            finally:
                handle.remove()
            score = out[b, target[b]]
            maps.append((((score - scores) / score)[:, None, None] * acts[b]).sum(0))
    return torch.stack(maps)


LOOPS = {"scorecam": scorecam_loop, "ablationcam": ablationcam_loop}


@pytest.mark.zoo
@pytest.mark.skipif(not _zoo.has_timm(), reason="torchvision and timm are not installed")
@pytest.mark.parametrize("family,name", [pytest.param(f, n, id=n) for f, n in _zoo.ZOO])
@pytest.mark.parametrize("method", list(LOOPS))
def test_score_cams_on_the_zoo(family, name, method):
    m32, m64, x64, target, cam_layer = _zoo_model(family, name)
    layer = cam_layer if method == "ablationcam" else _first_conv(m64)
    loop = LOOPS[method]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = loop(m64, x64, target, layer)
        assert expected.abs().max() > 0, "a degenerate reference proves nothing"
        for call in range(2):
            got = getattr(fv, method)(m64, x64, target, layer, relu=False, progress=False)
            assert rel_err(got, expected) <= 1e-9, f"float64 call {call}"
        x32 = x64.float()
        mcl = copy.deepcopy(m32).to(memory_format=torch.channels_last)
        torch_err = max(rel_err(loop(m32, x32, target, layer), expected),
                        rel_err(loop(mcl, x32.contiguous(memory_format=torch.channels_last), target, layer),
                                expected))
        err = rel_err(getattr(fv, method)(m32, x32, target, layer, relu=False, progress=False), expected)
        assert err <= 2 * torch_err, f"float32: {err:.2e} > 2 x the loop's {torch_err:.2e}"
