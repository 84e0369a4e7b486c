"""Every rectifier spelling gets the rule: ours against a hand-written float64 reference, and
Captum (which only hooks nn.ReLU modules) shown to differ on such models."""
import warnings

import pytest
import torch
from _backprop_models import FORMS, FormNet, reference_attribution
from conftest import kernel_backends

import featvis_fast as fv
from featvis_fast import _rectifier_reference as ref
from featvis_fast.backprop import RectifierRuleMode

METHODS = {"gradient": fv.saliency, "deconvnet": fv.deconvnet, "guided": fv.guided_backprop}


def assert_close(ours, expected, rtol=2e-5):
    scale = expected.abs().max().item()
    assert scale > 0, "the reference attribution is all zero: the test would prove nothing"
    err = (ours.double() - expected).abs().max().item()
    assert err <= rtol * scale, f"max error {err:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("rule", list(METHODS))
def test_each_rectifier_form_gets_the_rule(form, rule):
    model = FormNet([form, form, form], seed=list(FORMS).index(form))
    x = torch.randn(3, 3, 9, 11, generator=torch.Generator().manual_seed(2)) * 2
    ours = METHODS[rule](model, x, 4)
    assert_close(ours, reference_attribution(model, x, 4, rule))


MIXTURES = [list(FORMS)[i::3] for i in range(3)]  # every form, six per model, inplace and reused mixed


@pytest.mark.parametrize("backend", kernel_backends("cpu"))
@pytest.mark.parametrize("rule", list(METHODS))
@pytest.mark.parametrize("mixture", range(len(MIXTURES)))
def test_mixtures_of_forms_on_every_backend(backend, rule, mixture):
    model = FormNet(MIXTURES[mixture], width=8, seed=3 + mixture)
    x = torch.randn(2, 3, 8, 7, generator=torch.Generator().manual_seed(4)) * 2
    target = torch.tensor([1, 5])
    ours = METHODS[rule](model, x, target, backend=backend)
    expected = reference_attribution(model, x, target, rule, dtype=torch.float32).double()
    for b in range(2):  # per-sample targets
        single = reference_attribution(model, x[b:b + 1], target[b].item(), rule, dtype=torch.float32)
        assert_close(ours[b:b + 1], single.double(), rtol=1e-4)
    assert_close(ours, expected, rtol=1e-4)


def test_every_rectifier_call_is_intercepted():
    forms = list(FORMS)
    model = FormNet(forms + forms[:3])  # shared modules reused several times
    x = torch.randn(1, 3, 6, 6).requires_grad_()
    with RectifierRuleMode(ref.GUIDED, "torch") as mode:
        model(x)
    assert sum(mode.counts.values()) == len(forms) + 3


def test_rules_differ_from_each_other_and_from_the_gradient():
    model = FormNet(["F.relu", "nn.ReLU6", "torch.relu_"])
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(0)) * 2
    maps = {name: fn(model, x, 0) for name, fn in METHODS.items()}
    assert not torch.allclose(maps["guided"], maps["gradient"])
    assert not torch.allclose(maps["deconvnet"], maps["gradient"])
    assert not torch.allclose(maps["guided"], maps["deconvnet"])


def test_captum_misses_functional_and_relu6_rectifiers():
    captum_attr = pytest.importorskip("captum.attr")
    model = FormNet(["F.relu", "nn.ReLU6", "torch.relu_"])
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(0)) * 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = captum_attr.GuidedBackprop(model).attribute(x, target=3)
    ours = fv.guided_backprop(model, x, 3)
    plain = fv.saliency(model, x, 3)
    assert_close(ours, reference_attribution(model, x, 3, "guided"))
    assert torch.allclose(theirs, plain, atol=1e-6), "Captum's guided backprop is the plain gradient here"
    assert not torch.allclose(theirs, ours, atol=1e-4)


def test_non_piecewise_linear_activations_warn_and_get_the_gradient():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return torch.nn.functional.silu(torch.relu(self.conv(x))).mean(dim=(2, 3))

    model, x = Net().eval(), torch.randn(2, 3, 6, 6)
    with pytest.warns(fv.backprop.NonPiecewiseLinearWarning, match="SiLU"):
        fv.guided_backprop(model, x, 1)
    with pytest.raises(ValueError, match="SiLU.*not piecewise linear"):
        fv.guided_backprop(model, x, 1, nonlinear="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fv.saliency(model, x, 1)  # the gradient is exact: no warning


def test_clamp_that_is_not_a_rectifier_keeps_its_gradient():
    class Net(torch.nn.Module):
        def forward(self, x):
            return (x / x.norm(dim=1, keepdim=True).clamp(min=1e-3)).sum(dim=(2, 3))

    x = torch.randn(2, 3, 4, 4)
    assert torch.allclose(fv.guided_backprop(Net(), x, 0), fv.saliency(Net(), x, 0))
