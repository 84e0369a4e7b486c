"""LRP rules and composites (fv.lrp(composite=..., rules=...)) against Zennit 0.5.1.

Zennit runs with its canonizers (VGGCanonizer, ResNetCanonizer) and seeds the output with the
target's activation, as ours does. One quirk of Zennit's is set aside: its batch-norm merge
leaves the batch norm computing x / sqrt(1 + eps) instead of the identity (running_var = 1, eps
kept), which shifts every later layer by about eps / 2 = 5e-6; the reference sets those eps to 0
for the identity it means, and test_zennits_batch_norm_quirk_is_the_only_difference shows the
rest is equal. Float64 must equal Zennit to 1e-9 relative on two calls; float32 must be within 2x
Zennit's own float32 error against float64, contiguous or channels-last, whichever is larger (the
zoo's bar: our CPU passes run channels-last).
"""
from __future__ import annotations

import copy

import _zoo
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import featvis_fast as fv

if not _zoo.has_torchvision():
    pytest.skip("needs torchvision model definitions (see design.md)", allow_module_level=True)
_zoo.torchvision_models()  # before zennit, which imports torchvision
zennit_composites = pytest.importorskip("zennit.composites")
zennit_torchvision = pytest.importorskip("zennit.torchvision")
from zennit.composites import NameLayerMapComposite  # noqa: E402
from zennit.rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass, WSquare, ZBox, ZPlus  # noqa: E402
from zennit.types import Activation, AvgPool  # noqa: E402

zennit_layer = pytest.importorskip("zennit.layer")

from _zennit import COMPOSITES, model_case, rel_err, zennit_relevance  # noqa: E402

CANONIZERS = {"vgg16": zennit_torchvision.VGGCanonizer, "vgg16_bn": zennit_torchvision.VGGCanonizer,
              "resnet18": zennit_torchvision.ResNetCanonizer, "resnet50": zennit_torchvision.ResNetCanonizer}


def real(name: str):
    """(float32 model, float64 copy, float64 input (2, 3, 32, 32), predicted classes), built once."""
    return model_case(name, lambda: getattr(_zoo.torchvision_models(), name)(weights=None))


@pytest.mark.parametrize("name", ["vgg16", "resnet18", "resnet50"])
@pytest.mark.parametrize("composite", list(COMPOSITES))
def test_composites_match_zennit(name, composite):
    m32, m64, x64, target = real(name)
    cls, kwargs = COMPOSITES[composite]
    expected = zennit_relevance(m64, x64, target, cls(canonizers=[CANONIZERS[name]()], **kwargs))
    assert expected.abs().max() > 0, "a degenerate reference proves nothing"
    for call in range(2):
        err = rel_err(fv.lrp(m64, x64, target, composite=composite, **kwargs), expected)
        assert err <= 1e-9, f"float64 call {call}: relative error {err:.2e}"
    x32 = x64.float()
    mcl = copy.deepcopy(m32).to(memory_format=torch.channels_last)  # the zoo bar: either layout's error
    zennit_err = max(rel_err(zennit_relevance(m, x, target, cls(canonizers=[CANONIZERS[name]()], **kwargs)),
                             expected)
                     for m, x in ((m32, x32), (mcl, x32.contiguous(memory_format=torch.channels_last))))
    for call in range(2):
        got = fv.lrp(m32, x32, target, composite=composite, **kwargs)
        assert got.dtype == torch.float32
        err = rel_err(got, expected)
        assert err <= 2 * zennit_err, f"float32 call {call}: {err:.2e} > 2 x Zennit's {zennit_err:.2e}"


def test_zennits_batch_norm_quirk_is_the_only_difference():
    _, m64, x64, target = real("resnet18")
    composite = zennit_composites.EpsilonPlus(canonizers=[zennit_torchvision.ResNetCanonizer()])
    ours = fv.lrp(m64, x64, target, composite="epsilon-plus")
    as_is = zennit_relevance(m64, x64, target, composite, identity_batch_norm=False)
    identity = zennit_relevance(m64, x64, target, composite)
    assert rel_err(ours, identity) <= 1e-9
    assert 1e-7 < rel_err(ours, as_is) < 1e-3  # Zennit's 1 / sqrt(1 + 1e-5) per batch norm, no more


def _mixed_rules_zennit(low, high):
    """Zennit's version of the rules dict in test_rules_by_name_and_type_match_zennit."""
    return NameLayerMapComposite(
        name_map=[(("features.0",), ZBox(low=low, high=high)), (("features.2",), WSquare()),
                  (("features.5",), Flat()), (("classifier.3",), Norm())],
        layer_map=[(Activation, Pass()), (AvgPool, Norm()), (nn.Conv2d, Gamma(gamma=0.5)),
                   (nn.Linear, Epsilon(epsilon=1e-4))],
        canonizers=[zennit_torchvision.VGGCanonizer()])


def test_rules_by_name_and_type_match_zennit():
    _, m64, x64, target = real("vgg16")
    rules = {"features.0": ("zbox", -4.0, 4.0), "features.2": "wsquare", "features.5": "flat",
             "classifier.3": "norm", nn.Conv2d: ("gamma", 0.5), nn.Linear: ("epsilon", 1e-4)}
    expected = zennit_relevance(m64, x64, target, _mixed_rules_zennit(-4.0, 4.0))
    for composite in ("epsilon-plus", "epsilon-alpha2-beta1"):  # every layer is covered by the rules
        assert rel_err(fv.lrp(m64, x64, target, composite=composite, rules=rules), expected) <= 1e-9


@pytest.mark.parametrize("rule, zennit_rule", [
    ("zplus", ZPlus()), (("alphabeta", 1, 0), AlphaBeta(alpha=1, beta=0)), (("gamma", 0.1), Gamma(gamma=0.1)),
    ("wsquare", WSquare()), (("epsilon", 0.25), Epsilon(epsilon=0.25))])
def test_single_rules_on_resnet_match_zennit(rule, zennit_rule):
    _, m64, x64, target = real("resnet18")
    composite = NameLayerMapComposite(
        name_map=[], layer_map=[(Activation, Pass()), (zennit_layer.Sum, Norm()), (AvgPool, Norm()),
                                (nn.BatchNorm2d, Pass()), (nn.Conv2d, zennit_rule), (nn.Linear, Epsilon())],
        canonizers=[zennit_torchvision.ResNetCanonizer()])
    expected = zennit_relevance(m64, x64, target, composite)
    got = fv.lrp(m64, x64, target, composite="epsilon-plus", rules={nn.Conv2d: rule})
    assert rel_err(got, expected) <= 1e-9


class FunctionalBlock(nn.Module):
    """torchvision's BasicBlock with functional and in-place rectifiers and an in-place sum."""

    def __init__(self, block):
        super().__init__()
        self.conv1, self.bn1, self.conv2, self.bn2 = block.conv1, block.bn1, block.conv2, block.bn2
        self.downsample = block.downsample

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.downsample is None else self.downsample(x)
        out.relu_()
        return out


def _functional_resnet18(model):
    model = copy.deepcopy(model)
    model.relu = nn.Identity()
    stem = model.maxpool
    model.maxpool = nn.Sequential(_InPlaceRelu(), stem)
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for i, block in enumerate(layer):
            layer[i] = FunctionalBlock(block)
    return model


class _InPlaceRelu(nn.Module):
    def forward(self, x):
        return F.relu(x, inplace=True)


class _FunctionalRelu(nn.Module):
    def forward(self, x):
        return x.clamp(min=0)


def _functional_vgg16(model):
    model = copy.deepcopy(model)
    for seq in (model.features, model.classifier):
        for i, m in enumerate(seq):
            if isinstance(m, nn.ReLU):
                seq[i] = _InPlaceRelu() if i % 2 else _FunctionalRelu()
    return model


@pytest.mark.parametrize("name, rewrite", [("vgg16", _functional_vgg16), ("resnet18", _functional_resnet18)])
@pytest.mark.parametrize("composite", list(COMPOSITES))
def test_functional_and_in_place_rectifiers_give_the_same_relevance(name, rewrite, composite):
    _, m64, x64, target = real(name)
    kwargs = COMPOSITES[composite][1]
    rewritten = rewrite(m64)
    assert torch.equal(rewritten(x64), m64(x64))
    expected = fv.lrp(m64, x64, target, composite=composite, **kwargs)
    assert rel_err(fv.lrp(rewritten, x64, target, composite=composite, **kwargs), expected) <= 1e-12


def test_the_epsilon_composite_on_the_rule_engine_equals_featurevis_lrp():
    """rules= sends composite "epsilon" through the relevance engine; with rules that restate the
    composite, the numbers are FeatureVis' LRP-epsilon (batch norm its own epsilon layer)."""
    _, m64, x64, target = real("resnet18")
    fast = fv.lrp(m64, x64, target, eps=1e-3)
    engine = fv.lrp(m64, x64, target, eps=1e-3, rules={nn.Conv2d: ("epsilon", 1e-3)})
    assert rel_err(engine, fast) <= 1e-12


def _bias_free_net():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 16, 5, bias=False)).double().eval()


@pytest.mark.parametrize("composite", ["epsilon-plus", "epsilon-plus-flat", "epsilon-alpha2-beta1",
                                       "epsilon-alpha2-beta1-flat", "epsilon-gamma-box"])
def test_relevance_is_conserved_without_biases(composite):
    net = _bias_free_net()
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))  # in [0, 1]
    target = torch.tensor([0, 1, 2, 3])
    kwargs = dict(low=0.0, high=1.0) if composite == "epsilon-gamma-box" else {}
    relevance = fv.lrp(net, x, target, composite=composite, eps=1e-12, stabilizer=1e-12, **kwargs)
    score = net(x).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(relevance.sum(dim=(1, 2, 3)), score, rtol=1e-7, atol=0)


class SharedConvOutput(nn.Module):
    """A convolution whose output feeds a batch norm and also a skip: the two cannot be merged.
    With zennit_sum, the skip's sum is Zennit's Sum module (the same numbers)."""

    def __init__(self, zennit_sum=False):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.sum = zennit_layer.Sum() if zennit_sum else None

    def forward(self, x):
        z = self.conv(x)
        left, right = torch.relu(self.bn(z)), torch.relu(z)
        y = self.sum(torch.stack([left, right], dim=-1)) if self.sum is not None else left + right
        return self.fc(self.pool(y).flatten(1))


def test_a_conv_output_with_two_consumers_is_not_merged():
    model = _zoo.realistic(SharedConvOutput(), 8, batch=4).double()
    twin = SharedConvOutput(zennit_sum=True).double().eval()
    twin.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    target = torch.tensor([0, 2])
    # Zennit without canonizers: the convolution keeps its own rule, the batch norm passes relevance
    composite = NameLayerMapComposite(name_map=[], layer_map=[
        (Activation, Pass()), (zennit_layer.Sum, Norm()), (AvgPool, Norm()), (nn.BatchNorm2d, Pass()),
        (nn.Conv2d, ZPlus()), (nn.Linear, Epsilon())])
    expected = zennit_relevance(twin, x, target, composite, identity_batch_norm=False)
    for call in range(2):  # the first call finds the second consumer and runs again; the second knows
        assert rel_err(fv.lrp(model, x, target, composite="epsilon-plus"), expected) <= 1e-9, f"call {call}"


def test_unit_target_at_a_convolution():
    _, m64, x64, _ = real("vgg16")
    unit = fv.Unit("features.2", 5)
    got = fv.lrp(m64, x64, unit, composite="epsilon-plus")
    composite = zennit_composites.EpsilonPlus(canonizers=[zennit_torchvision.VGGCanonizer()])
    x = x64.clone().requires_grad_(True)
    with composite.context(m64) as modified:
        maps = []
        handle = modified.features[2].register_forward_hook(lambda m, i, o: maps.append(o))
        try:
            modified(x)
        finally:
            handle.remove()
        a = maps[0]
        seed = torch.zeros_like(a)
        seed[:, 5] = a[:, 5].detach()
        (expected,) = torch.autograd.grad(a, x, seed)
    assert rel_err(got, expected) <= 1e-9


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(composite="epsilon-minus"), ValueError, "unknown LRP composite"),
    (dict(composite="epsilon-plus", rules={nn.Conv2d: "zminus"}), ValueError, "unknown LRP rule"),
    (dict(composite="epsilon-plus", rules={"features.99": "zplus"}), ValueError, "no module of that name"),
    (dict(composite="epsilon-plus", rules={"features.1": "zplus"}), ValueError, "convolution and linear"),
    (dict(composite="epsilon-plus", rules={nn.Conv2d: ("alphabeta", 3, 1)}), ValueError, "alpha - beta"),
    (dict(composite="epsilon-plus", rules={nn.Conv2d: ("gamma", 0.1, 0.2)}), ValueError, "takes 1 parameter"),
    (dict(composite="epsilon-gamma-box"), ValueError, "needs low="),
    (dict(composite="epsilon-gamma-box", low=-0.5, high=0.5), ValueError, "do not contain"),
    (dict(composite="epsilon-plus", rules=[("features.0", "zplus")]), TypeError, "rules must be a dict"),
    (dict(composite="epsilon-plus", stabilizer=-1.0), ValueError, "stabilizer"),
])
def test_bad_input_gives_a_clear_error(kwargs, error, match):
    _, m64, x64, target = real("vgg16")
    with pytest.raises(error, match=match):
        fv.lrp(m64, x64, target, **kwargs)
