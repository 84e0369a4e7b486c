"""LRP composites on timm's own CNNs against Zennit 0.5.1: ResNet-18-D (deep stem, average-pool
downsampling, in-place residual sums) and EfficientNet-Lite0 (TensorFlow "same" padding as F.pad
before the convolution, BatchNormAct2d with ReLU6 inside, inverted residuals).

Zennit runs with the canonizers it would need for them (tests/_zennit.py: every batch norm merged
into the convolution before it, residual sums through its Sum module); ours needs none. Float64
equals Zennit to 1e-9 relative on two calls; float32 is within 2x Zennit's own float32 error,
contiguous or channels-last, whichever is larger (the zoo's bar).
"""
from __future__ import annotations

import copy

import _zoo
import pytest
import torch

import featvis_fast as fv

if not _zoo.has_timm():
    pytest.skip("needs timm and torchvision model definitions (see design.md)", allow_module_level=True)
_zoo.torchvision_models()  # before zennit, which imports torchvision
pytest.importorskip("zennit")
from _zennit import (  # noqa: E402
    COMPOSITES,
    TimmResidualCanonizer,
    merge_batch_norms,
    model_case,
    rel_err,
    zennit_relevance,
)

MODELS = ["resnet18d", "tf_efficientnet_lite0"]


def real(name: str):
    """(float32 model, float64 copy, float64 input (2, 3, 32, 32), predicted classes), built once."""
    return model_case(name, lambda: _zoo.timm_module().create_model(name, pretrained=False))


def zennit_on(model, x, target, composite):
    cls, kwargs = COMPOSITES[composite]
    canonizers = [merge_batch_norms(model, x), TimmResidualCanonizer()]
    return zennit_relevance(model, x, target, cls(canonizers=canonizers, **kwargs))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("composite", list(COMPOSITES))
def test_composites_match_zennit_on_timm_models(name, composite):
    m32, m64, x64, target = real(name)
    kwargs = COMPOSITES[composite][1]
    expected = zennit_on(m64, x64, target, composite)
    assert expected.abs().max() > 0, "a degenerate reference proves nothing"
    for call in range(2):
        err = rel_err(fv.lrp(m64, x64, target, composite=composite, **kwargs), expected)
        assert err <= 1e-9, f"float64 call {call}: relative error {err:.2e}"
    x32 = x64.float()
    mcl = copy.deepcopy(m32).to(memory_format=torch.channels_last)
    zennit_err = max(rel_err(zennit_on(m, x, target, composite), expected)
                     for m, x in ((m32, x32), (mcl, x32.contiguous(memory_format=torch.channels_last))))
    for call in range(2):
        got = fv.lrp(m32, x32, target, composite=composite, **kwargs)
        assert got.dtype == torch.float32
        err = rel_err(got, expected)
        assert err <= 2 * zennit_err, f"float32 call {call}: {err:.2e} > 2 x Zennit's {zennit_err:.2e}"


def test_a_same_padding_belongs_to_its_convolution_for_the_flat_rule():
    """EfficientNet-Lite0's stem pads with F.pad before its stride-2 convolution: the flat rule
    spreads relevance over the image pixels only (Zennit's result), none into the padding."""
    _, m64, x64, target = real("tf_efficientnet_lite0")
    rules = {"conv_stem": "flat"}
    ours = fv.lrp(m64, x64, target, composite="epsilon-plus", rules=rules)
    expected = zennit_on(m64, x64, target, "epsilon-plus-flat")
    assert rel_err(ours, expected) <= 1e-9
